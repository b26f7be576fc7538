"""Autoscaling: the KPA decider (pure) and the scaler that applies it."""
