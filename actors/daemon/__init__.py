"""The daemon: configuration, the router and control plane, and the wiring of hub, actors and adapters."""
