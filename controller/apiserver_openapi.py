"""`/openapi/v3` (the index and one document per group-version) and `fieldValidation` on writes:
unknown fields and wrong types found with the kinds' schemas, answered as Kubernetes does."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from controller.api.openapi import FIELD_VALIDATION_VALUES, digest, documents, index, schema_for
from controller.api.schema_check import decode
from controller.api.types import Invalid, ResourceType
from controller.apiserver_codec import ApiError, bad_request
from controller.store.base import Obj

STRICT, WARN, IGNORE = FIELD_VALIDATION_VALUES
IMMUTABLE = "public, immutable, max-age=31536000"
"""Cache-Control of a document fetched by its hashed URL (the hash changes with the document)."""


class OpenApiDocuments:
    """The documents of a set of types, generated once on first use."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self._types = tuple(types)
        self._docs: dict[str, bytes] | None = None

    def _documents(self) -> dict[str, bytes]:
        if self._docs is None:
            self._docs = documents(self._types)
        return self._docs

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response(index(self._documents()), headers={"Cache-Control": "no-cache, private"})

    async def document(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        body = self._documents().get(f"apis/{group}/{version}")
        if body is None:
            raise ApiError(404, f'the server has no OpenAPI document for "{group}/{version}"')
        hashed = request.query.get("hash") == digest(body)
        headers = {"Cache-Control": IMMUTABLE if hashed else "no-cache, private", "ETag": f'"{digest(body)}"'}
        return web.Response(body=body, content_type="application/json", headers=headers)


def add_routes(app: web.Application, types: Iterable[ResourceType]) -> None:
    docs = OpenApiDocuments(types)
    app.router.add_get("/openapi/v3", docs.index)
    app.router.add_get("/openapi/v3/apis/{group}/{version}", docs.document)


def field_validation(request: web.Request) -> str:
    """The request's `fieldValidation` (Strict when absent); anything else is a 400."""
    value = request.query.get("fieldValidation", "") or STRICT
    if value not in FIELD_VALIDATION_VALUES:
        raise bad_request(
            f'fieldValidation: Unsupported value: "{value}": supported values: '
            + ", ".join(f'"{v}"' for v in FIELD_VALIDATION_VALUES)
        )
    return value


def strict_error(rt: ResourceType, name: str, unknown: list[str]) -> ApiError:
    """Kubernetes' answer to unknown fields under Strict: 400, one `unknown field "path"` each."""
    fields = ", ".join(f'unknown field "{p}"' for p in unknown)
    causes = [{"reason": "FieldValueInvalid", "message": f'unknown field "{p}"', "field": p} for p in unknown]
    return ApiError(
        400,
        f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
        f"strict decoding error: {fields}",
        "BadRequest",
        {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes},
    )


def check_fields(rt: ResourceType, obj: Obj, directive: str) -> tuple[Obj, list[str]]:
    """`obj` decoded with its kind's schema: unknown fields refused (Strict), dropped with a
    warning each (Warn) or dropped (Ignore); a wrong type is `Invalid` whatever the directive.
    Kinds without a schema pass unchanged."""
    schema = schema_for(rt)
    if schema is None:
        return obj, []
    decoded = decode(schema, obj)
    md = obj.get("metadata")
    name = str(md.get("name") or md.get("generateName") or "") if isinstance(md, dict) else ""
    if decoded.unknown and directive == STRICT:
        raise strict_error(rt, name, decoded.unknown)
    if decoded.type_errors:
        raise Invalid(rt.kind, name, decoded.type_errors)
    warnings = [f'unknown field "{p}"' for p in decoded.unknown] if directive == WARN else []
    return decoded.value, warnings
