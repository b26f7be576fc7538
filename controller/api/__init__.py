"""Resource types per API group: defaults and validation (pure)."""
