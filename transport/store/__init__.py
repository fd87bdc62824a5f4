"""Session stores: where session records are kept across the daemon's restarts."""
