"""The owner's token: it never prints, matches only itself, lives in a 0600 file made once."""

from __future__ import annotations

import pickle
import stat
from pathlib import Path

import pytest

from flint_common.secret import MASK, Secret, load_or_create_token, read_token


def test_a_secret_never_prints() -> None:
    s = Secret("hunter2-very-secret")
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr({"token": s}), repr([s])):
        assert "hunter2" not in text
        assert MASK in text
    assert s.reveal() == "hunter2-very-secret"


def test_a_secret_matches_only_itself() -> None:
    s = Secret("abc123")
    assert s.matches("abc123") and s.matches(b"abc123")
    assert not s.matches("abc124") and not s.matches("abc12") and not s.matches("")
    assert not s.matches(None)
    assert s == Secret("abc123") and s != Secret("abc124")


def test_a_secret_is_neither_empty_nor_pickled() -> None:
    with pytest.raises(ValueError):
        Secret("")
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


def test_a_dataclass_holding_a_secret_prints_masked() -> None:
    from controller.eventing.dispatcher import DispatcherSettings

    settings = DispatcherSettings(token=Secret("s3cr3t-value"))
    assert "s3cr3t-value" not in repr(settings)
    assert "token=***" in repr(settings)


def test_token_file_is_created_once_0600_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "token"
    first = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first.reveal()) >= 40
    assert load_or_create_token(path) == first  # kept across restarts
    assert read_token(path) == first


def test_an_empty_token_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(path)
