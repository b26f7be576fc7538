"""CloudEvents codec: conformance-style cases from the v1.0 spec, HTTP binding and JSON format."""

from __future__ import annotations

import base64
import warnings
from typing import Any

import orjson
import pytest

from flint_common.cloudevents.attrs import percent_decode, percent_encode
from flint_common.cloudevents.codec import (
    CONTENT_TYPE_BATCH,
    CONTENT_TYPE_STRUCTURED,
    Event,
    EventTooLarge,
    InvalidEvent,
    NotACloudEvent,
    UnsupportedFormat,
    decode_http,
    encode_batch,
)

LIMIT = 1 << 20
BASE: dict[str, Any] = {"specversion": "1.0", "id": "e-1", "source": "/my/source", "type": "com.example.t"}
STRUCT = [(b"content-type", CONTENT_TYPE_STRUCTURED.encode())]
BATCH = [(b"content-type", CONTENT_TYPE_BATCH.encode())]


def binary_headers(**attrs: str) -> list[tuple[bytes, bytes]]:
    merged = {**BASE, **attrs}
    return [(b"ce-" + k.encode(), v.encode()) for k, v in merged.items()]


def one(headers: Any, body: bytes, limit: int = LIMIT) -> Event:
    events = decode_http(headers, body, max_event_bytes=limit)
    assert len(events) == 1
    return events[0]


def structured(**members: Any) -> bytes:
    return orjson.dumps({**BASE, **members})


# -- mode selection ---------------------------------------------------------------------------


def test_binary_mode_json_data_kept_byte_for_byte() -> None:
    body = b'{ "b":1,  "a" : [1.50, "x"] }'
    ev = one([*binary_headers(), (b"Content-Type", b"application/json; charset=utf-8")], body)
    assert ev.attributes == {**BASE, "datacontenttype": "application/json; charset=utf-8"}
    assert ev.data == body and ev.data_is_json
    headers, out = ev.to_binary()
    assert out == body
    assert (b"content-type", b"application/json; charset=utf-8") in headers
    assert one(headers, out) == ev


def test_binary_mode_opaque_data_and_mapping_headers() -> None:
    body = bytes(range(256))
    hdrs = {"Ce-Specversion": "1.0", "CE-ID": "x", "ce-source": "urn:a", "ce-type": "t"}
    ev = one({**hdrs, "Content-Type": "application/octet-stream"}, body)
    assert ev.data == body and not ev.data_is_json
    assert ev.id == "x" and ev.source == "urn:a" and ev.type == "t"


@pytest.mark.parametrize("ctype", [b"application/json", b"text/json", b"application/vnd.x+json"])
def test_binary_mode_data_is_opaque_even_when_its_type_says_json(ctype: bytes) -> None:
    """HTTP binding 3.1: in binary mode the body is the data, whatever its declared type."""
    body = b'{not json, "but": kept}\n\x00'
    ev = one([*binary_headers(), (b"content-type", ctype)], body)
    assert ev.data == body and not ev.data_is_json and ev.datacontenttype == ctype.decode()
    headers, out = ev.to_binary()
    assert out == body and (b"content-type", ctype) in headers
    doc = orjson.loads(ev.to_structured())  # JSON-typed but not JSON: the bytes go as base64
    assert base64.b64decode(doc["data_base64"]) == body and "data" not in doc
    assert one(STRUCT, ev.to_structured()) == ev
    assert Event.from_log(ev.to_log()) == ev
    with pytest.raises(ValueError, match="not JSON"):
        ev.json()


def test_structured_mode_still_needs_a_json_body() -> None:
    body = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{not json}}'
    with pytest.raises(InvalidEvent, match=r"^body is not valid JSON"):
        one(STRUCT, body)
    with pytest.raises(InvalidEvent, match=r"^body is not valid JSON"):
        decode_http(BATCH, b"[" + body + b"]", max_event_bytes=LIMIT)


def test_binary_mode_without_body_or_content_type() -> None:
    ev = one(binary_headers(), b"")
    assert ev.data is None and "datacontenttype" not in ev.attributes
    assert ev.to_binary() == (binary_headers(), b"")


