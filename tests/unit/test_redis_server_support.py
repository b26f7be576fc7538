"""The redis-server fixture's rule: skip without redis-server, but fail in CI."""

from __future__ import annotations

import pytest
from support import redis_server


def test_missing_redis_server_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        redis_server.redis_server_binary()


def test_missing_redis_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="in CI it must be"):
        redis_server.redis_server_binary()


def test_an_installed_redis_server_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/opt/bin/{name}")
    monkeypatch.setenv("CI", "true")
    assert redis_server.redis_server_binary() == "/opt/bin/redis-server"
