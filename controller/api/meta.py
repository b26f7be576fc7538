"""Object-metadata validation and Knative-worded field errors, shared so every API group agrees."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from controller.api.types import FieldError, Obj

DEFAULT_NAMESPACE = "default"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
MAX_ANNOTATIONS_BYTES = 256 * 1024

NameRule = Literal["dns1035", "dns1123-label", "dns1123-subdomain"]

# ---------------------------------------------------------------------------------------------
# Paths and Knative's error constructors (knative.dev/pkg/apis/field_error.go)
# ---------------------------------------------------------------------------------------------


def join(base: str, *fields: str) -> str:
    """`join("spec", "traffic")` → `spec.traffic`; empty parts are skipped."""
    out = base
    for f in fields:
        if not f:
            continue
        out = f"{out}.{f}" if out else f
    return out


def index(base: str, i: int) -> str:
    """`index("spec.traffic", 1)` → `spec.traffic[1]`."""
    return f"{base}[{i}]"


def paths(*ps: str) -> str:
    """Several paths of one error, sorted and comma-joined as in Knative's `FieldError.Error()`."""
    return ", ".join(sorted(dict.fromkeys(ps)))


def _details(message: str, details: Iterable[str] = ()) -> str:
    d = ", ".join(details)
    return f"{message}; {d}" if d else message


def go_value(value: Any) -> str:
    """Renders a value the way Go's `fmt.Sprint` shows it in Knative messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def err_missing_field(*ps: str) -> FieldError:
    return FieldError(paths(*ps), "missing field(s)")


def err_disallowed(*ps: str) -> FieldError:
    return FieldError(paths(*ps), "must not set the field(s)")


def err_invalid_value(value: Any, path: str, *details: str) -> FieldError:
    return FieldError(path, _details(f"invalid value: {go_value(value)}", details))


def err_out_of_bounds(value: Any, lower: Any, upper: Any, path: str) -> FieldError:
    return FieldError(path, f"expected {go_value(lower)} <= {go_value(value)} <= {go_value(upper)}")


def err_missing_one_of(*ps: str) -> FieldError:
    return FieldError(paths(*ps), "expected exactly one, got neither")


def err_multiple_one_of(*ps: str) -> FieldError:
    return FieldError(paths(*ps), "expected exactly one, got both")


def err_invalid_key_name(key: str, path: str, *details: str) -> FieldError:
    return FieldError(path, _details(f'invalid key name "{key}"', details))


def err_generic(message: str, *ps: str) -> FieldError:
    return FieldError(paths(*ps), message)


def go_list(msgs: list[str]) -> str:
    """Go's `%v` of a `[]string`: `[a b]`."""
    return "[" + " ".join(msgs) + "]"


# ---------------------------------------------------------------------------------------------
# Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation), same messages
# ---------------------------------------------------------------------------------------------

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"

_DNS1123_LABEL_RE = re.compile(f"^{_DNS1123_LABEL_FMT}$")
_DNS1035_LABEL_RE = re.compile(f"^{_DNS1035_LABEL_FMT}$")
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME_FMT}$")
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    s = msg + " (e.g. "
    for i, ex in enumerate(examples):
        if i > 0:
            s += " or "
        s += f"'{ex}', "
    return s + f"regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def is_dns1123_label(value: str) -> list[str]:
    """Problems of `value` as an RFC 1123 label (namespaces, container and volume names)."""
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL_RE.match(value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or"
                " '-', and must start and end with an alphanumeric character",
                _DNS1123_LABEL_FMT,
                "my-name",
                "123-abc",
            )
        )
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """Problems of `value` as a DNS-1035 label (Knative's rule for serving object names, tags)."""
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL_RE.match(value):
        errs.append(
            _regex_error(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start"
                " with an alphabetic character, and end with an alphanumeric character",
                _DNS1035_LABEL_FMT,
                "my-name",
                "abc-123",
            )
        )
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric"
                " characters, '-' or '.', and must start and end with an alphanumeric character",
                _DNS1123_SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an"
    " alphanumeric character"
)


