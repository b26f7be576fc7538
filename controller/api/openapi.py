"""OpenAPI v3 documents of Flint's API, generated from the kinds' schemas (`/openapi/v3` serves
them; `python -m controller.api.openapi --out DIR` writes them as files, and `--crds DIR` the
Kubernetes engine's CustomResourceDefinitions made from the same schemas, `deploy/crds/`).

Each group-version document lists every kind's collection and item operations, tagged with
`x-kubernetes-group-version-kind` and taking `fieldValidation` (what kubectl looks for before it
leaves validation to the server), and holds the kinds' schemas in `components.schemas`.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

import orjson

from controller.api import crds, schema_eventing, schema_serving
from controller.api.schema import Json, Schema, crd_schema, openapi
from controller.api.types import ResourceType

FIELD_VALIDATION_VALUES = ("Strict", "Warn", "Ignore")
JSON_TYPES = ("application/json", "application/yaml")
PATCH_TYPES = ("application/merge-patch+json",)


@cache
def kind_schemas() -> Mapping[tuple[str, str], Schema]:
    """(apiVersion, kind) → the kind's schema, for every kind Flint serves."""
    out: dict[tuple[str, str], Schema] = {}
    for s in (*schema_serving.schemas(), *schema_eventing.schemas()):
        assert s.gvk is not None
        group, version, kind = s.gvk
        out[(f"{group}/{version}", kind)] = s
    return out


def schema_for(rt: ResourceType) -> Schema | None:
    return kind_schemas().get((rt.api_version, rt.kind))


def crd_openapi_schema(rt: ResourceType) -> Json:
    """The `openAPIV3Schema` of the kind's CRD: what the Kubernetes engine's generated CRDs
    will carry (not used by the embedded engine, which serves `openapi_document`)."""
    s = schema_for(rt)
    if s is None:
        raise KeyError(f"no schema for {rt.kind} ({rt.api_version})")
    return crd_schema(s)


def _param(name: str, where: str, description: str, schema: Json | None = None) -> Json:
    out: Json = {
        "name": name,
        "in": where,
        "description": description,
        "schema": schema or {"type": "string"},
    }
    if where == "path":
        out["required"] = True
    return out


FIELD_VALIDATION = _param(
    "fieldValidation",
    "query",
    "What to do with unknown fields: Strict (the default) refuses them, Warn drops them with a "
    "warning, Ignore drops them. Wrong types are refused in every case.",
    {"type": "string", "enum": list(FIELD_VALIDATION_VALUES), "uniqueItems": True},
)
FIELD_MANAGER = _param("fieldManager", "query", "Accepted and ignored (Flint keeps no managed fields).")
_NAMESPACE = _param("namespace", "path", "object name and auth scope, such as for teams and projects")
_NAME = _param("name", "path", "name of the object")
_PRETTY = _param("pretty", "query", "Accepted and ignored.")


def _content(ref: Json, types: Iterable[str] = JSON_TYPES) -> Json:
    return {t: {"schema": ref} for t in types}


def _operation(
    op_id: str,
    rt: ResourceType,
    action: str,
    ref: Json,
    *,
    body: Iterable[str] = (),
    params: list[Json] | None = None,
    code: str = "200",
) -> Json:
    op: Json = {
        "description": f"{action} {rt.kind}",
        "operationId": op_id,
        "responses": {code: {"description": "OK", "content": _content(ref)}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    }
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": _content(ref, body)}
    return op


def _paths(rt: ResourceType, ref: Json, list_ref: Json) -> dict[str, Json]:
    base = f"/apis/{rt.group}/{rt.version}/namespaces/{{namespace}}/{rt.plural}"
    name = rt.kind
    writes = [FIELD_VALIDATION, FIELD_MANAGER]
    item = _operation
    return {
        base: {
            "parameters": [_NAMESPACE, _PRETTY, *writes],
            "get": item(f"list{name}", rt, "list", list_ref),
            "post": item(f"create{name}", rt, "post", ref, body=JSON_TYPES, params=writes, code="201"),
        },
        f"{base}/{{name}}": {
            "parameters": [_NAME, _NAMESPACE, _PRETTY, *writes],
            "get": item(f"read{name}", rt, "get", ref),
            "put": item(f"replace{name}", rt, "put", ref, body=JSON_TYPES, params=writes),
            "patch": item(f"patch{name}", rt, "patch", ref, body=PATCH_TYPES, params=writes),
            "delete": item(f"delete{name}", rt, "delete", ref),
        },
        f"{base}/{{name}}/status": {
            # kubectl looks for fieldValidation on the first PATCH of the kind it meets, in
            # no set order: the status subresource's must take it too (its writes ignore it).
            "parameters": [_NAME, _NAMESPACE, _PRETTY, *writes],
            "get": item(f"read{name}Status", rt, "get", ref),
            "put": item(f"replace{name}Status", rt, "put", ref, body=JSON_TYPES, params=writes),
            "patch": item(f"patch{name}Status", rt, "patch", ref, body=PATCH_TYPES, params=writes),
        },
        f"/apis/{rt.group}/{rt.version}/{rt.plural}": {
            "parameters": [_PRETTY],
            "get": item(f"list{name}ForAllNamespaces", rt, "list", list_ref),
        },
    }


def _list_schema(rt: ResourceType, s: Schema, ref: Json) -> Json:
    return {
        "description": f"A list of {rt.kind} objects.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "description": "The list's metadata (resourceVersion)."},
            "items": {"type": "array", "items": ref},
        },
        "x-kubernetes-group-version-kind": [
            {"group": rt.group, "version": rt.version, "kind": f"{rt.kind}List"}
        ],
    }


