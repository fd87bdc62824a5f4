"""``troupe adapter``: runs stdio MCP server processes for the daemon's back socket."""
