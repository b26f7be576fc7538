"""Locust scenarios and the side-by-side benchmark runner."""