def test_structured_mode_keeps_raw_data_text() -> None:
    raw = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data" : {"k": ["}]\\"", 1e3] } }'
    ev = one([(b"content-type", b"application/cloudevents+json; charset=UTF-8")], raw)
    assert ev.data == b'{"k": ["}]\\"", 1e3] }' and ev.data_is_json
    assert orjson.loads(ev.to_structured())["data"] == {"k": ['}]"', 1000.0]}
    assert one(STRUCT, ev.to_structured()).data == ev.data


def test_structured_last_duplicate_data_wins_like_orjson() -> None:
    raw = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"d\\u0061ta":[2]}'
    assert one(STRUCT, raw).data == b"[2]"


def test_structured_text_and_base64_data() -> None:
    ev = one(STRUCT, structured(datacontenttype="text/xml", data='<much wow="xml"/>'))
    assert ev.data == b'<much wow="xml"/>' and not ev.data_is_json
    assert orjson.loads(ev.to_structured())["data"] == '<much wow="xml"/>'
    headers, body = ev.to_binary()
    assert body == b'<much wow="xml"/>' and (b"content-type", b"text/xml") in headers

    blob = b"\x00\xff\x10binary"
    ev = one(
        STRUCT,
        structured(datacontenttype="application/octet-stream", data_base64=base64.b64encode(blob).decode()),
    )
    assert ev.data == blob and not ev.data_is_json
    assert orjson.loads(ev.to_structured())["data_base64"] == base64.b64encode(blob).decode()
    assert ev.to_binary()[1] == blob


def test_structured_json_string_data_and_null_members() -> None:
    ev = one(STRUCT, structured(data="hello", subject=None, unsetext=None))
    assert ev.data == b'"hello"' and ev.data_is_json
    assert "subject" not in ev.attributes and "unsetext" not in ev.attributes
    assert one(STRUCT, structured(data=None)).data is None


def test_batch_mode() -> None:
    body = encode_batch(
        [
            Event(dict(BASE), b'{"a":1}', True),
            Event({**BASE, "id": "2", "datacontenttype": "application/octet-stream"}, b"\x01", False),
        ]
    )
    events = decode_http(BATCH, body, max_event_bytes=LIMIT)
    assert [e.id for e in events] == ["e-1", "2"]
    assert events[0].data == b'{"a":1}' and events[1].data == b"\x01"
    assert decode_http(BATCH, b" [ ] ", max_event_bytes=LIMIT) == []


def test_batch_keeps_raw_data_per_event() -> None:
    body = b'[ {"specversion":"1.0","id":"1","source":"/s","type":"t","data": [ 1 ,2 ]} ,\n'
    body += b'{"specversion":"1.0","id":"2","source":"/s","type":"t","data":{"x" :"]"}} ]'
    assert [e.data for e in decode_http(BATCH, body, max_event_bytes=LIMIT)] == [b"[ 1 ,2 ]", b'{"x" :"]"}']


def test_batch_all_or_nothing_names_the_index() -> None:
    good = orjson.loads(structured(data=1))
    bad = {k: v for k, v in good.items() if k != "source"}
    with pytest.raises(InvalidEvent) as exc:
        decode_http(BATCH, orjson.dumps([good, good, bad, good]), max_event_bytes=LIMIT)
    assert exc.value.index == 2 and exc.value.status == 400
    assert str(exc.value) == 'event 2: missing required attribute "source"'
    with pytest.raises(InvalidEvent, match=r"^event 1: an event must be a JSON object, not integer"):
        decode_http(BATCH, orjson.dumps([good, 5]), max_event_bytes=LIMIT)
    with pytest.raises(InvalidEvent, match="a batch must be a JSON array, not object"):
        decode_http(BATCH, orjson.dumps(good), max_event_bytes=LIMIT)


@pytest.mark.parametrize(
    "ctype",
    [
        "application/cloudevents+xml",
        "application/cloudevents+avro",
        "application/cloudevents",
        "application/cloudevents-batch+xml",
        "Application/CloudEvents+Protobuf; charset=utf-8",
    ],
)
def test_unsupported_formats_are_415(ctype: str) -> None:
    with pytest.raises(UnsupportedFormat) as exc:
        decode_http([*binary_headers(), (b"content-type", ctype.encode())], b"<x/>", max_event_bytes=LIMIT)
    assert exc.value.status == 415


