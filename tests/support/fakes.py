"""A stand-in for an asyncio transport, for driving the gateway's protocols without sockets."""

from __future__ import annotations

from collections.abc import Iterable


class FakeTransport:
    """Records what is written; `sock` is what `get_extra_info("socket")` returns."""

    def __init__(self, sock: object = None, peername: tuple[str, int] = ("10.0.0.7", 40000)) -> None:
        self.out = bytearray()
        self.closed = False
        self.paused = False
        self.sock = sock
        self.peername = peername

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return self.peername
        if name == "socket":
            return self.sock if self.sock is not None else default
        return default

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.out += chunk

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def take(self) -> bytes:
        """What was written since the last `take`."""
        data = bytes(self.out)
        self.out.clear()
        return data
