"""Where Flint's Redis is, and its password, kept out of every URL, command line and log.

The Redis Streams eventing backend (issue 12) lets several gateways and dispatchers share
brokers and channels through one Redis. Its settings come from, first to last:

- `flint up --redis URL` (and `--redis-password-file FILE`),
- the environment: `FLINT_REDIS_URL` (and `FLINT_REDIS_PASSWORD_FILE`),
- the settings file (`flint up --config FILE`): a `redis:` map with `url`, `password-file` and
  `min-replicas`.

A URL never carries a password (`redis://:secret@host` is refused, the message masking it):
a command line is visible to every user of the machine in `ps`, and URLs end up in logs. The
password lives in a file of its owner's alone (0600), read into a `Secret`, which prints as
`***`. `rediss://` (TLS), a user name (`redis://user@host`, Redis ACLs), a database number
(`redis://host:6379/2`) and `unix:///path/redis.sock` are taken as redis-py takes them.

`flint up` hands the settings to its controller, gateway and dispatcher in their environment
(`FLINT_REDIS_URL` and the password file's path, never the password), read back with
`from_env`. Pure apart from reading the password file and the settings file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.connection import parse_url

from flint_common.private import is_loose
from flint_common.secret import MASK, Secret

ENV_URL = "FLINT_REDIS_URL"
"""The Redis URL (without a password), for `flint up` and the processes it starts."""
ENV_PASSWORD_FILE = "FLINT_REDIS_PASSWORD_FILE"
"""The path of the 0600 file holding the Redis password (its path, never the password)."""
ENV_MIN_REPLICAS = "FLINT_REDIS_MIN_REPLICAS"
"""`RedisSettings.min_replicas`, as `flint up` passes it on."""
SECTION = "redis"
"""The settings file's section: `url`, `password-file`, `min-replicas`."""
PASSWORD_FLAG = "--redis-password-file"


class RedisConfigError(ValueError):
    """Redis settings that Flint refuses; the message never holds a password."""


@dataclass(frozen=True)
class RedisSettings:
    """How to reach the Redis that backs shared brokers and channels."""

    url: str
    """`redis://[user@]host[:port][/db]`, `rediss://…` (TLS) or `unix:///path?db=N`; never with
    a password (checked: `RedisConfigError`)."""
    password: Secret | None = None
    """From the password file (`--redis-password-file`); prints as `***`."""
    password_file: Path | None = None
    """Where `password` came from: what `flint up` passes on to its processes."""
    min_replicas: int = 0
    """Replicas a write must reach (`WAIT`) before a broker acknowledges it (0: none): the
    gateway's ingress sends `WAIT min_replicas 1000` after each pipeline of XADDs and answers 503
    when fewer replicas acknowledged within that second."""

    def __post_init__(self) -> None:
        check_url(self.url)
        if self.min_replicas < 0:
            raise RedisConfigError(f"redis min-replicas must be 0 or more, not {self.min_replicas}")

    def env(self) -> dict[str, str]:
        """The environment that hands these settings to a child process (no password in it)."""
        env = {ENV_URL: self.url, ENV_MIN_REPLICAS: str(self.min_replicas)}
        if self.password_file is not None:
            env[ENV_PASSWORD_FILE] = str(self.password_file)
        return env


def masked_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***` (for messages about a refused URL)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):  # redis-py takes `?password=` too
        parts = parts._replace(query=urlencode(
            [(k, MASK if k == "password" else v) for k, v in query], safe="*"))
    return urlunsplit(parts)


def check_url(url: str) -> str:
    """`url` if redis-py can connect with it and it carries no password; else `RedisConfigError`."""
    try:
        parsed = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except (ValueError, TypeError) as exc:
        # redis-py's messages name the scheme, not the URL: nothing secret in them.
        raise RedisConfigError(f"invalid Redis URL {masked_url(url)}: {exc}") from None
    if parsed.get("password") or urlsplit(url).password is not None:
        raise RedisConfigError(
            f"the Redis URL {masked_url(url)} carries a password: a command line is visible to "
            f"every user of the machine (ps) and URLs get logged. Put the password in a file "
            f"only you can read (chmod 600) and pass {PASSWORD_FLAG} FILE (settings file: "
            f"`redis: {{password-file: FILE}}`)")
    return url


def read_password_file(path: Path) -> Secret:
    """The password in `path` (surrounding whitespace ignored): a regular file owned by this
    user that nobody else may read (0600 or 0400). Blocking: file I/O."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RedisConfigError(f"cannot read the Redis password file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RedisConfigError(f"the Redis password file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise RedisConfigError(
                f"the Redis password file {path} belongs to another user (uid {st.st_uid})")
        if is_loose(st.st_mode):
            raise RedisConfigError(
                f"the Redis password file {path} is readable by others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): `chmod 600 {path}`")
        text = f.read().decode("utf-8").strip()
    if not text:
        raise RedisConfigError(f"the Redis password file {path} is empty")
    return Secret(text)


def settings_section(config: Mapping[str, object] | None) -> Mapping[str, object]:
    """The settings file's `redis:` map ({} without one)."""
    section = (config or {}).get(SECTION) or {}
    if not isinstance(section, Mapping):
        raise RedisConfigError(f"`{SECTION}` must be a map with url, password-file, min-replicas")
    unknown = set(section) - {"url", "password-file", "min-replicas"}
    if unknown:
        raise RedisConfigError(f"`{SECTION}`: unknown settings {', '.join(sorted(map(str, unknown)))}"
                               " (known: url, password-file, min-replicas)")
    return section


def resolve(*, url: str | None = None, password_file: str | Path | None = None,
            min_replicas: int | None = None, env: Mapping[str, str] | None = None,
            config: Mapping[str, object] | None = None, base_dir: Path | None = None,
            ) -> RedisSettings | None:
    """The Redis settings from flags (`url`, `password_file`, `min_replicas`), else `env`
    (`FLINT_REDIS_*`), else the settings file's `redis:` map (a relative `password-file`
    against `base_dir`, the file's directory); None when no URL is configured. The password
    file is read (and checked). Blocking: file I/O."""
    env = env if env is not None else {}
    section = settings_section(config)
    url = url or env.get(ENV_URL) or _opt_str(section.get("url"))
    pw_file = password_file or env.get(ENV_PASSWORD_FILE)
    if pw_file is None and section.get("password-file") is not None:
        pw_file = Path(str(section["password-file"])).expanduser()
        if base_dir is not None and not pw_file.is_absolute():
            pw_file = base_dir / pw_file
    replicas: object = min_replicas
    if replicas is None:
        replicas = env.get(ENV_MIN_REPLICAS) or section.get("min-replicas") or 0
    if not url:
        if pw_file is not None:
            raise RedisConfigError(f"{PASSWORD_FLAG} is given without a Redis URL (--redis URL)")
        return None
    check_url(url)
    try:
        count = int(str(replicas))
    except ValueError:
        raise RedisConfigError(f"redis min-replicas must be a number, not {replicas!r}") from None
    path = Path(os.path.abspath(Path(pw_file).expanduser())) if pw_file is not None else None
    password = read_password_file(path) if path is not None else None
    return RedisSettings(url=url, password=password, password_file=path, min_replicas=count)


def from_env(env: Mapping[str, str]) -> RedisSettings | None:
    """The settings `flint up` handed down (`RedisSettings.env`); None when it configured none."""
    return resolve(env=env)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
