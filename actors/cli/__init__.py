"""The ``troupe`` command line: ``serve``, ``connect``, ``adapter`` and the operator commands."""