def test_not_a_cloudevent() -> None:
    with pytest.raises(NotACloudEvent, match='Content-Type is "text/plain"') as exc:
        decode_http([(b"content-type", b"text/plain"), (b"ce-id", b"1")], b"hi", max_event_bytes=LIMIT)
    assert exc.value.status == 400
    with pytest.raises(NotACloudEvent, match="there is no Content-Type"):
        decode_http([], b"", max_event_bytes=LIMIT)


def test_content_type_decides_even_with_ce_headers() -> None:
    ev = one([*binary_headers(id="from-header"), *STRUCT], structured(id="from-body"))
    assert ev.id == "from-body"


# -- percent-encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("Euro € 😀", b"Euro%20%E2%82%AC%20%F0%9F%98%80"),
        ("100%", b"100%25"),
        ('say "hi"', b"say%20%22hi%22"),
        ("a b", b"a%20b"),
        ("plain-ASCII_~!#$&'()*+,/:;<=>?@[\\]^`{|}", b"plain-ASCII_~!#$&'()*+,/:;<=>?@[\\]^`{|}"),
        ("tab\there", b"tab%09here"),
        ("é", b"%C3%A9"),
    ],
)
def test_percent_encoding_round_trip(value: str, encoded: bytes) -> None:
    assert percent_encode(value) == encoded
    assert percent_decode(encoded, "ce-x") == value
    ev = Event(dict(BASE)).with_extensions(ext=value.replace("\t", " "))
    headers, body = ev.to_binary()
    assert all(0x21 <= b <= 0x7E for _, v in headers for b in v)
    assert one(headers, body).attributes["ext"] == value.replace("\t", " ")


def test_percent_decoding_accepts_lower_case_unneeded_escapes_and_quoted_strings() -> None:
    assert percent_decode(b"%e2%82%ac%41", "ce-x") == "€A"
    assert percent_decode(b'"a \\"b\\" c%25"', "ce-x") == 'a "b" c%'
    assert percent_decode(b"  padded  ", "ce-x") == "padded"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"%C0%A0", 'header "ce-x" is not valid UTF-8 after percent-decoding'),
        (b"%ED%A0%80", 'header "ce-x" is not valid UTF-8 after percent-decoding'),
        (b"50%", 'header "ce-x" has an invalid percent-encoding "%"'),
        (b"%zz", 'header "ce-x" has an invalid percent-encoding "%zz"'),
    ],
)
def test_percent_decoding_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        one([*binary_headers(), (b"ce-x", raw)], b"")
    assert str(exc.value) == message


def test_subject_with_unicode_quotes_and_spaces_through_binary() -> None:
    headers = [*binary_headers(), (b"ce-subject", b"%22caf%C3%A9%22%20100%25")]
    ev = one(headers, b"")
    assert ev.attributes["subject"] == '"café" 100%'
    assert (b"ce-subject", b"%22caf%C3%A9%22%20100%25") in ev.to_binary()[0]


# -- data across modes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dct", "data", "is_json"),
    [
        (None, b'{"a": [1, 2, {"b": null}], "u": "\\u00e9"}', True),
        ("application/json", b"[1,2,3]", True),
        ("application/vnd.example+json", b'"s"', True),
        ("text/plain; charset=utf-8", "héllo wörld\n".encode(), False),
        ("application/octet-stream", bytes(range(256)), False),
        ("image/png", b"\x89PNG\r\n\x1a\n", False),
        ("text/plain", b"\xff\xfe not utf-8", False),
    ],
)
def test_round_trip_every_mode(dct: str | None, data: bytes, is_json: bool) -> None:
    attrs = {**BASE, "time": "2024-05-01T10:00:00.123Z", "ext": 5, "flag": True}
    if dct is not None:
        attrs["datacontenttype"] = dct
    ev = Event(attrs, data, is_json)
    via_structured = one(STRUCT, ev.to_structured())
    via_batch = decode_http(BATCH, encode_batch([ev, ev]), max_event_bytes=LIMIT)
    headers, body = ev.to_binary()
    via_binary = one(headers, body)
    via_log = Event.from_log(ev.to_log())
    assert via_structured == ev and via_batch == [ev, ev] and via_log == ev
    assert via_binary.data == data and via_binary.data_is_json == is_json
    assert via_binary.attributes["ext"] == "5" and via_binary.attributes["flag"] == "true"
    if is_json:  # JSON-equal across modes, and JSON data is a JSON value in structured form
        doc = orjson.loads(ev.to_structured())
        assert doc["data"] == orjson.loads(data) == orjson.loads(via_binary.to_structured())["data"]
    # binary → structured → binary keeps the body bytes
    assert one(*via_binary.to_binary()).data == data
    assert one(STRUCT, via_binary.to_structured()).data == data


