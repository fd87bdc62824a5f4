"""The client side of Streamable HTTP: troupe speaking to remote MCP servers (``[servers.NAME] url``)."""
