"""``troupe connect``: a stdio MCP server to its client, a troupe session to the daemon."""
