"""The control plane: resources, reconcilers, runtime, autoscaling, builds and event delivery."""
