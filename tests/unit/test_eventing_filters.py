"""Trigger filters: Knative's `spec.filter.attributes` and Subscriptions API dialects as predicates."""

from __future__ import annotations

from typing import Any

import pytest

from controller.eventing.filters import Attributes, UnsupportedFilter, compile_trigger_filter
from flint_common.cloudevents.codec import Event


def event(**extra: Any) -> Attributes:
    """A valid event's attributes as the gateway hands them over."""
    attrs: dict[str, Any] = {
        "id": "1",
        "source": "/orders",
        "specversion": "1.0",
        "type": "com.example.order.created",
    }
    attrs.update(extra)
    return Event(attrs).attributes


def matches(filters: list[Any], attributes: Attributes) -> bool:
    return compile_trigger_filter(None, filters)(attributes)


ORDER = event()
OTHER = event(type="com.example.invoice.paid", source="/billing")


# -- spec.filter.attributes ----------------------------------------------------------------------


@pytest.mark.parametrize("attributes_filter", [None, {}])
def test_no_filter_matches_everything(attributes_filter: dict[str, str] | None) -> None:
    no_filters: tuple[list[Any] | None, ...] = (None, [])
    for filters in no_filters:
        matcher = compile_trigger_filter(attributes_filter, filters)
        assert matcher(ORDER)
        assert matcher(OTHER)


def test_attributes_filter_requires_every_value() -> None:
    matcher = compile_trigger_filter({"type": "com.example.order.created", "source": "/orders"}, None)
    assert matcher(ORDER)
    assert not matcher(event(source="/elsewhere"))
    assert not matcher(OTHER)


def test_attributes_filter_empty_value_means_present_with_any_value() -> None:
    matcher = compile_trigger_filter({"subject": ""}, None)
    assert matcher(event(subject="42"))
    assert matcher(event(subject="anything at all"))
    assert not matcher(ORDER)


def test_attributes_filter_missing_attribute_never_matches() -> None:
    assert not compile_trigger_filter({"region": "eu"}, None)(ORDER)


def test_attributes_filter_is_exact_and_case_sensitive() -> None:
    matcher = compile_trigger_filter({"type": "com.example.order.created"}, None)
    assert not matcher(event(type="com.example.Order.created"))
    assert not matcher(event(type="com.example.order.created.v2"))
    assert not matcher(event(type="com.example.order"))
    # Attribute names too: `Type` is not `type`.
    assert not compile_trigger_filter({"Type": "com.example.order.created"}, None)(ORDER)


def test_attributes_filter_compares_canonical_strings_of_extensions() -> None:
    matcher = compile_trigger_filter({"urgent": "true", "priority": "5"}, None)
    assert matcher(event(urgent=True, priority=5))
    assert matcher(event(urgent="true", priority="5"))
    assert not matcher(event(urgent=False, priority=5))
    assert not matcher(event(urgent=True, priority=50))
    assert not compile_trigger_filter({"urgent": "True"}, None)(event(urgent=True))
    assert compile_trigger_filter({"priority": "-7"}, None)(event(priority=-7))


def test_attributes_filter_present_rule_takes_bool_false_and_zero() -> None:
    matcher = compile_trigger_filter({"urgent": "", "priority": ""}, None)
    assert matcher(event(urgent=False, priority=0))
    assert not matcher(event(urgent=False))


# -- spec.filters overrides spec.filter ----------------------------------------------------------


def test_filters_override_attributes_filter() -> None:
    matcher = compile_trigger_filter(
        {"type": "com.example.order.created"}, [{"exact": {"type": "com.example.invoice.paid"}}]
    )
    assert matcher(OTHER)
    assert not matcher(ORDER)


def test_filters_that_impose_nothing_still_override_attributes_filter() -> None:
    matcher = compile_trigger_filter({"type": "com.example.order.created"}, [{}])
    assert matcher(OTHER)


def test_empty_filters_fall_back_to_attributes_filter() -> None:
    matcher = compile_trigger_filter({"type": "com.example.order.created"}, [])
    assert matcher(ORDER)
    assert not matcher(OTHER)


