"""CloudEvents 1.0 and 0.3 attributes: errors, validation, media types and ce- header coding (pure).

Used by `flint_common.cloudevents.codec`; import the public names from there. Messages are written for the
person who sent the event: each names the attribute and what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote, unquote_to_bytes

AttrValue = str | bool | int
"""An attribute value as received: core attributes are strings, extensions may be bool or int."""

SPECVERSION = "1.0"
SPECVERSION_03 = "0.3"
"""CloudEvents 0.3, still sent by older producers; Knative's ingress takes it (eventing conformance:
"MUST conform to CloudEvents 0.3 or 1.0"). Its events keep their version and attribute names."""
SPECVERSIONS = (SPECVERSION, SPECVERSION_03)
REQUIRED = ("id", "source", "specversion", "type")
CORE_OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
CORE = frozenset(REQUIRED + CORE_OPTIONAL)
CORE_OPTIONAL_03 = ("datacontenttype", "datacontentencoding", "schemaurl", "subject", "time")
CORE_03 = frozenset(REQUIRED + CORE_OPTIONAL_03)
"""0.3's context attributes: `schemaurl` (a URI-reference; 1.0's `dataschema` is an absolute URI)
and `datacontentencoding` (`base64`: the JSON format's `data` is a base64 string)."""
BASE64 = "base64"
RESERVED = frozenset(("data", "data_base64"))
"""Member names of the JSON format that are not attributes (`data` may not be an extension)."""

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1

_NAME = re.compile(r"[a-z0-9]{1,20}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))\Z"
)
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})[ \t]*(?:;.*)?\Z", re.S)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# RFC 3986 forbids these anywhere in a URI; `%` must start a two-digit escape. Non-ASCII passes
# (IRIs are common in the wild and the Go SDK, Knative's own, accepts them).
_URI_BAD = re.compile(r'[\x00-\x20\x7f"<>\\^`{|}]|%(?![0-9A-Fa-f]{2})')
# Printable ASCII except space, `"` and `%` needs no encoding (HTTP binding 3.1.3.2).
_NEEDS_PCT = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_PCT_SAFE = "!#$&'()*+,/:;<=>?@[\\]^`{|}"
_BAD_PCT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)


class CloudEventError(ValueError):
    """A request that cannot be taken as CloudEvents; `status` is the HTTP answer."""

    status = 400

    def __init__(self, reason: str, index: int | None = None) -> None:
        self.reason = reason
        self.index = index
        super().__init__(f"event {index}: {reason}" if index is not None else reason)

    @property
    def message(self) -> str:
        return str(self)


class NotACloudEvent(CloudEventError):
    """Neither a CloudEvents media type nor a `ce-specversion` header (400)."""


class InvalidEvent(CloudEventError):
    """The event breaks the spec; `index` is its position in a batch (400)."""


class UnsupportedFormat(CloudEventError):
    """A structured or batched event format other than JSON, e.g. `application/cloudevents+xml` (415)."""

    status = 415


class EventTooLarge(CloudEventError):
    """An event over the configured maximum (413)."""

    status = 413

    def __init__(self, size: int, limit: int, index: int | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"event is {size} bytes, over the limit of {limit} bytes", index)


def json_type_name(value: object) -> str:
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
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def media_type(value: str) -> str:
    """`type/subtype` of a Content-Type value, lowercased, parameters dropped."""
    return value.split(";", 1)[0].strip().lower()


def is_json_media_type(value: str | None) -> bool:
    """Whether a datacontenttype declares JSON: `application/json`, `text/json` or `*/*+json`."""
    if value is None:
        return False
    mt = media_type(value)
    return mt in ("application/json", "text/json") or mt.endswith("+json")


def is_text_media_type(value: str | None) -> bool:
    """Media types whose data the JSON format carries as a JSON string rather than base64."""
    if value is None:
        return False
    mt = media_type(value)
    return (
        mt.startswith("text/")
        or mt in ("application/xml", "application/x-www-form-urlencoded")
        or (mt.endswith("+xml"))
    )


def is_rfc3339(value: str) -> bool:
    m = _TIME.match(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))  # 60: a leap second
    except ValueError:
        return False
    if second > 60:
        return False
    off_h, off_m = m.group(8), m.group(9)
    return off_h is None or (int(off_h) < 24 and int(off_m) < 60)


def is_uri_reference(value: str) -> bool:
    return _URI_BAD.search(value) is None


def is_absolute_uri(value: str) -> bool:
    return _SCHEME.match(value) is not None and _URI_BAD.search(value) is None


