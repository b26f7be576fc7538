"""The Kubernetes engine's cluster certificates: a CA and a serving certificate kept in a Secret,
made by the first replica, rotated by the leader (`rotation` decides, `keeper` does the I/O)."""
