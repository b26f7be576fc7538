"""A CRD's structural openAPIV3Schema applied to an object: prune unknown fields, default, validate (pure)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import cause

JSON = dict[str, Any]
_ROOT_KNOWN = ("apiVersion", "kind", "metadata")


@dataclass
class Checked:
    """What the schema made of an object: the pruned and defaulted object, its errors, its unknown fields."""

    obj: JSON
    causes: list[JSON] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(expected: str, value: Any) -> bool:
    actual = _type_name(value)
    return actual == expected or (expected == "number" and actual == "integer")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_DROP = object()


class _Walker:
    def __init__(self) -> None:
        self.causes: list[JSON] = []
        self.unknown: list[str] = []

    def invalid(self, path: str, value: Any, detail: str, reason: str = "FieldValueInvalid") -> None:
        self.causes.append(cause(reason, path, f"Invalid value: {_show(value)}: {path} in body {detail}"))

    def walk(self, schema: JSON, value: Any, path: str) -> Any:
        if value is None:
            return None if schema.get("nullable") else _DROP
        if schema.get("x-kubernetes-int-or-string"):
            if _type_name(value) not in ("integer", "string"):
                self.invalid(
                    path, _type_name(value), "must be of type int-or-string", "FieldValueTypeInvalid"
                )
            return value
        expected = schema.get("type")
        if expected and not _type_ok(expected, value):
            name = _type_name(value)
            self.causes.append(
                cause(
                    "FieldValueTypeInvalid",
                    path,
                    f'Invalid value: "{name}": {path} in body must be of type {expected}: "{name}"',
                )
            )
            return value
        if isinstance(value, dict):
            value = self.walk_object(schema, value, path)
        elif isinstance(value, list):
            items = schema.get("items")
            if items is not None:
                walked = [self.walk(items, v, f"{path}[{i}]") for i, v in enumerate(value)]
                value = [v for v in walked if v is not _DROP]
        self.check_value(schema, value, path)
        return value

    def walk_object(self, schema: JSON, value: JSON, path: str, root: bool = False) -> JSON:
        properties: JSON = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        out: JSON = {}
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            if root and key in _ROOT_KNOWN:
                out[key] = child
            elif key in properties:
                walked = self.walk(properties[key], child, child_path)
                if walked is not _DROP:
                    out[key] = walked
            elif isinstance(additional, dict):
                walked = self.walk(additional, child, child_path)
                if walked is not _DROP:
                    out[key] = walked
            elif preserve or additional is True:
                out[key] = child
            else:
                self.unknown.append(child_path)
        for key, prop in properties.items():
            if key not in out and "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
        for key in schema.get("required") or []:
            if key not in out:
                child_path = f"{path}.{key}" if path else key
                self.causes.append(cause("FieldValueRequired", child_path, "Required value"))
        return out

    def check_value(self, schema: JSON, value: Any, path: str) -> None:
        enum = schema.get("enum")
        if enum is not None and value not in enum:
            supported = ", ".join(_show(v) for v in enum)
            self.causes.append(
                cause(
                    "FieldValueNotSupported",
                    path,
                    f"Unsupported value: {_show(value)}: supported values: {supported}",
                )
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                self.invalid(path, value, f"should be greater than or equal to {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                self.invalid(path, value, f"should be less than or equal to {schema['maximum']}")
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                self.invalid(path, value, f"should be at least {schema['minLength']} chars long")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self.invalid(path, value, f"may not be more than {schema['maxLength']} chars long")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                self.invalid(path, value, f"should match '{schema['pattern']}'")
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                self.causes.append(
                    cause(
                        "FieldValueInvalid",
                        path,
                        f"Invalid value: {len(value)}: {path} in body should have at "
                        f"least {schema['minItems']} items",
                    )
                )
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                self.causes.append(
                    cause(
                        "FieldValueTooMany",
                        path,
                        f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                    )
                )


def check(schema: JSON | None, obj: JSON) -> Checked:
    """Prune, default and validate `obj` (apiVersion, kind and metadata are always kept as they are)."""
    if schema is None:
        return Checked(obj)
    walker = _Walker()
    out = walker.walk_object(schema, obj, "", root=True)
    return Checked(out, walker.causes, walker.unknown)
