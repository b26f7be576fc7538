"""One reconciler per kind: compute the desired state (pure), then write it (thin)."""