def test_binary_non_json_data_is_base64_in_structured_form() -> None:
    body = b"\x00\x01\x02"
    ev = one([*binary_headers(), (b"content-type", b"application/octet-stream")], body)
    doc = orjson.loads(ev.to_structured())
    assert doc["data_base64"] == "AAEC" and "data" not in doc
    no_ctype = one(binary_headers(), b"raw")
    assert orjson.loads(no_ctype.to_structured())["data_base64"] == "cmF3"


def test_structured_json_data_to_binary_gets_json_content_type() -> None:
    ev = one(STRUCT, structured(data={"x": 1}))
    headers, body = ev.to_binary()
    assert (b"content-type", b"application/json") in headers and orjson.loads(body) == {"x": 1}


def test_events_of_64_kib_and_more() -> None:
    big = {"items": ["x" * 1000 + str(i) for i in range(200)]}
    data = orjson.dumps(big, option=orjson.OPT_INDENT_2)
    assert len(data) > 200_000
    ev = one(STRUCT, structured(data=orjson.Fragment(data)))
    assert ev.data == data
    headers, body = ev.to_binary()
    assert one(headers, body).data == data
    blob = bytes(range(256)) * 512  # 128 KiB
    ev = one([*binary_headers(), (b"content-type", b"application/octet-stream")], blob)
    assert one(STRUCT, ev.to_structured()).data == blob
    assert decode_http(BATCH, encode_batch([ev] * 3), max_event_bytes=LIMIT)[2].data == blob


def test_too_large_is_413() -> None:
    with pytest.raises(EventTooLarge) as exc:
        one(binary_headers(), b"x" * 101, limit=100)
    assert exc.value.status == 413 and "101 bytes, over the limit of 100" in str(exc.value)
    with pytest.raises(EventTooLarge):  # headers count in binary mode
        one(binary_headers(subject="s" * 200), b"x", limit=150)
    body = structured(data="x" * 100)
    with pytest.raises(EventTooLarge):
        one(STRUCT, body, limit=len(body) - 1)
    assert one(STRUCT, body, limit=len(body)).id == "e-1"
    small = Event(dict(BASE), b"1", True)
    large = Event(dict(BASE), b'"' + b"y" * 500 + b'"', True)
    with pytest.raises(EventTooLarge) as exc:
        decode_http(BATCH, encode_batch([small, large]), max_event_bytes=300)
    assert exc.value.index == 1 and str(exc.value).startswith("event 1: ")


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, 'missing required attribute "id"'),
        ({"source": None}, 'missing required attribute "source"'),
        ({"specversion": None}, 'missing required attribute "specversion"'),
        ({"type": None}, 'missing required attribute "type"'),
        ({"specversion": "2.0"}, 'specversion "2.0" is not supported; use "1.0" (or "0.3")'),
        ({"specversion": 1.0}, 'attribute "specversion" must be a string, not number'),
        ({"id": 7}, 'attribute "id" must be a string, not integer'),
        ({"id": ""}, 'attribute "id" must not be empty'),
        ({"source": ""}, 'attribute "source" must not be empty'),
        ({"type": ""}, 'attribute "type" must not be empty'),
        ({"subject": ""}, 'attribute "subject" must not be empty'),
        ({"subject": ["a"]}, 'attribute "subject" must be a string, not array'),
        ({"source": "a b"}, 'source "a b" is not a URI-reference'),
        ({"source": "/x%zz"}, 'source "/x%zz" is not a URI-reference'),
        ({"time": "yesterday"}, 'time "yesterday" is not an RFC 3339 timestamp'),
        ({"time": "2024-02-30T00:00:00Z"}, 'time "2024-02-30T00:00:00Z" is not an RFC 3339 timestamp'),
        ({"time": "2024-01-01 00:00:00Z"}, 'time "2024-01-01 00:00:00Z" is not an RFC 3339 timestamp'),
        ({"time": "2024-01-01T00:00:00"}, 'time "2024-01-01T00:00:00" is not an RFC 3339 timestamp'),
        ({"dataschema": "/relative"}, 'dataschema "/relative" is not an absolute URI'),
        ({"datacontenttype": "json"}, 'datacontenttype "json" is not an RFC 2046 media type'),
        ({"Foo_Bar": "x"}, 'attribute name "Foo_Bar" must be 1-20 lowercase letters or digits'),
        ({"a" * 21: "x"}, f'attribute name "{"a" * 21}" must be 1-20 lowercase letters or digits'),
        ({"ext": 1.5}, 'extension "ext" must be a string, boolean or integer, not number'),
        ({"ext": {"a": 1}}, 'extension "ext" must be a string, boolean or integer, not object'),
        ({"ext": 2**31}, 'extension "ext" integer 2147483648 is outside the 32-bit signed range'),
        ({"subject": "a\nb"}, 'attribute "subject" contains a control character (U+000A)'),
        ({"data": 1, "data_base64": "AA=="}, '"data" and "data_base64" must not both be present'),
        ({"data_base64": "!!"}, '"data_base64" is not valid base64'),
        ({"data_base64": 5}, '"data_base64" must be a string, not integer'),
    ],
)
def test_structured_validation_errors(change: dict[str, Any], message: str) -> None:
    doc = {**BASE, **change}
    for k, v in change.items():
        if v is None:
            del doc[k]
    with pytest.raises(InvalidEvent) as exc:
        one(STRUCT, orjson.dumps(doc))
    assert str(exc.value).startswith(message) and exc.value.status == 400 and exc.value.index is None


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01t10:00:00.123456789+05:30",
        "2016-12-31T23:59:60Z",
        "1985-04-12T23:20:50.52z",
    ],
)
def test_valid_times(value: str) -> None:
    assert one(STRUCT, structured(time=value)).attributes["time"] == value


