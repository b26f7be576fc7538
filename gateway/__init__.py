"""The data plane: ingress, activator, concurrency limiter and metrics source. Never imports controller."""
