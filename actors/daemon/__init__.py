"""The daemon: configuration, the dispatcher and control plane, and the wiring of hub, actors and adapters."""
