"""Redis settings: the URL never carries the password, the password file is private, the
password prints as *** everywhere; the durability decision from INFO persistence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flint_common import redis_config
from flint_common.redis_config import RedisConfigError, RedisSettings, masked_url, resolve
from flint_common.redis_conn import parse_durability
from flint_common.secret import Secret

PASSWORD = "hunter2-unit"


def _password_file(tmp_path: Path, mode: int = 0o600, text: str = PASSWORD + "\n") -> Path:
    path = tmp_path / "redis-password"
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@127.0.0.1:6379/0",
    f"rediss://flint:{PASSWORD}@redis.example:6380",
    f"redis://127.0.0.1:6379?password={PASSWORD}",
])
def test_a_url_with_a_password_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(RedisConfigError) as refused:
        RedisSettings(url=url)
    assert PASSWORD not in str(refused.value)
    assert "--redis-password-file" in str(refused.value)
    assert "***" in str(refused.value)
    assert PASSWORD not in masked_url(url)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "rediss://flint@redis.example:6380/2", "redis://h",
    "unix:///run/redis.sock?db=1",
])
def test_urls_redis_py_takes_are_taken(url: str) -> None:
    assert RedisSettings(url=url).url == url


def test_another_scheme_is_refused() -> None:
    with pytest.raises(RedisConfigError, match="schemes"):
        RedisSettings(url="http://127.0.0.1:6379")


def test_the_password_comes_from_a_private_file_and_never_prints(tmp_path: Path) -> None:
    path = _password_file(tmp_path)
    settings = resolve(url="rediss://127.0.0.1:6380/4", password_file=path)
    assert settings is not None
    assert settings.password == Secret(PASSWORD)
    assert settings.password is not None and settings.password.reveal() == PASSWORD
    for text in (repr(settings), str(settings), str(settings.env()), repr(settings.env())):
        assert PASSWORD not in text
    assert settings.env() == {redis_config.ENV_URL: "rediss://127.0.0.1:6380/4",
                              redis_config.ENV_PASSWORD_FILE: str(path),
                              redis_config.ENV_MIN_REPLICAS: "0"}
    assert redis_config.from_env(settings.env()) == settings


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604])
def test_a_password_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = _password_file(tmp_path, mode)
    with pytest.raises(RedisConfigError, match="chmod 600") as refused:
        resolve(url="redis://h", password_file=path)
    assert PASSWORD not in str(refused.value)


def test_an_empty_or_missing_password_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RedisConfigError, match="empty"):
        resolve(url="redis://h", password_file=_password_file(tmp_path, text="\n"))
    with pytest.raises(RedisConfigError, match="cannot read"):
        resolve(url="redis://h", password_file=tmp_path / "nope")


def test_a_symlinked_password_file_is_refused(tmp_path: Path) -> None:
    target = _password_file(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(RedisConfigError, match="cannot read"):
        resolve(url="redis://h", password_file=link)


def test_flags_then_environment_then_settings_file(tmp_path: Path) -> None:
    path = _password_file(tmp_path)
    config = {"redis": {"url": "redis://from-file/1", "password-file": path.name, "min-replicas": 2}}
    env = {redis_config.ENV_URL: "redis://from-env/2"}
    from_file = resolve(config=config, base_dir=tmp_path)
    assert from_file == RedisSettings(url="redis://from-file/1", password=Secret(PASSWORD),
                                      password_file=path, min_replicas=2)
    from_env = resolve(env=env, config=config, base_dir=tmp_path)
    assert from_env is not None and from_env.url == "redis://from-env/2"
    from_flag = resolve(url="redis://from-flag/3", env=env, config=config, base_dir=tmp_path)
    assert from_flag is not None and from_flag.url == "redis://from-flag/3"
    assert from_flag.min_replicas == 2


def test_nothing_configured_is_none_and_a_password_file_alone_is_an_error(tmp_path: Path) -> None:
    assert resolve() is None
    assert resolve(env={}, config={"autoscaler": {}}) is None
    with pytest.raises(RedisConfigError, match="without a Redis URL"):
        resolve(password_file=_password_file(tmp_path))


def test_settings_file_mistakes_are_named() -> None:
    with pytest.raises(RedisConfigError, match="unknown settings password"):
        resolve(config={"redis": {"url": "redis://h", "password": PASSWORD}})
    with pytest.raises(RedisConfigError, match="must be a map"):
        resolve(config={"redis": "redis://h"})
    with pytest.raises(RedisConfigError, match="must be a number"):
        resolve(config={"redis": {"url": "redis://h", "min-replicas": "two"}})
    with pytest.raises(RedisConfigError, match="0 or more"):
        resolve(config={"redis": {"url": "redis://h", "min-replicas": -1}})


def test_durability_from_info_persistence() -> None:
    on = parse_durability({"aof_enabled": 1, "rdb_bgsave_in_progress": 0}, "everysec")
    assert on.durable and on.reason is None and on.appendfsync == "everysec"
    assert parse_durability({"aof_enabled": "1"}, "always").durable
    unknown = parse_durability({"aof_enabled": 1}, None)
    assert unknown.durable and "CONFIG GET is not allowed" in unknown.message
    off = parse_durability({"aof_enabled": 0}, "everysec")
    assert not off.durable and off.reason == "AOFDisabled" and "appendonly no" in off.message
    no_fsync = parse_durability({"aof_enabled": 1}, "no")
    assert not no_fsync.durable and no_fsync.reason == "AOFNoFsync"
    with pytest.raises(ValueError, match="aof_enabled"):
        parse_durability({}, None)


def test_flint_up_reads_the_settings_file_and_flags_win(tmp_path: Path) -> None:
    from controller.cli import up

    path = _password_file(tmp_path)
    config = tmp_path / "flint.yaml"
    config.write_text("redis:\n  url: redis://127.0.0.1:6390/5\n  password-file: redis-password\n")
    a = up.parser().parse_args(["--config", str(config)])
    settings = up.redis_settings(a, {})
    assert settings == RedisSettings(url="redis://127.0.0.1:6390/5", password=Secret(PASSWORD),
                                     password_file=path)
    a = up.parser().parse_args(["--config", str(config), "--redis", "rediss://other:6391"])
    flagged = up.redis_settings(a, {redis_config.ENV_URL: "redis://env"})
    assert flagged is not None and flagged.url == "rediss://other:6391"
    assert up.redis_settings(up.parser().parse_args([]), {}) is None


def test_the_children_get_the_resolved_settings_not_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.cli import up

    monkeypatch.setenv(redis_config.ENV_URL, "redis://stale")
    monkeypatch.setenv(redis_config.ENV_PASSWORD_FILE, "/stale")
    monkeypatch.setenv("FLINT_TOKEN", "t")
    assert not {redis_config.ENV_URL, redis_config.ENV_PASSWORD_FILE, "FLINT_TOKEN"} & set(
        up.Supervisor([], Path("/nonexistent")).env)
    env = up.Supervisor([], Path("/nonexistent"), env=RedisSettings(url="redis://h/1").env()).env
    assert env[redis_config.ENV_URL] == "redis://h/1" and redis_config.ENV_PASSWORD_FILE not in env
