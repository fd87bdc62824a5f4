"""Example MCP servers bundled with troupe."""