def check_name(name: str) -> None:
    if _NAME.match(name) is None:
        raise InvalidEvent(f'attribute name "{name}" must be 1-20 lowercase letters or digits')
    if name in RESERVED:
        raise InvalidEvent(f'attribute name "{name}" is reserved for the event data')


def _check_string(name: str, value: str) -> None:
    m = _CONTROL.search(value)
    if m is not None:
        raise InvalidEvent(f'attribute "{name}" contains a control character (U+{ord(m.group()):04X})')


def check_extension_value(name: str, value: object) -> AttrValue:
    """An extension value of a CloudEvents type: string (also uri, uri-ref, binary, timestamp
    in their canonical string form), boolean or integer (32-bit signed)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidEvent(f'extension "{name}" integer {value} is outside the 32-bit signed range')
        return value
    if isinstance(value, str):
        _check_string(name, value)
        return value
    raise InvalidEvent(
        f'extension "{name}" must be a string, boolean or integer, not {json_type_name(value)}'
    )


def core_attributes(specversion: object) -> frozenset[str]:
    """The context attributes of a spec version (1.0's for anything but "0.3")."""
    return CORE_03 if specversion == SPECVERSION_03 else CORE


def is_base64_encoding(value: object) -> bool:
    """Whether a 0.3 `datacontentencoding` says base64 (RFC 2045 encodings are case-insensitive)."""
    return isinstance(value, str) and value.lower() == BASE64


def validate_attributes(attrs: Mapping[str, object]) -> None:
    """Raise `InvalidEvent` for the first thing wrong with a set of attributes (nulls removed),
    by the rules of the event's spec version (1.0 or 0.3)."""
    for name in REQUIRED:
        if name not in attrs:
            raise InvalidEvent(f'missing required attribute "{name}"')
    core = core_attributes(attrs["specversion"])
    for name, value in attrs.items():
        if name not in core:
            check_name(name)
            check_extension_value(name, value)
            continue
        if not isinstance(value, str):
            raise InvalidEvent(f'attribute "{name}" must be a string, not {json_type_name(value)}')
        if value == "":
            raise InvalidEvent(f'attribute "{name}" must not be empty')
        _check_string(name, value)
        if name == "specversion" and value not in SPECVERSIONS:
            raise InvalidEvent(
                f'specversion "{value}" is not supported; use "{SPECVERSION}" (or "{SPECVERSION_03}")'
            )
        if name == "source" and not is_uri_reference(value):
            raise InvalidEvent(f'source "{value}" is not a URI-reference')
        if name == "dataschema" and not is_absolute_uri(value):
            raise InvalidEvent(f'dataschema "{value}" is not an absolute URI')
        if name == "schemaurl" and not is_uri_reference(value):
            raise InvalidEvent(f'schemaurl "{value}" is not a URI-reference')
        if name == "datacontentencoding" and not is_base64_encoding(value):
            raise InvalidEvent(
                f'datacontentencoding "{value}" is not supported; the only encoding of'
                f' CloudEvents 0.3 data is "{BASE64}"'
            )
        if name == "time" and not is_rfc3339(value):
            raise InvalidEvent(f'time "{value}" is not an RFC 3339 timestamp')
        if name == "datacontenttype" and _MEDIA_TYPE.match(value) is None:
            raise InvalidEvent(
                f'datacontenttype "{value}" is not an RFC 2046 media type such as "application/json"'
            )


def canonical_string(value: AttrValue) -> str:
    """The canonical string of an attribute value (CloudEvents type system)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def percent_encode(value: str) -> bytes:
    """Encode a header value as the HTTP binding says: space, `"`, `%` and everything outside
    printable ASCII become `%XY` of their UTF-8 bytes (upper-case hex)."""
    if _NEEDS_PCT.search(value) is None:
        return value.encode("ascii")
    return quote(value, safe=_PCT_SAFE, encoding="utf-8", errors="strict").encode("ascii")


def percent_decode(raw: bytes, header: str) -> str:
    """Decode a ce- header value: optional quoted-string unescaping (RFC 7230 3.2.6, for older
    senders), then one round of percent-decoding; the result must be valid UTF-8."""
    value = raw.strip(b" \t")
    if len(value) >= 2 and value[0] == 0x22 and value[-1] == 0x22:
        value = _QUOTED_PAIR.sub(rb"\1", value[1:-1])
    if b"%" in value:
        bad = _BAD_PCT.search(value)
        if bad is not None:
            snippet = value[bad.start() : bad.start() + 3].decode("latin-1")
            raise InvalidEvent(f'header "{header}" has an invalid percent-encoding "{snippet}"')
        value = unquote_to_bytes(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent(f'header "{header}" is not valid UTF-8 after percent-decoding') from None
