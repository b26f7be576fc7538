"""CloudEvents as both planes read and write them: the codec, its parts, Knative's broker attributes."""
