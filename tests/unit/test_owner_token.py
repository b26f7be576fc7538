"""`python -m flint_common.owner_token`: the owner's token put into a state dir before a component
starts, from a mounted Secret when there is one, else kept or made."""

from __future__ import annotations

import stat
from pathlib import Path

from flint_common.owner_token import install, main, token_path
from flint_common.secret import read_token


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_from_a_mounted_secret_replaces_the_state_dirs_token(tmp_path: Path) -> None:
    state, source = tmp_path / "state", tmp_path / "secret-token"
    source.write_text("shared-token\n")
    install(state, None)
    assert read_token(token_path(state)).reveal() != "shared-token"
    assert "from" in install(state, source)
    assert read_token(token_path(state)).reveal() == "shared-token"
    assert (_mode(state), _mode(token_path(state).parent), _mode(token_path(state))) == (0o700, 0o700, 0o600)


def test_without_a_secret_the_token_is_made_once_then_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert install(state, tmp_path / "absent") == "a new owner's token"
    first = read_token(token_path(state)).reveal()
    assert install(state, tmp_path / "absent") == "the owner's token kept in the state dir"
    assert read_token(token_path(state)).reveal() == first


def test_an_empty_secret_is_refused_naming_it_and_nothing_printed_holds_the_token(
        tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert main([str(tmp_path / "state"), "--from", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    source = tmp_path / "token"
    source.write_text("not-for-logs\n")
    assert main([str(tmp_path / "state2"), "--from", str(source)]) == 0
    assert "not-for-logs" not in capsys.readouterr().out