def test_valid_optional_attributes_and_extension_types() -> None:
    ev = one(
        STRUCT,
        structured(
            dataschema="https://example.com/schema.json",
            subject="über",
            source="urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            ext1="https://x",
            ext2=True,
            ext3=-(2**31),
            ext4="2024-01-01T00:00:00Z",
            ext5="AAE=",
        ),
    )
    assert ev.attributes["ext2"] is True and ev.attributes["ext3"] == -(2**31)


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ([(b"ce-id", b"1"), (b"ce-source", b"/s"), (b"ce-type", b"t")], b"", None),
        (binary_headers(id=""), b"", 'attribute "id" must not be empty'),
        (
            [*binary_headers(), (b"ce-Foo_Bar", b"x")],
            b"",
            'attribute name "foo_bar" must be 1-20 lowercase letters or digits',
        ),
        ([*binary_headers(), (b"ce-data", b"x")], b"", 'attribute name "data" is reserved'),
        ([*binary_headers(), (b"ce-id", b"2")], b"", 'header "ce-id" appears more than once'),
        (binary_headers(specversion="0.2"), b"", 'specversion "0.2" is not supported'),
        (binary_headers(time="yesterday"), b"", 'time "yesterday" is not an RFC 3339 timestamp'),
        (
            [*binary_headers(datacontenttype="text/plain"), (b"content-type", b"text/plain")],
            b"x",
            "binary mode carries datacontenttype in Content-Type",
        ),
    ],
)
def test_binary_validation_errors(
    headers: list[tuple[bytes, bytes]], body: bytes, message: str | None
) -> None:
    if message is None:  # no ce-specversion: not even binary mode
        with pytest.raises(NotACloudEvent):
            decode_http(headers, body, max_event_bytes=LIMIT)
        return
    with pytest.raises(InvalidEvent) as exc:
        one(headers, body)
    assert str(exc.value).startswith(message)


def test_ce_datacontenttype_without_content_type_is_accepted() -> None:
    ev = one(binary_headers(datacontenttype="application/json"), b"[1]")
    assert ev.data_is_json and ev.datacontenttype == "application/json"


def test_structured_body_not_json_or_not_object() -> None:
    with pytest.raises(InvalidEvent, match=r"^body is not valid JSON"):
        one(STRUCT, b"{nope")
    with pytest.raises(InvalidEvent, match=r"^a structured event must be a JSON object, not array"):
        one(STRUCT, b"[]")


# -- Event API --------------------------------------------------------------------------------


def test_with_extensions() -> None:
    ev = Event(dict(BASE), b"{}", True)
    out = ev.with_extensions(knativearrivaltime="2024-01-01T00:00:00Z", knativebrokerttl=255)
    assert out.attributes["knativebrokerttl"] == 255 and "knativebrokerttl" not in ev.attributes
    assert out.with_extensions(knativebrokerttl=None).attributes == {
        **BASE,
        "knativearrivaltime": out.get("knativearrivaltime"),
    }
    with pytest.raises(InvalidEvent, match="must be 1-20 lowercase"):
        ev.with_extensions(BadName=1)
    with pytest.raises(InvalidEvent, match="core attribute"):
        ev.with_extensions(subject="x")
    with pytest.raises(InvalidEvent, match="32-bit"):
        ev.with_extensions(big=2**40)


def test_event_is_frozen_and_json_accessor() -> None:
    ev = Event(dict(BASE), b'{"a":1}', True)
    with pytest.raises(AttributeError):
        ev.data = None  # type: ignore[misc]
    assert ev.json() == {"a": 1}
    with pytest.raises(ValueError):
        Event(dict(BASE), b"\x00").json()


def test_log_encoding_is_lossless() -> None:
    cases = [
        Event({**BASE, "n": 3, "b": False}, b' {"raw" :  true} ', True),
        Event({**BASE, "datacontenttype": "text/plain"}, "ünïcode".encode(), False),
        Event({**BASE}, b"\x00\x01", False),
        Event({**BASE}, None, False),
    ]
    for ev in cases:
        assert Event.from_log(ev.to_log()) == ev


# -- cross-check against the cloudevents package ---------------------------------------------


ce_http = pytest.importorskip("cloudevents.core.bindings.http")
ce_v1 = pytest.importorskip("cloudevents.core.v1.event")


def _sdk_event(attrs: dict[str, Any], data: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ce_v1.CloudEvent(attributes=dict(attrs), data=data)


@pytest.mark.parametrize(
    ("attrs", "data", "expected"),
    [
        (
            {"datacontenttype": "application/json"},
            {"msg": "héllo", "n": [1, 2]},
            {"msg": "héllo", "n": [1, 2]},
        ),
        ({"datacontenttype": "application/octet-stream"}, b"\x00\x01\xff", b"\x00\x01\xff"),
        ({"subject": 'a "b" 100% é 😀', "myext": "x y"}, {"k": 1}, {"k": 1}),
    ],
)
def test_decodes_what_the_sdk_encodes(attrs: dict[str, Any], data: Any, expected: Any) -> None:
    attrs = {"type": "com.example.sdk", "source": "/sdk", **attrs}
    event = _sdk_event(attrs, data)
    for msg in (ce_http.to_binary_event(event), ce_http.to_structured_event(event)):
        ours = one(msg.headers, msg.body)
        assert ours.id == event.get_id() and ours.type == "com.example.sdk"
        for name in ("subject", "myext"):
            if name in attrs:
                assert ours.attributes[name] == attrs[name]
        assert ours.json() == expected if isinstance(expected, dict) else ours.data == expected


def test_sdk_decodes_what_we_encode() -> None:
    ev = Event(
        {
            **BASE,
            "time": "2024-05-01T10:00:00Z",
            "subject": 'a "b" 100% é',
            "datacontenttype": "application/json",
        },
        b'{"x": [1, 2]}',
        True,
    )
    headers, body = ev.to_binary()
    sdk_bin = ce_http.from_binary_event(
        ce_http.HTTPMessage({k.decode(): v.decode() for k, v in headers}, body)
    )
    sdk_struct = ce_http.from_structured_event(
        ce_http.HTTPMessage({"content-type": CONTENT_TYPE_STRUCTURED}, ev.to_structured())
    )
    for sdk in (sdk_bin, sdk_struct):
        assert sdk.get_subject() == 'a "b" 100% é' and sdk.get_id() == "e-1"
        assert sdk.get_data() == {"x": [1, 2]}
    blob = Event({**BASE, "datacontenttype": "application/octet-stream"}, b"\x00\xff", False)
    sdk = ce_http.from_structured_event(
        ce_http.HTTPMessage({"content-type": CONTENT_TYPE_STRUCTURED}, blob.to_structured())
    )
    assert sdk.get_data() == b"\x00\xff"


def test_binary_without_content_type_json_is_sniffed_and_log_keeps_whitespace() -> None:
    body = b'{"a": 1}\n'
    ev = one(binary_headers(), body)
    assert ev.data_is_json and "datacontenttype" not in ev.attributes
    assert orjson.loads(ev.to_structured())["data"] == {"a": 1}
    logged = Event.from_log(ev.to_log())
    assert logged == ev and logged.to_binary()[1] == body  # binary in, binary out: byte for byte


# -- CloudEvents 0.3 (eventing conformance: "MUST conform to CloudEvents 0.3 or 1.0") ----------

BASE03: dict[str, Any] = {**BASE, "specversion": "0.3"}


def structured03(**members: Any) -> bytes:
    return orjson.dumps({**BASE03, **members})


def test_v03_structured_json_data_stays_v03_in_every_form() -> None:
    ev = one(STRUCT, structured03(schemaurl="/schemas/order", data={"n": 1}))
    assert ev.attributes == {**BASE03, "schemaurl": "/schemas/order"} and ev.json() == {"n": 1}
    assert orjson.loads(ev.to_structured()) == {**BASE03, "schemaurl": "/schemas/order", "data": {"n": 1}}
    headers, body = ev.to_binary()
    assert (b"ce-specversion", b"0.3") in headers and (b"ce-schemaurl", b"/schemas/order") in headers
    assert body == b'{"n":1}' and one(headers, body) == Event(
        {**ev.attributes, "datacontenttype": "application/json"}, b'{"n":1}', True
    )
    assert Event.from_log(ev.to_log()) == ev


def test_v03_structured_base64_data_uses_datacontentencoding() -> None:
    blob = b"\x00\xffbin"
    raw = structured03(
        datacontenttype="application/octet-stream",
        datacontentencoding="Base64",
        data=base64.b64encode(blob).decode(),
    )
    ev = one(STRUCT, raw)
    assert ev.data == blob and not ev.data_is_json
    assert ev.attributes["datacontentencoding"] == "Base64"
    doc = orjson.loads(ev.to_structured())
    assert doc["data"] == base64.b64encode(blob).decode() and "data_base64" not in doc
    assert doc["datacontentencoding"] == "Base64"
    headers, body = ev.to_binary()  # binary mode: the body is the data itself
    assert body == blob and (b"ce-datacontentencoding", b"Base64") in headers
    assert one(headers, body) == ev
    assert Event.from_log(ev.to_log()) == ev
    assert one(STRUCT, ev.to_structured()) == ev


def test_v03_binary_opaque_data_gets_datacontentencoding_in_the_structured_form() -> None:
    blob = b"\x01\x02\xfe"
    ev = one([*binary_headers(specversion="0.3"), (b"content-type", b"application/octet-stream")], blob)
    assert ev.attributes["specversion"] == "0.3" and ev.data == blob
    doc = orjson.loads(ev.to_structured())
    assert doc["datacontentencoding"] == "base64" and base64.b64decode(doc["data"]) == blob
    assert one(STRUCT, ev.to_structured()).data == blob
    assert Event.from_log(ev.to_log()) == ev  # the log adds nothing
    text = one([*binary_headers(specversion="0.3"), (b"content-type", b"text/plain")], b"hi")
    assert orjson.loads(text.to_structured())["data"] == "hi"  # text stays text


def test_v03_batch_mixed_with_v1() -> None:
    body = b"[" + structured03(id="a", data="x") + b"," + structured(id="b") + b"]"
    events = decode_http(BATCH, body, max_event_bytes=LIMIT)
    assert [(e.id, e.attributes["specversion"]) for e in events] == [("a", "0.3"), ("b", "1.0")]
    assert events[0].json() == "x"
    assert decode_http(BATCH, encode_batch(events), max_event_bytes=LIMIT) == events


def test_v03_names_are_its_own() -> None:
    ev = one(STRUCT, structured03(dataschema="not checked: an extension in 0.3"))
    assert ev.attributes["dataschema"] == "not checked: an extension in 0.3"
    v1 = one(STRUCT, structured(schemaurl="/an/extension/in/1.0"))
    assert v1.attributes["schemaurl"] == "/an/extension/in/1.0"
    with pytest.raises(InvalidEvent, match="core attribute"):
        Event(dict(BASE03)).with_extensions(schemaurl="/x")
    assert Event(dict(BASE03)).with_extensions(dataschema="x").attributes["dataschema"] == "x"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"schemaurl": "a b"}, 'schemaurl "a b" is not a URI-reference'),
        ({"schemaurl": ""}, 'attribute "schemaurl" must not be empty'),
        (
            {"datacontentencoding": "7bit"},
            'datacontentencoding "7bit" is not supported; the only encoding of CloudEvents 0.3'
            ' data is "base64"',
        ),
        ({"data_base64": "AA=="}, '"data_base64" is not a CloudEvents 0.3 member'),
        (
            {"datacontentencoding": "base64", "data": {"a": 1}},
            '"data" must be a base64 string when datacontentencoding is "base64", not object',
        ),
        ({"datacontentencoding": "base64", "data": "!!"}, '"data" is not valid base64'),
        ({"time": "noon"}, 'time "noon" is not an RFC 3339 timestamp'),
        ({"id": None}, 'missing required attribute "id"'),
    ],
)
def test_v03_validation_errors(members: dict[str, Any], message: str) -> None:
    doc = {**BASE03, **members}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(InvalidEvent) as exc:
        one(STRUCT, orjson.dumps(doc))
    assert str(exc.value).startswith(message) and exc.value.status == 400
    with pytest.raises(InvalidEvent) as exc:  # and in a batch, with its index
        decode_http(BATCH, b"[" + structured03() + b"," + orjson.dumps(doc) + b"]", max_event_bytes=LIMIT)
    assert str(exc.value) == f"event 1: {exc.value.reason}" and exc.value.reason.startswith(message)


def test_v03_binary_validation_errors() -> None:
    with pytest.raises(InvalidEvent, match=r'^schemaurl "a%20b c" is not a URI-reference'):
        one([*binary_headers(specversion="0.3"), (b"ce-schemaurl", b"a%2520b c")], b"")
    with pytest.raises(InvalidEvent, match=r'^datacontentencoding "gzip" is not supported'):
        one([*binary_headers(specversion="0.3"), (b"ce-datacontentencoding", b"gzip")], b"")


ce_v03 = pytest.importorskip("cloudevents.core.v03.event")


def test_v03_decodes_what_the_sdk_encodes_and_the_sdk_decodes_what_we_encode() -> None:
    attrs = {"type": "com.example.v03", "source": "/sdk", "schemaurl": "https://x/s", "subject": "é 100%"}
    for ctype, data, check in (
        ("application/json", {"k": [1, 2]}, lambda e: e.json() == {"k": [1, 2]}),
        # not UTF-8, so that the SDK reads a binary body back as bytes, not str
        ("application/octet-stream", b"\x00\xff", lambda e: e.data == b"\x00\xff"),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sdk_event = ce_v03.CloudEvent(attributes={**attrs, "datacontenttype": ctype}, data=data)
        for msg in (ce_http.to_binary_event(sdk_event), ce_http.to_structured_event(sdk_event)):
            ours = one(msg.headers, msg.body)
            assert ours.attributes["specversion"] == "0.3" and ours.attributes["schemaurl"] == "https://x/s"
            assert ours.attributes["subject"] == "é 100%" and check(ours)
            headers, body = ours.to_binary()
            as_dict = {k.decode(): v.decode() for k, v in headers}
            for back in (
                ce_http.from_binary_event(ce_http.HTTPMessage(as_dict, body)),
                ce_http.from_structured_event(
                    ce_http.HTTPMessage({"content-type": CONTENT_TYPE_STRUCTURED}, ours.to_structured())
                ),
            ):
                assert isinstance(back, ce_v03.CloudEvent)
                assert back.get_schemaurl() == "https://x/s" and back.get_data() == data
