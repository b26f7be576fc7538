"""The API server's wire format: JSON/YAML bodies, Status errors, merge patch, selectors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import yaml
from aiohttp import web

from controller.store.base import Obj
from flint_common.status import failure

JSON = "application/json"
YAML = "application/yaml"
MERGE_PATCH = "application/merge-patch+json"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_TYPES = frozenset({JSON, MERGE_PATCH, "text/json"})
UNSUPPORTED_PATCH_TYPES = frozenset(
    {
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    }
)

REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` object with `code` as the HTTP status."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details or {}

    def status(self) -> Obj:
        return failure_status(self.code, self.reason, self.message, self.details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def failure_status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    return failure(code, reason, message, details)


def decode_body(raw: bytes, content_type: str) -> Obj:
    """A request body as an object; JSON unless the Content-Type names YAML. Malformed → 400."""
    if not raw.strip():
        raise bad_request("the request body is empty; send a JSON or YAML object")
    value: Any
    if content_type in YAML_TYPES:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise bad_request(f"the request body is not valid YAML: {e}") from None
    elif content_type in JSON_TYPES:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise bad_request(f"the request body is not valid JSON: {e}") from None
    else:
        raise ApiError(
            415,
            f'unsupported Content-Type "{content_type}"; use {JSON}, {YAML} or {MERGE_PATCH}',
        )
    if not isinstance(value, dict):
        raise bad_request(
            f"the request body must be an object, got {type(value).__name__} "
            "(a list of resources is not accepted here; send one object per request)"
        )
    return value


def wants_yaml(request: web.Request) -> bool:
    """Whether the first acceptable media type the client lists is YAML."""
    for part in request.headers.get("Accept", "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in YAML_TYPES:
            return True
        if media in JSON_TYPES or media in ("*/*", "application/*"):
            return False
    return False


def encode(request: web.Request, obj: Obj) -> tuple[bytes, str]:
    if wants_yaml(request):
        return yaml.safe_dump(obj, sort_keys=False).encode(), YAML
    return orjson.dumps(obj), JSON


def respond(
    request: web.Request, obj: Obj, status: int = 200, warnings: Iterable[str] = ()
) -> web.Response:
    body, content_type = encode(request, obj)
    response = web.Response(body=body, status=status, content_type=content_type)
    for warning in warnings:
        response.headers.add("Warning", warning_header(warning))
    return response


def warning_header(text: str) -> str:
    """RFC 7234 warning: `299 flint "text"`, quotes and backslashes escaped, one line."""
    one_line = " ".join(text.split())
    escaped = one_line.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 flint "{escaped}"'


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Selector:
    """Equality-based selectors: labels `a=b,c!=d,e,!f`; fields metadata.name/namespace."""

    FIELDS = ("metadata.name", "metadata.namespace")

    def __init__(self, labels: str = "", fields: str = "") -> None:
        self._labels = [self._parse(term, "labelSelector") for term in _terms(labels)]
        self._fields = [self._parse(term, "fieldSelector") for term in _terms(fields)]
        for key, _, _ in self._fields:
            if key not in self.FIELDS:
                raise bad_request(
                    f'fieldSelector: field "{key}" is not supported; use {" or ".join(self.FIELDS)}'
                )

    @staticmethod
    def _parse(term: str, param: str) -> tuple[str, str, str | None]:
        """(key, op, value) with op one of = != exists !exists."""
        if "!=" in term:
            key, value = term.split("!=", 1)
            op = "!="
        elif "=" in term:
            key, value = term.replace("==", "=", 1).split("=", 1)
            op = "="
        elif term.startswith("!"):
            return term[1:].strip(), "!exists", None
        elif any(c in term for c in " ()"):
            raise bad_request(
                f'{param}: "{term}" is not supported; use key=value, key!=value, key or !key'
            )
        else:
            return term.strip(), "exists", None
        return key.strip(), op, value.strip()

    @property
    def empty(self) -> bool:
        return not self._labels and not self._fields

    def matches(self, obj: Obj) -> bool:
        md = obj.get("metadata") or {}
        labels = md.get("labels") or {}
        fields = {"metadata.name": md.get("name"), "metadata.namespace": md.get("namespace")}
        return all(_test(labels, t) for t in self._labels) and all(
            _test(fields, t) for t in self._fields
        )


def _terms(selector: str) -> list[str]:
    return [t.strip() for t in selector.split(",") if t.strip()]


def _test(values: dict[str, Any], term: tuple[str, str, str | None]) -> bool:
    key, op, value = term
    if op == "exists":
        return key in values and values[key] is not None
    if op == "!exists":
        return key not in values or values[key] is None
    if op == "=":
        return values.get(key) == value
    return values.get(key) != value
