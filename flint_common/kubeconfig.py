"""kubeconfig documents: the one `flint up` writes for its state dir, and merging it into another.

A kubeconfig is how kubectl (and Flint's CLI, through `kubernetes_asyncio.config`) finds a server
and its credential. Flint's has one cluster, one user and one context, all named `flint` by
default: the HTTPS URL, the CA that signed the API's certificate, and the owner's bearer token.
Building and merging are pure; writing goes through `write_private` (0600).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from flint_common.private import write_private
from flint_common.secret import Secret

Config = dict[str, Any]
CONTEXT = "flint"
"""Name of the cluster, user and context `flint up` writes."""
SECTIONS = ("clusters", "users", "contexts")


def flint_kubeconfig(server: str, ca_pem: bytes, token: Secret, name: str = CONTEXT) -> Config:
    """A kubeconfig whose current context `name` reaches `server` with `token`, trusting `ca_pem`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token.reveal()}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
        ],
        "current-context": name,
    }


def merge(existing: Config | None, ours: Config, *, make_current: bool = True) -> Config:
    """`existing` with every cluster, user and context of `ours` added, replacing entries of the
    same name (the others are kept as they were); `current-context` becomes ours when
    `make_current`, or when `existing` had none."""
    out: Config = copy.deepcopy(existing) if existing else {"apiVersion": "v1", "kind": "Config"}
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Config")
    for section in SECTIONS:
        mine = ours.get(section) or []
        names = {e.get("name") for e in mine}
        kept = [e for e in (out.get(section) or []) if e.get("name") not in names]
        out[section] = kept + copy.deepcopy(mine)
    if make_current or not out.get("current-context"):
        out["current-context"] = ours.get("current-context", "")
    return out


def dump(config: Config) -> bytes:
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=False).encode()


def read(path: Path) -> Config | None:
    """The kubeconfig at `path`; None when there is none. Blocking: file I/O."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if loaded is None:
        return None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a kubeconfig (its top level is not a map)")
    return loaded


def write(path: Path, config: Config) -> None:
    """Write `config` to `path` (0600, atomically). Blocking: file I/O."""
    write_private(path, dump(config))


def merge_into(path: Path, ours: Config, *, make_current: bool = True) -> None:
    """Merge `ours` into the kubeconfig at `path` (created when missing). Blocking: file I/O."""
    write(path, merge(read(path), ours, make_current=make_current))
