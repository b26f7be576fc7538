"""Runtimes that run replicas: local processes now, Kubernetes Deployments later."""
