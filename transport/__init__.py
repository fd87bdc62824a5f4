"""troupe's transport, in layers (each imports only the ones before it):

* `wire`: frames, the JSON-RPC envelope and its scanner; pure, no zmq;
* `mailbox`, `runtime`, `dealer`, `discovery`: I/O pieces shared below;
* `hub`: the daemon's one I/O loop and the tables it owns (peers, backlog, ZAP);
* `client`, `adapter`, `bridge`: the client library, ``troupe adapter`` and
  ``troupe connect``.

Imports nothing from `mcp_troupe.actors`. The client library's public face is
`mcp_troupe.transport.client`.
"""
