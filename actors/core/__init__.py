"""Sans-IO core: plain classes with no threads, sockets or clocks (``now`` is passed in)."""
