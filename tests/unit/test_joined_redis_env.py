"""`loadtests.flint_process.redis_env_of`: the Redis settings `flint up` was given, as the
`FLINT_REDIS_*` variables a joining gateway or dispatcher gets (never a password)."""

from __future__ import annotations

from pathlib import Path

from loadtests.flint_process import redis_env_of


def test_without_redis_nothing_is_passed_on() -> None:
    assert redis_env_of(["--workers", "2"], {}) == {}


def test_the_flags_win_over_the_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    env = {"FLINT_REDIS_URL": "redis://elsewhere:6379/0", "FLINT_REDIS_MIN_REPLICAS": "1"}
    got = redis_env_of(["--redis", "redis://127.0.0.1:7000/2", f"--redis-password-file={pw}"], env)
    assert got == {"FLINT_REDIS_URL": "redis://127.0.0.1:7000/2",
                   "FLINT_REDIS_PASSWORD_FILE": str(pw.resolve()), "FLINT_REDIS_MIN_REPLICAS": "1"}


def test_the_environment_alone_is_passed_on() -> None:
    env = {"FLINT_REDIS_URL": "rediss://host:6380/0", "FLINT_REDIS_PASSWORD_FILE": "/secret/pw"}
    assert redis_env_of([], env) == {"FLINT_REDIS_URL": "rediss://host:6380/0",
                                     "FLINT_REDIS_PASSWORD_FILE": "/secret/pw"}
