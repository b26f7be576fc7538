"""Event delivery: dispatcher, filters, sources."""
