"""What the daemon tells operators: Prometheus metrics, audit and event observers, logging set-up."""
