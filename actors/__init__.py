"""troupe's daemon side, in layers (each imports only the ones before it):

* `core`: sans-IO decisions (session state machine and core, eras, limits,
  deadlines, recency, supervision policy); the standard library and
  `mcp_troupe.transport.wire` only;
* `telemetry`: metrics, audit and event observers, logging set-up;
* `shells`: the pykka actors, thin shells over the core;
* `daemon`: configuration, the dispatcher and control plane, the wiring of hub,
  actors and adapter processes;
* `cli`: the ``troupe`` command line.

Nothing is imported here: ``import mcp_troupe.actors.core.session`` loads the
core alone.
"""
