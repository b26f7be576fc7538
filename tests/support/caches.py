"""An informer-shaped cache over a list the test controls (`get`, `list`, iteration), for
reconcilers and watches tested without a store: assign `objs` to change what exists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]


class ObjectCache:
    """What a test says exists of one kind, read as `controller.informer.Informer` reads."""

    def __init__(self, objs: list[Obj]) -> None:
        self.objs = objs

    def get(self, namespace: str, name: str) -> Obj | None:
        return next((o for o in self.objs if o["metadata"]["name"] == name
                     and o["metadata"].get("namespace", "default") == namespace), None)

    def list(self, namespace: str | None = None) -> list[Obj]:
        return [o for o in self.objs
                if namespace is None or o["metadata"].get("namespace", "default") == namespace]

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self.objs))
