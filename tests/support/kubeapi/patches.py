"""The patch content types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a simplified apply."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE, JSON_PATCH, STRATEGIC, APPLY)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` removes, anything else replaces (lists whole)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _failed(f"invalid JSON pointer {path!r}: it must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _failed(message: str) -> ApiError:
    # What the API server answers when a JSON patch does not apply (not a 400: the patch parsed).
    return ApiError(
        422, "Invalid", f"the server rejected our request due to an error in our request: {message}"
    )


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node, tokens[-1]


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise _failed(f"doc is missing path: {path!r}")
        return node[token]
    if isinstance(node, list):
        try:
            return node[int(token)]
        except (ValueError, IndexError):
            raise _failed(f"doc is missing path: {path!r}") from None
    raise _failed(f"doc is missing path: {path!r}")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        node = _child(node, token, path)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                index = int(last)
            except ValueError:
                raise _failed(f"invalid index {last!r} in {path!r}") from None
            if not 0 <= index <= len(parent):
                raise _failed(f"index {index} out of bounds in {path!r}")
            parent.insert(index, value)
    else:
        raise _failed(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _failed("cannot remove the whole document")
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        try:
            del parent[int(last)]
        except (ValueError, IndexError):
            raise _failed(f"unable to remove nonexistent key: {path!r}") from None
    else:
        raise _failed(f"unable to remove nonexistent key: {path!r}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test, in order; any failure refuses the whole patch."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _failed(f"testing value {path} failed")
        else:
            raise bad_request(f"unexpected kind of JSON patch operation: {kind!r}")
    return doc


def apply_merge(live: Any, applied: Any) -> Any:
    """The simplified server-side apply: the applied configuration merged into the live object.

    Maps merge key by key; lists of maps with a `name` merge by name (as most Kubernetes list
    types do: containers, env, ports...); other lists and scalars replace. No field ownership is
    tracked, so fields a manager stops applying are kept and there are no apply conflicts.
    """
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in applied.items():
            out[key] = apply_merge(live.get(key), value)
        return out
    if (
        isinstance(applied, list)
        and isinstance(live, list)
        and all(isinstance(i, dict) and "name" in i for i in applied + live)
    ):
        by_name = {i["name"]: i for i in live}
        merged = [apply_merge(by_name.get(i["name"]), i) for i in applied]
        applied_names = {i["name"] for i in applied}
        return merged + [i for i in live if i["name"] not in applied_names]
    return copy.deepcopy(applied)
