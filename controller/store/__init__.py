"""Resource stores: the Store protocol, SQLite for the embedded engine, Kubernetes later."""
