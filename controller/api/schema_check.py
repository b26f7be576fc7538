"""An object against its schema, as Kubernetes decodes it: unknown fields (with their paths, and the
object without them) and values of the wrong type. Pure: values in, values out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.api.meta import as_int, err_invalid_value, index, join
from controller.api.schema import Schema
from controller.api.types import FieldError

_EXPECTED = {
    "object": "expected an object",
    "array": "expected a list",
    "string": "expected a string",
    "integer": "expected an integer",
    "number": "expected a number",
    "boolean": "expected a boolean",
}


@dataclass
class Decoded:
    """What decoding found: `value` is the input without its unknown fields."""

    value: Any
    unknown: list[str] = field(default_factory=list)
    """Paths of fields the schema does not know (`spec.template.spec.containers[0].foo`)."""
    type_errors: list[FieldError] = field(default_factory=list)


def decode(schema: Schema, value: Any) -> Decoded:
    """Checks `value` against `schema`; never raises. Nulls are absent values, as in Kubernetes."""
    out = Decoded(None)
    out.value = _walk(schema, value, "", out)
    return out


def _type_ok(schema: Schema, value: Any) -> bool:
    if schema.int_or_string:
        return isinstance(value, str) or as_int(value) is not None
    match schema.type:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "integer":
            return as_int(value) is not None
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
    return True


def _walk(schema: Schema, value: Any, path: str, out: Decoded) -> Any:
    if value is None:
        return value
    if not _type_ok(schema, value):
        wanted = "expected an integer or a string" if schema.int_or_string else _EXPECTED[schema.type]
        out.type_errors.append(err_invalid_value(value, path or "<root>", wanted))
        return value
    if isinstance(value, list) and schema.items is not None:
        return [_walk(schema.items, v, index(path, i), out) for i, v in enumerate(value)]
    if not isinstance(value, dict) or schema.type != "object":
        return value
    if schema.values is not None:
        return {k: _walk(schema.values, v, join(path, str(k)), out) for k, v in value.items()}
    if schema.preserve_unknown and not schema.properties:
        return value
    kept: dict[str, Any] = {}
    for key, v in value.items():
        known = schema.properties.get(key)
        if known is not None:
            kept[key] = _walk(known, v, join(path, key), out)
        elif schema.preserve_unknown:
            kept[key] = v
        else:
            out.unknown.append(join(path, key))
    return kept
