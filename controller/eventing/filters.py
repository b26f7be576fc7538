"""Trigger filters compiled once into predicates, so the dispatcher can choose each event's triggers fast.

`compile_trigger_filter` turns a Trigger's `spec.filters` (the Subscriptions API dialects) or, when
that list is empty, its `spec.filter.attributes` into one `Matcher`, called with each event's
attributes as received (`flint_common.cloudevents.codec.Event.attributes`). The semantics are Knative's
(knative.dev/eventing pkg/eventfilter/attributes and pkg/eventfilter/subscriptionsapi):

* a non-empty `spec.filters` alone decides (`spec.filter` is ignored) and all its entries must
  match; otherwise every `spec.filter.attributes` entry must: `""` means the attribute is present
  with any value; no filter matches every event;
* an attribute is compared as its canonical string (`true`/`false`, decimal integers), exactly and
  case-sensitively, and must be present: `exact`, `prefix` and `suffix` map attribute → value
  (several keys: all must hold); `all`, `any` and `not` combine filters; `cesql` raises
  `UnsupportedFilter`, naming the field;
* a filter that says nothing imposes nothing, as Knative materialises no filter for it and delivers
  on the `NoFilter` result: `{}`, an empty dialect (`all: []`, `any: []`, `exact: {}`, `cesql: ""`)
  and an `exact`, `prefix` or `suffix` with an empty value (Knative's constructors refuse those).
  It is left out of its `all`, `any` or `not`, and a combinator left with nothing imposes nothing
  in turn; so `any: []` matches every event, and so does `not: {any: []}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flint_common.cloudevents.attrs import AttrValue, canonical_string

__all__ = ["Attributes", "Matcher", "UnsupportedFilter", "compile_trigger_filter"]

Attributes = Mapping[str, AttrValue]
"""An event's attributes as received (`flint_common.cloudevents.codec.Event.attributes`)."""

Matcher = Callable[[Attributes], bool]
"""A compiled filter: does the event with these attributes pass?"""

_Test = Callable[[str, str], bool]
_DIALECTS = frozenset(("exact", "prefix", "suffix", "all", "any", "not", "cesql"))


class UnsupportedFilter(ValueError):
    """A filter this dispatcher cannot evaluate (a CESQL expression, an unknown dialect); the
    message starts with the field's path, e.g. `spec.filters[0].cesql: ...`."""


def compile_trigger_filter(
    attributes_filter: Mapping[str, str] | None, filters: Sequence[Mapping[str, Any]] | None
) -> Matcher:
    """The matcher of a Trigger with `spec.filter.attributes` and `spec.filters` (either may be None)."""
    if filters:
        matcher = _all_of([_compile(f, f"spec.filters[{i}]") for i, f in enumerate(filters)])
    else:
        matcher = _attributes_filter(attributes_filter or {})
    return matcher or _everything


def _everything(attributes: Attributes) -> bool:
    return True


def _string(attributes: Attributes, name: str) -> str | None:
    """The attribute's canonical string, None when the event does not have it."""
    value = attributes.get(name)
    if value is None or isinstance(value, str):
        return value
    return canonical_string(value)


def _attributes_filter(attributes_filter: Mapping[str, str]) -> Matcher | None:
    present = tuple(name for name, want in attributes_filter.items() if want == "")
    equal = tuple((name, want) for name, want in attributes_filter.items() if want != "")
    if not present and not equal:
        return None

    def match(attributes: Attributes) -> bool:
        for name in present:
            if name not in attributes:
                return False
        return all(_string(attributes, name) == want for name, want in equal)

    return match


def _compile(entry: Mapping[str, Any], path: str) -> Matcher | None:
    """One `SubscriptionsAPIFilter`; None when it imposes nothing. The API lets at most one dialect
    be set; were there more, Knative's order decides which counts."""
    for key in entry:
        if key not in _DIALECTS:
            raise UnsupportedFilter(f"{path}.{key}: unknown filter dialect")
    if entry.get("exact"):
        return _attribute_test(entry["exact"], str.__eq__)
    if entry.get("prefix"):
        return _attribute_test(entry["prefix"], str.startswith)
    if entry.get("suffix"):
        return _attribute_test(entry["suffix"], str.endswith)
    if entry.get("all"):
        return _all_of([_compile(f, f"{path}.all[{i}]") for i, f in enumerate(entry["all"])])
    if entry.get("any"):
        return _any_of([_compile(f, f"{path}.any[{i}]") for i, f in enumerate(entry["any"])])
    if entry.get("not") is not None:
        return _negation(_compile(entry["not"], f"{path}.not"))
    if entry.get("cesql"):
        raise UnsupportedFilter(f"{path}.cesql: CESQL expressions are not supported")
    return None


def _attribute_test(spec: Mapping[str, str], test: _Test) -> Matcher | None:
    """`exact`, `prefix` or `suffix`: every attribute present and passing `test(value, wanted)`."""
    if any(not name or not want for name, want in spec.items()):
        return None
    pairs = tuple(spec.items())

    def match(attributes: Attributes) -> bool:
        for name, want in pairs:
            value = _string(attributes, name)
            if value is None or not test(value, want):
                return False
        return True

    return match


def _all_of(compiled: list[Matcher | None]) -> Matcher | None:
    matchers = tuple(m for m in compiled if m is not None)
    if len(matchers) <= 1:
        return matchers[0] if matchers else None

    def match(attributes: Attributes) -> bool:
        return all(matcher(attributes) for matcher in matchers)

    return match


def _any_of(compiled: list[Matcher | None]) -> Matcher | None:
    matchers = tuple(m for m in compiled if m is not None)
    if len(matchers) <= 1:
        return matchers[0] if matchers else None

    def match(attributes: Attributes) -> bool:
        return any(matcher(attributes) for matcher in matchers)

    return match


def _negation(inner: Matcher | None) -> Matcher | None:
    if inner is None:
        return None

    def match(attributes: Attributes) -> bool:
        return not inner(attributes)

    return match
