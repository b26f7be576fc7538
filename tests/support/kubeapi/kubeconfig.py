"""A kubeconfig naming one API server (the fake's URL), for what is configured by file: the
controller's `--kubeconfig`, `python -m support.kubeapi --kubeconfig`."""

from __future__ import annotations

from pathlib import Path

import yaml


def kubeconfig_text(server: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "unused"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    })


def write_kubeconfig(path: Path, server: str) -> Path:
    """`path`, holding a kubeconfig whose current context is `server`'s."""
    path.write_text(kubeconfig_text(server))
    return path
