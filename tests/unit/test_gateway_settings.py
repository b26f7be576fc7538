"""Gateway settings reach the workers through FLINT_GATEWAY_* variables and come back equal;
the flags that add listeners and name the token file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewaySettings
from gateway.server import build_parser, settings_env, settings_from_args


def test_settings_survive_the_trip_to_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    s = GatewaySettings(port=9000, listen=(("::1", 9001), ("127.0.0.2", 80)), admin_host="127.0.0.1",
                        token_file=Path("/run/flint/token"), state_dir=Path("/s"), workers=3)
    for key, value in settings_env(s).items():
        monkeypatch.setenv(key, value)
    assert GatewaySettings.from_env() == s


def test_no_token_file_stays_none(monkeypatch: pytest.MonkeyPatch) -> None:
    s = GatewaySettings(state_dir=Path("/s"))
    env = settings_env(s)
    assert "FLINT_GATEWAY_TOKEN_FILE" not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    back = GatewaySettings.from_env()
    assert back.token_file is None and back.credential_path == Path("/s/auth/token")


def test_listen_flags_default_their_port_and_drop_the_loopback_listener() -> None:
    args = build_parser().parse_args(
        ["--port", "8080", "--listen", "0.0.0.0", "--listen", "[::1]:9000",
         "--listen", "127.0.0.1:8080", "--listen", "[::1]:9000"])
    s = settings_from_args(args)
    assert s.listen == (("0.0.0.0", 8080), ("::1", 9000))


def test_a_bad_listen_flag_names_the_problem() -> None:
    args = build_parser().parse_args(["--listen", "example.com:80"])
    with pytest.raises(ValueError, match="not an IP address"):
        settings_from_args(args)


def test_settings_never_hold_the_token() -> None:
    assert "token" not in {f for f in GatewaySettings.__dataclass_fields__ if f != "token_file"}


def test_values_are_read_by_their_field_types() -> None:
    from gateway.config import _coerce

    assert _coerce(int, "7") == 7 and _coerce(float, "0.5") == 0.5
    assert _coerce(Path | None, "/x") == Path("/x")
    assert _coerce(bool, "false") is False and _coerce(bool, "1") is True
    assert _coerce(tuple[tuple[str, int], ...], "[::1]:80") == (("::1", 80),)
    assert _coerce(str, "text") == "text"