def is_qualified_name(value: str) -> list[str]:
    """Problems of `value` as a qualified name `[prefix/]name` (label and annotation keys)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > DNS1123_LABEL_MAX:
        errs.append("name part " + _max_len(DNS1123_LABEL_MAX))
    if name and not _QUALIFIED_NAME_RE.match(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len(DNS1123_LABEL_MAX))
    if not _LABEL_VALUE_RE.match(value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters,"
                " '-', '_' or '.', and must start and end with an alphanumeric character",
                _LABEL_VALUE_FMT,
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


def _name_problems(value: str, rule: NameRule, prefix: bool) -> list[str]:
    if prefix and value.endswith("-"):
        # apimachinery's maskTrailingDash: a generateName may end with the dash before the suffix.
        value = value[:-1] + "a"
    if rule == "dns1035":
        return is_dns1035_label(value)
    if rule == "dns1123-label":
        return is_dns1123_label(value)
    return is_dns1123_subdomain(value)


_RULE_WORDS: dict[NameRule, str] = {
    "dns1035": "DNS 1035 label",
    "dns1123-label": "DNS 1123 label",
    "dns1123-subdomain": "DNS 1123 subdomain",
}


def name_errors(
    value: Any, path: str, rule: NameRule = "dns1035", prefix: bool = False
) -> list[FieldError]:
    """`not a DNS 1035 label: [...]` (Knative's wording) when `value` breaks `rule`."""
    if not isinstance(value, str):
        return [err_invalid_value(value, path, "expected a string")]
    msgs = _name_problems(value, rule, prefix)
    if not msgs:
        return []
    what = _RULE_WORDS[rule] + (" prefix" if prefix else "")
    return [FieldError(path, f"not a {what}: {go_list(msgs)}")]


# ---------------------------------------------------------------------------------------------
# Object metadata
# ---------------------------------------------------------------------------------------------


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (type errors are reported elsewhere)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_int(value: Any) -> int | None:
    """A JSON integer (an integral float too); None for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def is_set(value: Any) -> bool:
    """A field counts as set when present and not empty (Go's zero values are "unset")."""
    return value not in (None, "", [], {}, False)


def metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(obj.get("metadata"))


def set_default_namespace(obj: Obj) -> None:
    """metadata.namespace defaults to `default` (kubectl's and Knative's default namespace)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    if not meta.get("namespace"):
        meta["namespace"] = DEFAULT_NAMESPACE


def _string_map_errors(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [err_invalid_value(value, path, "expected a map of strings")]
    return [
        err_invalid_value(v, join(path, str(k)), "expected a string")
        for k, v in value.items()
        if not isinstance(v, str)
    ]


def label_errors(labels: Any, path: str = "metadata.labels") -> list[FieldError]:
    """Kubernetes' label rules: keys are qualified names, values are ≤63 label-safe characters."""
    errs = _string_map_errors(labels, path)
    if errs or not isinstance(labels, dict):
        return errs
    for k, v in labels.items():
        if msgs := is_qualified_name(k):
            errs.append(err_invalid_key_name(k, path, *msgs))
        if msgs := is_valid_label_value(v):
            errs.append(err_invalid_value(v, join(path, k), *msgs))
    return errs


def annotation_errors(annotations: Any, path: str = "metadata.annotations") -> list[FieldError]:
    """Kubernetes' annotation rules: keys are qualified names, at most 256 KiB in all."""
    errs = _string_map_errors(annotations, path)
    if errs or not isinstance(annotations, dict):
        return errs
    total = 0
    for k, v in annotations.items():
        if msgs := is_qualified_name(k.lower()):
            errs.append(err_invalid_key_name(k, path, *msgs))
        total += len(k.encode()) + len(v.encode())
    if total > MAX_ANNOTATIONS_BYTES:
        errs.append(FieldError(path, f"must have at most {MAX_ANNOTATIONS_BYTES} bytes"))
    return errs


def validate_object_metadata(
    obj: Mapping[str, Any],
    *,
    path: str = "metadata",
    name_rule: NameRule = "dns1035",
    namespaced: bool = True,
) -> list[FieldError]:
    """Names (`name or generateName is required`), namespace, labels and annotations of `obj`.

    Knative (knative.dev/pkg/apis.ValidateObjectMetadata) checks name and generateName as DNS-1035
    labels for every serving kind; other groups may pass another `name_rule`.
    """
    raw = obj.get("metadata")
    if raw is not None and not isinstance(raw, dict):
        return [err_invalid_value(raw, path, "expected an object")]
    meta = as_dict(raw)
    errs: list[FieldError] = []
    name = meta.get("name") or ""
    generate_name = meta.get("generateName") or ""
    if generate_name:
        errs += name_errors(generate_name, join(path, "generateName"), name_rule, prefix=True)
    if name:
        errs += name_errors(name, join(path, "name"), name_rule)
    if not name and not generate_name:
        errs.append(FieldError(join(path, "name"), "name or generateName is required"))
    namespace = meta.get("namespace")
    if namespaced and namespace:
        errs += name_errors(namespace, join(path, "namespace"), "dns1123-label")
    errs += label_errors(meta.get("labels"), join(path, "labels"))
    errs += annotation_errors(meta.get("annotations"), join(path, "annotations"))
    return errs


def owner_references(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in as_list(metadata(obj).get("ownerReferences")) if isinstance(r, dict)]


def controller_ref(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference a child carries to its controlling parent (kmeta.NewControllerRef)."""
    meta = metadata(owner)
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }
