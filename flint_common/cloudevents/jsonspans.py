"""Spans of JSON text (pure): where each top-level member's value and each batch element lie.

orjson parses and validates a document but gives no positions. To keep a structured event's
`data` byte for byte, the codec parses with orjson first and then runs this scanner over the same
(already valid) text: strings and brackets are skipped with regular expressions, so the cost is
per token, not per character in Python.
"""

from __future__ import annotations

import re

import orjson

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)

_QUOTE, _LBRACE, _RBRACE, _LBRACKET, _RBRACKET, _COMMA, _COLON = b'"{}[],:'


class ScanError(ValueError):
    """The text is not what the scanner expected (it only reads JSON that orjson accepted)."""


def _ws(buf: bytes, pos: int) -> int:
    m = _WS.match(buf, pos)
    assert m is not None  # `*` always matches
    return m.end()


def value_end(buf: bytes, pos: int) -> int:
    """End offset of the JSON value starting at `pos` (no leading whitespace)."""
    if pos >= len(buf):
        raise ScanError("unexpected end")
    c = buf[pos]
    if c == _QUOTE:
        m = _STRING.match(buf, pos)
        if m is None:
            raise ScanError("bad string")
        return m.end()
    if c in (_LBRACE, _LBRACKET):
        depth = 0
        for m in _TOKEN.finditer(buf, pos):
            t = buf[m.start()]
            if t == _QUOTE:
                continue
            if t in (_LBRACE, _LBRACKET):
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return m.end()
        raise ScanError("unbalanced brackets")
    m = _SCALAR.match(buf, pos)
    if m is None:
        raise ScanError("bad scalar")
    return m.end()


def _key(raw: bytes) -> str:
    if b"\\" in raw:
        key = orjson.loads(raw)
        assert isinstance(key, str)
        return key
    return raw[1:-1].decode("utf-8")


def object_members(buf: bytes, pos: int) -> tuple[dict[str, tuple[int, int]], int]:
    """Spans of an object's member values by key (the last one wins, as in orjson) and the
    object's end offset; `pos` is at the object's `{`."""
    if pos >= len(buf) or buf[pos] != _LBRACE:
        raise ScanError("expected an object")
    spans: dict[str, tuple[int, int]] = {}
    pos = _ws(buf, pos + 1)
    if pos < len(buf) and buf[pos] == _RBRACE:
        return spans, pos + 1
    while True:
        m = _STRING.match(buf, pos)
        if m is None:
            raise ScanError("expected a member name")
        key = _key(m.group())
        pos = _ws(buf, m.end())
        if pos >= len(buf) or buf[pos] != _COLON:
            raise ScanError("expected ':'")
        start = _ws(buf, pos + 1)
        end = value_end(buf, start)
        spans[key] = (start, end)
        pos = _ws(buf, end)
        if pos < len(buf) and buf[pos] == _COMMA:
            pos = _ws(buf, pos + 1)
            continue
        if pos < len(buf) and buf[pos] == _RBRACE:
            return spans, pos + 1
        raise ScanError("expected ',' or '}'")


def array_elements(buf: bytes) -> list[tuple[int, int]]:
    """Spans of the elements of the top-level array in `buf`."""
    pos = _ws(buf, 0)
    if pos >= len(buf) or buf[pos] != _LBRACKET:
        raise ScanError("expected an array")
    spans: list[tuple[int, int]] = []
    pos = _ws(buf, pos + 1)
    if pos < len(buf) and buf[pos] == _RBRACKET:
        return spans
    while True:
        end = value_end(buf, pos)
        spans.append((pos, end))
        pos = _ws(buf, end)
        if pos < len(buf) and buf[pos] == _COMMA:
            pos = _ws(buf, pos + 1)
            continue
        if pos < len(buf) and buf[pos] == _RBRACKET:
            return spans
        raise ScanError("expected ',' or ']'")


def member_span(buf: bytes, start: int, name: str) -> tuple[int, int] | None:
    """Span of member `name` of the object at `start` (leading whitespace allowed)."""
    spans, _ = object_members(buf, _ws(buf, start))
    return spans.get(name)