def test_every_filters_entry_must_match() -> None:
    filters = [{"prefix": {"type": "com.example."}}, {"exact": {"source": "/orders"}}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)
    assert not matches(filters, event(source="/billing"))


# -- exact, prefix, suffix -----------------------------------------------------------------------


def test_exact() -> None:
    filters = [{"exact": {"type": "com.example.order.created"}}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)
    assert not matches(filters, event(type="COM.EXAMPLE.ORDER.CREATED"))
    assert not matches([{"exact": {"subject": "x"}}], ORDER)


def test_exact_with_several_attributes_needs_all() -> None:
    filters = [{"exact": {"type": "com.example.order.created", "source": "/orders"}}]
    assert matches(filters, ORDER)
    assert not matches(filters, event(source="/other"))


def test_exact_on_bool_and_int_extensions() -> None:
    assert matches([{"exact": {"urgent": "true"}}], event(urgent=True))
    assert not matches([{"exact": {"urgent": "true"}}], event(urgent=False))
    assert matches([{"exact": {"retries": "0"}}], event(retries=0))
    assert not matches([{"exact": {"retries": "0"}}], event(retries=10))


def test_prefix() -> None:
    filters = [{"prefix": {"type": "com.example.order."}}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)
    assert not matches(filters, event(type="Com.example.order.created"))
    assert not matches([{"prefix": {"region": "eu"}}], ORDER)
    assert matches([{"prefix": {"region": "eu"}}], event(region="eu-west-1"))


def test_suffix() -> None:
    filters = [{"suffix": {"type": ".created"}}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)
    assert not matches(filters, event(type="com.example.order.CREATED"))
    assert not matches([{"suffix": {"region": "-1"}}], ORDER)


def test_prefix_and_suffix_on_extension_values() -> None:
    assert matches([{"prefix": {"count": "12"}}], event(count=123))
    assert matches([{"suffix": {"flag": "ue"}}], event(flag=True))
    assert not matches([{"suffix": {"flag": "ue"}}], event(flag=False))


def test_empty_values_impose_nothing_as_knative_refuses_them() -> None:
    # Knative's NewExactFilter/NewPrefixFilter/NewSuffixFilter reject an empty value and the
    # filter is skipped, so the trigger gets every event, the attribute present or not.
    for dialect in ("exact", "prefix", "suffix"):
        assert matches([{dialect: {"region": ""}}], ORDER)


# -- all, any, not -------------------------------------------------------------------------------


def test_all() -> None:
    filters = [{"all": [{"prefix": {"type": "com.example."}}, {"suffix": {"type": ".created"}}]}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)
    assert not matches(filters, event(type="org.example.order.created"))


def test_any() -> None:
    filters = [{"any": [{"exact": {"source": "/orders"}}, {"exact": {"source": "/billing"}}]}]
    assert matches(filters, ORDER)
    assert matches(filters, OTHER)
    assert not matches(filters, event(source="/shipping"))


def test_not() -> None:
    filters = [{"not": {"exact": {"type": "com.example.order.created"}}}]
    assert not matches(filters, ORDER)
    assert matches(filters, OTHER)


def test_not_of_a_missing_attribute_matches() -> None:
    assert matches([{"not": {"prefix": {"region": "eu"}}}], ORDER)
    assert not matches([{"not": {"prefix": {"region": "eu"}}}], event(region="eu-west-1"))


def test_double_negation() -> None:
    filters = [{"not": {"not": {"exact": {"source": "/orders"}}}}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)


def test_nested_all_any_not() -> None:
    # Orders or invoices, but not from a test source, and urgent.
    filters = [
        {
            "all": [
                {
                    "any": [
                        {"prefix": {"type": "com.example.order."}},
                        {"prefix": {"type": "com.example.invoice."}},
                    ]
                },
                {"not": {"suffix": {"source": "/test"}}},
                {"exact": {"urgent": "true"}},
            ]
        }
    ]
    assert matches(filters, event(urgent=True))
    assert matches(filters, event(type="com.example.invoice.paid", urgent=True))
    assert not matches(filters, event(urgent=False))
    assert not matches(filters, event())
    assert not matches(filters, event(source="/orders/test", urgent=True))
    assert not matches(filters, event(type="com.example.refund.issued", urgent=True))