def group_version_document(types: Iterable[ResourceType], group: str, version: str) -> Json | None:
    """The OpenAPI document of one group-version, None when Flint serves none of its kinds."""
    components: dict[str, Json] = {}
    paths: dict[str, Json] = {}
    for rt in types:
        if (rt.group, rt.version) != (group, version) or (s := schema_for(rt)) is None:
            continue
        ref = openapi(s, components)
        list_name = f"{s.name}List"
        components[list_name] = _list_schema(rt, s, ref)
        paths.update(_paths(rt, ref, {"$ref": f"#/components/schemas/{list_name}"}))
    if not paths:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Flint", "version": f"{group}/{version}"},
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }


def group_versions(types: Iterable[ResourceType]) -> list[tuple[str, str]]:
    return sorted({(rt.group, rt.version) for rt in types if schema_for(rt) is not None})


def documents(types: Iterable[ResourceType]) -> dict[str, bytes]:
    """`apis/{group}/{version}` → its document's JSON (what the index's URLs point at)."""
    types = tuple(types)
    out: dict[str, bytes] = {}
    for group, version in group_versions(types):
        doc = group_version_document(types, group, version)
        assert doc is not None
        out[f"apis/{group}/{version}"] = orjson.dumps(doc)
    return out


def digest(body: bytes) -> str:
    """The `hash` of a document's URL in the index (Kubernetes': SHA-512, hex, upper case)."""
    return hashlib.sha512(body).hexdigest().upper()


def index(docs: Mapping[str, bytes]) -> Json:
    """`/openapi/v3`: each group-version's document, by a URL that changes when it does."""
    return {
        "paths": {
            key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest(body)}"}
            for key, body in sorted(docs.items())
        }
    }


def write(out: Path, types: Iterable[ResourceType]) -> list[Path]:
    """Writes `index.json` and `apis/{group}/{version}.json` under `out`; returns the files."""
    docs = documents(types)
    written = []
    for key, body in docs.items():
        path = out / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2) + b"\n")
        written.append(path)
    index_path = out / "index.json"
    index_path.write_bytes(orjson.dumps(index(docs), option=orjson.OPT_INDENT_2) + b"\n")
    return [index_path, *written]


def crd_files(types: Iterable[ResourceType]) -> dict[str, str]:
    """`deploy/crds/`'s files: each kind's CRD, its schema `crd_openapi_schema`'s."""
    return crds.files(types, crd_openapi_schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.api.openapi", description=__doc__)
    parser.add_argument("--out", type=Path, help="the directory to write the OpenAPI documents to")
    parser.add_argument("--crds", type=Path, help="the directory to write the CRDs to (deploy/crds)")
    args = parser.parse_args(argv)
    if args.out is None and args.crds is None:
        parser.error("say where to write: --out DIR (OpenAPI documents), --crds DIR (CRDs), or both")
    from controller.api.registry import TYPES

    written = []
    if args.out is not None:
        written += write(args.out, TYPES)
    if args.crds is not None:
        written += crds.write(args.crds, crd_files(TYPES))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
