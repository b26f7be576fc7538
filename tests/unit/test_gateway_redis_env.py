"""What the gateway's main process hands its workers about Redis: its own resolved settings in
the environment (the password file's path, never the password), nothing inherited beside them."""

from __future__ import annotations

from pathlib import Path

from flint_common import redis_config
from flint_common.redis_config import RedisSettings
from flint_common.secret import Secret
from gateway.config import GatewaySettings
from gateway.server import worker_env


def test_the_workers_get_the_resolved_redis_settings_and_no_password() -> None:
    inherited = {"PATH": "/bin", redis_config.ENV_URL: "redis://elsewhere:1/0",
                 redis_config.ENV_MIN_REPLICAS: "5"}
    redis = RedisSettings(url="redis://127.0.0.1:6390/2", password=Secret("pw-hidden"),
                          password_file=Path("/run/flint/redis.pw"), min_replicas=1)
    env = worker_env(inherited, GatewaySettings(workers=2), redis)
    assert env["PATH"] == "/bin" and env["FLINT_GATEWAY_WORKERS"] == "2"
    assert env[redis_config.ENV_URL] == "redis://127.0.0.1:6390/2"
    assert env[redis_config.ENV_MIN_REPLICAS] == "1"
    assert env[redis_config.ENV_PASSWORD_FILE] == "/run/flint/redis.pw"
    assert not any("pw-hidden" in v for v in env.values())


def test_without_redis_the_workers_get_none() -> None:
    inherited = {redis_config.ENV_URL: "redis://stale:1/0", redis_config.ENV_PASSWORD_FILE: "/x"}
    env = worker_env(inherited, GatewaySettings(), None)
    assert redis_config.ENV_URL not in env and redis_config.ENV_PASSWORD_FILE not in env