def test_any_of_alls_and_not_of_any() -> None:
    filters = [
        {
            "any": [
                {"all": [{"exact": {"source": "/orders"}}, {"suffix": {"type": ".created"}}]},
                {"all": [{"exact": {"source": "/billing"}}, {"suffix": {"type": ".paid"}}]},
            ]
        },
        {"not": {"any": [{"exact": {"subject": "draft"}}, {"exact": {"subject": "test"}}]}},
    ]
    assert matches(filters, ORDER)
    assert matches(filters, OTHER)
    assert matches(filters, event(subject="final"))
    assert not matches(filters, event(subject="draft"))
    assert not matches(filters, event(subject="test"))
    assert not matches(filters, event(source="/billing"))


# -- filters that impose nothing -----------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [{}, {"all": []}, {"any": []}, {"exact": {}}, {"cesql": ""}, {"not": {"any": []}}, {"not": {}}],
)
def test_empty_filter_imposes_nothing(entry: dict[str, Any]) -> None:
    assert matches([entry], ORDER)
    assert matches([entry], OTHER)


def test_empty_filter_inside_a_combinator_is_left_out() -> None:
    # `any` over [order, <nothing>]: only the order filter counts, so an invoice does not match.
    filters = [{"any": [{"exact": {"source": "/orders"}}, {"all": []}]}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)
    # `not` over `all` [order, <nothing>] is `not` order.
    negated = [{"not": {"all": [{"exact": {"source": "/orders"}}, {}]}}]
    assert not matches(negated, ORDER)
    assert matches(negated, OTHER)


def test_empty_filter_next_to_a_real_one_does_not_widen_it() -> None:
    filters = [{}, {"exact": {"source": "/orders"}}, {"any": []}]
    assert matches(filters, ORDER)
    assert not matches(filters, OTHER)


# -- unsupported ---------------------------------------------------------------------------------


def test_cesql_is_unsupported_and_names_the_field() -> None:
    with pytest.raises(UnsupportedFilter) as caught:
        compile_trigger_filter(None, [{"exact": {"type": "t"}}, {"cesql": "type = 't'"}])
    assert str(caught.value) == "spec.filters[1].cesql: CESQL expressions are not supported"
    assert isinstance(caught.value, ValueError)


def test_nested_cesql_names_the_nested_path() -> None:
    filters = [{"any": [{"exact": {"type": "t"}}, {"not": {"all": [{"cesql": "subject = 'x'"}]}}]}]
    with pytest.raises(UnsupportedFilter, match=r"^spec\.filters\[0\]\.any\[1\]\.not\.all\[0\]\.cesql: "):
        compile_trigger_filter(None, filters)


def test_unknown_dialect_is_unsupported() -> None:
    with pytest.raises(UnsupportedFilter, match=r"^spec\.filters\[0\]\.regex: unknown filter dialect$"):
        compile_trigger_filter(None, [{"regex": {"type": ".*"}}])


# -- compiled once -------------------------------------------------------------------------------


def test_matcher_does_not_depend_on_the_spec_after_compiling() -> None:
    spec: dict[str, Any] = {"exact": {"source": "/orders"}}
    attributes_filter = {"type": "com.example.order.created"}
    from_filters = compile_trigger_filter(None, [spec])
    from_attributes = compile_trigger_filter(attributes_filter, None)
    spec["exact"]["source"] = "/billing"
    attributes_filter["type"] = "com.example.invoice.paid"
    assert from_filters(ORDER)
    assert not from_filters(OTHER)
    assert from_attributes(ORDER)
    assert not from_attributes(OTHER)


def test_matcher_takes_a_plain_mapping() -> None:
    matcher = compile_trigger_filter(None, [{"exact": {"type": "t", "ext": "true"}}])
    assert matcher({"type": "t", "ext": True})
    assert not matcher({"type": "t"})
