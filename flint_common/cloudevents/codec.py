"""CloudEvents 1.0 and 0.3 over HTTP: a sans-I/O codec (headers and bytes in, events out), on orjson.

Modes are chosen by Content-Type as the HTTP binding says (3.):

* `application/cloudevents-batch+json` → batched (all or nothing: the first bad event fails
  the whole batch with its index); other `application/cloudevents-batch*` → `UnsupportedFormat`;
* `application/cloudevents+json` → structured; other `application/cloudevents*` (`+xml`,
  `+avro`, ...) → `UnsupportedFormat` (the ingress answers 415);
* anything else with a `ce-specversion` header → binary; otherwise `NotACloudEvent`.

Data is kept exactly:

* binary mode: the body bytes as they came, opaque (HTTP binding 3.1): a JSON Content-Type whose
  body does not parse is kept byte for byte, as data that is not JSON (`data_base64` in the
  structured form); structured and batched bodies must be valid JSON;
* structured and batched: `data` is the raw JSON text slice of the member (byte for byte, no
  re-serialisation) when the data is JSON (datacontenttype JSON or absent, or a non-string value);
  a JSON string with a non-JSON datacontenttype is its UTF-8 bytes; `data_base64` is decoded;
  a `data` of `null` means no data;
* across modes data is JSON-equal: JSON data goes into `data` verbatim (`orjson.Fragment`), other
  data as `data_base64` (as a JSON string for text media types, e.g. `text/plain`). Going to
  binary, JSON data with no datacontenttype gets `Content-Type: application/json`, the type the
  JSON format implies. A binary event without Content-Type has data of unknown type: it is
  taken as JSON if it parses as JSON (as the JSON format assumes for an absent datacontenttype
  and as SDKs send it), else as opaque bytes (`data_base64`); no attribute is added.
  Whitespace around JSON data cannot survive the structured form (JSON-equal, not byte-equal),
  but does survive the log.

Attributes keep their received types: everything in binary mode is a string; in the JSON format
extensions may be booleans or integers and `to_binary` writes their canonical strings. `time` and
the URI attributes stay the strings received (validated, not normalised).

CloudEvents 0.3 (`specversion` "0.3") is read and written in every mode with its own attribute
names (`schemaurl`, `datacontentencoding`) and kept as 0.3: an event goes out in the version it came
in. In 0.3's JSON format base64 data is the `data` string with `"datacontentencoding": "base64"`
(there is no `data_base64`); going to the structured form, 0.3 data that is neither JSON nor text
gets that attribute, as 0.3 requires. In binary mode the body is the data in both versions (a
`ce-datacontentencoding` header is carried as an attribute, the body is not decoded).

The channel log stores `Event.to_log()` (1.0's structured layout for every version, lossless) and
reads it back with `Event.from_log()`, which trusts the log and skips validation.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from flint_common.cloudevents.attrs import (
    SPECVERSION_03,
    AttrValue,
    CloudEventError,
    EventTooLarge,
    InvalidEvent,
    NotACloudEvent,
    UnsupportedFormat,
    canonical_string,
    check_extension_value,
    check_name,
    core_attributes,
    is_base64_encoding,
    is_json_media_type,
    is_text_media_type,
    json_type_name,
    media_type,
    percent_decode,
    percent_encode,
    validate_attributes,
)
from flint_common.cloudevents.jsonspans import ScanError, array_elements, member_span

__all__ = [
    "CONTENT_TYPE_BATCH",
    "CONTENT_TYPE_STRUCTURED",
    "AttrValue",
    "CloudEventError",
    "Event",
    "EventTooLarge",
    "InvalidEvent",
    "NotACloudEvent",
    "UnsupportedFormat",
    "decode_http",
    "encode_batch",
    "is_json_media_type",
]

CONTENT_TYPE_STRUCTURED = "application/cloudevents+json"
CONTENT_TYPE_BATCH = "application/cloudevents-batch+json"
_CE_PREFIX = "ce-"

_JSON_WS = b" \t\r\n"
_LOG_JSON_FLAG = "_datajson"

Headers = Sequence[tuple[bytes, bytes]] | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Event:
    """One CloudEvent.

    `attributes` maps attribute names to values as received (core attributes are strings,
    extensions str/bool/int); `data` is the data's bytes or None; `data_is_json` says the bytes
    are JSON text (written into the structured form's `data` member verbatim). Not hashable.
    """

    attributes: dict[str, AttrValue]
    data: bytes | None = None
    data_is_json: bool = False
    __hash__ = None  # type: ignore[assignment]

    # -- access -----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return str(self.attributes["id"])

    @property
    def source(self) -> str:
        return str(self.attributes["source"])

    @property
    def type(self) -> str:
        return str(self.attributes["type"])

    @property
    def datacontenttype(self) -> str | None:
        value = self.attributes.get("datacontenttype")
        return None if value is None else str(value)

    def get(self, name: str) -> AttrValue | None:
        return self.attributes.get(name)

    def json(self) -> Any:
        """The data as a Python value when it is JSON (None without data)."""
        if self.data is None:
            return None
        if not self.data_is_json:
            raise ValueError("the event's data is not JSON")
        return orjson.loads(self.data)

    def validate(self) -> None:
        """Raise `InvalidEvent` if the attributes break the spec (decoding already did this)."""
        validate_attributes(self.attributes)

    def with_extensions(self, **values: AttrValue | None) -> Event:
        """A copy with extension attributes set (None removes one), validated, e.g.
        `event.with_extensions(knativearrivaltime="2024-01-01T00:00:00Z", knativebrokerttl=255)`."""
        attrs = dict(self.attributes)
        for name, value in values.items():
            check_name(name)
            if name in core_attributes(self.attributes.get("specversion")):
                raise InvalidEvent(f'"{name}" is a core attribute, not an extension')
            if value is None:
                attrs.pop(name, None)
            else:
                attrs[name] = check_extension_value(name, value)
        return Event(attrs, self.data, self.data_is_json)

    # -- encoding ---------------------------------------------------------------------------
    def _json_doc(self, *, v03: bool) -> dict[str, Any]:
        """The JSON format's object; `v03`: 0.3's layout (base64 data as `data` with
        `datacontentencoding`), else 1.0's (`data_base64`)."""
        doc: dict[str, Any] = dict(self.attributes)
        if self.data is None:
            return doc
        if v03 and is_base64_encoding(doc.get("datacontentencoding")):
            doc["data"] = base64.b64encode(self.data).decode("ascii")
            return doc
        if self.data_is_json:
            doc["data"] = orjson.Fragment(self.data)
            return doc
        # A JSON string under a JSON type would read back as that string value: base64 then.
        if is_text_media_type(self.datacontenttype) and not is_json_media_type(self.datacontenttype):
            try:
                doc["data"] = self.data.decode("utf-8")
                return doc
            except UnicodeDecodeError:
                pass
        if v03:
            doc["datacontentencoding"] = "base64"
            doc["data"] = base64.b64encode(self.data).decode("ascii")
            return doc
        doc["data_base64"] = base64.b64encode(self.data).decode("ascii")
        return doc

    def to_structured(self) -> bytes:
        """The JSON event format (`application/cloudevents+json`) body."""
        return orjson.dumps(self._json_doc(v03=self.attributes.get("specversion") == SPECVERSION_03))

    def to_binary(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """Binary mode: `ce-` headers (values percent-encoded), Content-Type, and the body."""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in self.attributes.items():
            if name != "datacontenttype":
                headers.append((b"ce-" + name.encode("ascii"), percent_encode(canonical_string(value))))
        ctype = self.datacontenttype
        if ctype is None and self.data_is_json and self.data is not None:
            ctype = "application/json"
        if ctype is not None:
            headers.append((b"content-type", ctype.encode("utf-8")))
        return headers, self.data if self.data is not None else b""

    def to_log(self) -> bytes:
        """Stable storage encoding for the channel log: the structured JSON form, lossless.

        JSON data with whitespace around it (a binary body ending in a newline, say) cannot sit
        in `data` verbatim, so the log keeps it as `data_base64` with the private member
        `_datajson` (not a valid attribute name, so it cannot clash)."""
        if self.data_is_json and self.data is not None and self.data.strip(_JSON_WS) != self.data:
            doc: dict[str, Any] = dict(self.attributes)
            doc["data_base64"] = base64.b64encode(self.data).decode("ascii")
            doc[_LOG_JSON_FLAG] = True
            return orjson.dumps(doc)
        return orjson.dumps(self._json_doc(v03=False))

    @classmethod
    def from_log(cls, raw: bytes) -> Event:
        """Read back `to_log()` output (trusted: no validation)."""
        obj = orjson.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("a logged event must be a JSON object")
        if obj.pop(_LOG_JSON_FLAG, None):
            return Event(
                {k: v for k, v in obj.items() if k != "data_base64"},
                base64.b64decode(obj["data_base64"]),
                True,
            )
        return _from_json_object(obj, raw, 0, wire=False, index=None)


def encode_batch(events: Iterable[Event]) -> bytes:
    """A JSON batch (`application/cloudevents-batch+json`) body."""
    return b"[" + b",".join(e.to_structured() for e in events) + b"]"


# -- decoding -------------------------------------------------------------------------------


def _normalise(headers: Headers) -> list[tuple[str, bytes]]:
    if isinstance(headers, Mapping):
        return [(k.lower(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
    return [(k.decode("latin-1").lower(), v) for k, v in headers]


def decode_http(headers: Headers, body: bytes, *, max_event_bytes: int) -> list[Event]:
    """Decode an HTTP message into its events (one, or a batch's, possibly none).

    Raises `NotACloudEvent` / `InvalidEvent` (400), `EventTooLarge` (413) or
    `UnsupportedFormat` (415); `exc.status` is the HTTP answer and `str(exc)` the body text.
    The size of an event is its JSON object's length in the JSON formats and its body plus its
    `ce-` headers in binary mode. A batch's total size is the caller's limit to enforce.
    """
    hdrs = _normalise(headers)
    ctype = ""
    has_specversion = False
    for name, value in hdrs:
        if name == "content-type":
            ctype = value.decode("latin-1").strip()
        elif name == "ce-specversion":
            has_specversion = True
    mt = media_type(ctype)
    if mt.startswith("application/cloudevents-batch"):
        if mt != CONTENT_TYPE_BATCH:
            raise UnsupportedFormat(f'unsupported batch format "{mt}"; use "{CONTENT_TYPE_BATCH}"')
        return _decode_batch(body, max_event_bytes)
    if mt.startswith("application/cloudevents"):
        if mt != CONTENT_TYPE_STRUCTURED:
            raise UnsupportedFormat(f'unsupported event format "{mt}"; use "{CONTENT_TYPE_STRUCTURED}"')
        return [_decode_structured(body, max_event_bytes)]
    if has_specversion:
        return [_decode_binary(hdrs, ctype or None, body, max_event_bytes)]
    shown = f'Content-Type is "{ctype}"' if ctype else "there is no Content-Type"
    raise NotACloudEvent(f"not a CloudEvent: {shown} and there is no ce-specversion header")


def _decode_binary(hdrs: list[tuple[str, bytes]], ctype: str | None, body: bytes, limit: int) -> Event:
    if len(body) > limit:
        raise EventTooLarge(len(body), limit)
    size = len(body)
    attrs: dict[str, AttrValue] = {}
    for name, raw in hdrs:
        if not name.startswith(_CE_PREFIX):
            continue
        attr = name[len(_CE_PREFIX) :]
        check_name(attr)
        if attr in attrs:
            raise InvalidEvent(f'header "{name}" appears more than once')
        attrs[attr] = percent_decode(raw, name)
        size += len(name) + len(raw)
    if size > limit:
        raise EventTooLarge(size, limit)
    if "datacontenttype" in attrs and ctype is not None:
        raise InvalidEvent("binary mode carries datacontenttype in Content-Type; drop ce-datacontenttype")
    if ctype is not None:
        attrs["datacontenttype"] = ctype
    validate_attributes(attrs)
    data = body if body else None
    dct = attrs.get("datacontenttype")
    if data is None:
        return Event(attrs, None, False)
    if dct is None:  # unknown type: JSON if it parses (what the JSON format assumes), else opaque
        return Event(attrs, data, _parses(data))
    if not is_json_media_type(str(dct)):
        return Event(attrs, data, False)
    # The body is the data, opaque to the binding (HTTP binding 3.1): JSON-typed bytes that do
    # not parse are kept as they came, like Knative's ingress does.
    return Event(attrs, data, _parses(data))


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"body is not valid JSON: {exc}") from None


def _decode_structured(body: bytes, limit: int) -> Event:
    if len(body) > limit:
        raise EventTooLarge(len(body), limit)
    obj = _loads(body)
    if not isinstance(obj, dict):
        raise InvalidEvent(f"a structured event must be a JSON object, not {_type(obj)}")
    return _from_json_object(obj, body, 0, wire=True, index=None)


def _decode_batch(body: bytes, limit: int) -> list[Event]:
    doc = _loads(body)
    if not isinstance(doc, list):
        raise InvalidEvent(f"a batch must be a JSON array, not {_type(doc)}")
    try:
        spans = array_elements(body)
    except ScanError:  # pragma: no cover - orjson accepted the text
        spans = [(0, 0)] * len(doc)
    events: list[Event] = []
    for index, (obj, (start, end)) in enumerate(zip(doc, spans, strict=True)):
        if end - start > limit:
            raise EventTooLarge(end - start, limit, index)
        if not isinstance(obj, dict):
            raise InvalidEvent(f"an event must be a JSON object, not {_type(obj)}", index)
        events.append(_from_json_object(obj, body, start, wire=True, index=index))
    return events


def _type(value: object) -> str:
    return json_type_name(value)


def _from_json_object(
    obj: dict[str, Any], buf: bytes, start: int, *, wire: bool, index: int | None
) -> Event:
    """An event from a JSON format object. `wire`: as received, validated and read by its own
    version's rules; else from the log (trusted, 1.0's layout)."""
    attrs: dict[str, AttrValue] = {k: v for k, v in obj.items() if v is not None and k not in _DATA_KEYS}
    data_value = obj.get("data")
    b64_value = obj.get("data_base64")
    try:
        if wire:
            validate_attributes(attrs)
            if attrs["specversion"] == SPECVERSION_03:
                return _from_v03_object(attrs, data_value, b64_value, buf, start)
            if data_value is not None and b64_value is not None:
                raise InvalidEvent('"data" and "data_base64" must not both be present')
        if b64_value is not None:
            if not isinstance(b64_value, str):
                raise InvalidEvent(f'"data_base64" must be a string, not {_type(b64_value)}')
            try:
                return Event(attrs, base64.b64decode(b64_value, validate=True), False)
            except (binascii.Error, ValueError):
                raise InvalidEvent('"data_base64" is not valid base64') from None
        return _data_member(attrs, data_value, buf, start)
    except InvalidEvent as exc:
        if index is None:
            raise
        raise InvalidEvent(exc.reason, index) from None


_DATA_KEYS = frozenset(("data", "data_base64"))


def _from_v03_object(
    attrs: dict[str, AttrValue], data_value: Any, b64_value: Any, buf: bytes, start: int
) -> Event:
    """A 0.3 JSON event's data: `data`, a base64 string when `datacontentencoding` is base64."""
    if b64_value is not None:
        raise InvalidEvent(
            '"data_base64" is not a CloudEvents 0.3 member; a 0.3 event carries base64 data in'
            ' "data" with "datacontentencoding": "base64"'
        )
    if data_value is not None and is_base64_encoding(attrs.get("datacontentencoding")):
        if not isinstance(data_value, str):
            raise InvalidEvent(
                f'"data" must be a base64 string when datacontentencoding is "base64",'
                f" not {_type(data_value)}"
            )
        try:
            return Event(attrs, base64.b64decode(data_value, validate=True), False)
        except (binascii.Error, ValueError):
            raise InvalidEvent('"data" is not valid base64 (datacontentencoding is "base64")') from None
    return _data_member(attrs, data_value, buf, start)


def _data_member(attrs: dict[str, AttrValue], data_value: Any, buf: bytes, start: int) -> Event:
    """The event of a `data` member (not base64): a string of a non-JSON type is its UTF-8
    bytes, anything else is JSON, kept as the raw text sent; null is no data."""
    if data_value is None:
        return Event(attrs, None, False)
    dct = attrs.get("datacontenttype")
    if isinstance(data_value, str) and dct is not None and not is_json_media_type(str(dct)):
        return Event(attrs, data_value.encode("utf-8"), False)
    return Event(attrs, _raw_data(buf, start, data_value), True)


def _raw_data(buf: bytes, start: int, value: Any) -> bytes:
    """The `data` member's JSON text as sent; re-serialised (JSON-equal) only if scanning fails."""
    try:
        span = member_span(buf, start, "data")
    except ScanError:  # pragma: no cover - orjson accepted the text
        span = None
    if span is None:  # pragma: no cover
        return orjson.dumps(value)
    return buf[span[0] : span[1]]
