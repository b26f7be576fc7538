"""The owner's token: a value that never prints, compared in constant time, kept in a 0600 file.

A `Secret` is what a settings field or a client holds instead of a bare `str`: its `repr` and
`str` are `***`, so a logged settings object, an exception message or a traceback's locals never
show the credential. Only `reveal()` gives the value, at the one place it goes on the wire.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from flint_common.private import write_private

TOKEN_BYTES = 32
"""Random bytes in a new token (256 bits; 43 URL-safe characters)."""
MASK = "***"


class Secret:
    """A credential that prints as `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("a secret must not be empty")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str | bytes | None) -> bool:
        """Whether `candidate` is this secret, in time independent of where they differ."""
        if candidate is None:
            return False
        # Header values may hold any byte (aiohttp decodes them with surrogateescape).
        given = candidate.encode("utf-8", "surrogateescape") if isinstance(candidate, str) else candidate
        return hmac.compare_digest(given, self._value.encode())

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            other._value.encode(), self._value.encode()
        )

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not pickled")


def new_token() -> Secret:
    return Secret(secrets.token_urlsafe(TOKEN_BYTES))


def read_token(path: Path) -> Secret:
    """The token kept in `path` (surrounding whitespace ignored). Blocking: file I/O."""
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path} is empty: it should hold the owner's token")
    return Secret(text)


def load_or_create_token(path: Path) -> Secret:
    """The token in `path`, created (0600, atomically) the first time. Blocking: file I/O."""
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    token = new_token()
    write_private(path, token.reveal().encode() + b"\n", exclusive=True)
    return read_token(path)  # another process may have won the race: its token is the one
