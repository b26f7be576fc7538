"""Kubernetes quantities (128Mi, 1G, 500m, 1e9) parsed exactly, as a cluster reads them."""

from __future__ import annotations

import math
import re
from fractions import Fraction

QUANTITY_FORMAT_ERROR = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$"
)


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity: `"128Mi"` → 134217728, `"500m"` → 1/2."""
    if not isinstance(text, str):
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    m = _QUANTITY_RE.match(text.strip())
    if m is None or not text.strip():
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    value = Fraction(m["num"])
    if m["exp"]:
        exponent = int(m["exp"][1:])
        if abs(exponent) > 64:
            raise QuantityError("quantity exponent is out of range")
        return value * Fraction(10) ** exponent
    suffix = m["suffix"] or ""
    if suffix in _BINARY:
        return value * Fraction(1024) ** _BINARY[suffix]
    return value * Fraction(10) ** _DECIMAL[suffix]


def _value(text: str | int | float) -> Fraction:
    if isinstance(text, bool):
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            raise QuantityError(QUANTITY_FORMAT_ERROR)
        return Fraction(text)
    return parse_quantity(text)


def quantity_bytes(text: str | int | float) -> int:
    """A quantity as a whole number of bytes, rounded up as Kubernetes' `Quantity.Value()` does."""
    return math.ceil(_value(text))


def cpu_millis(text: str | int | float) -> int:
    """A CPU quantity in millicores, rounded up (`"250m"` → 250, `"1.5"` → 1500)."""
    return math.ceil(_value(text) * 1000)
