"""Builds and the content-addressed artifact store."""
