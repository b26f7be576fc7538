"""The CLI finds its API and credential by kubectl's rules, through kubernetes_asyncio's loader."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import yaml

from controller.cli.endpoint import DEFAULT_API, Endpoint, kubeconfig_paths, may_carry_token, resolve
from controller.cli.errors import CliError
from flint_common import kubeconfig
from flint_common.secret import Secret
from flint_common.tls import new_authority

CA = new_authority("test CA", dt.datetime.now(dt.UTC)).cert_pem


def _write(path: Path, server: str, token: str, name: str = "flint") -> Path:
    kubeconfig.write(path, kubeconfig.flint_kubeconfig(server, CA, Secret(token), name=name))
    return path


def _resolve(*args: object, **kw: object) -> Endpoint:
    """`resolve` on a loop of its own (the tests write their files outside any loop)."""
    return asyncio.run(resolve(*args, **kw))  # type: ignore[arg-type]


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home")}


def test_nothing_configured_is_the_default_address_without_a_token(home: dict[str, str]) -> None:
    e = _resolve(None, None, None, env=home)
    assert (e.server, e.token) == (DEFAULT_API, None)
    assert "no kubeconfig" in e.source


def test_api_and_token_from_the_environment_read_no_file(home: dict[str, str]) -> None:
    env = {**home, "FLINT_API": "http://127.0.0.1:9", "FLINT_TOKEN": "t0k",
           "KUBECONFIG": "/nonexistent/on/purpose"}
    e = _resolve(None, None, None, env=env)
    assert e.server == "http://127.0.0.1:9" and e.token == Secret("t0k") and e.ssl is None


def test_a_kubeconfig_flag_gives_server_token_and_the_ca(tmp_path: Path, home: dict[str, str]) -> None:
    path = _write(tmp_path / "kc", "https://127.0.0.1:8443", "from-file")
    e = _resolve(None, str(path), None, env=home)
    assert e.server == "https://127.0.0.1:8443"
    assert e.token == Secret("from-file")
    assert e.ssl is not None and e.ssl.check_hostname
    assert str(path) in e.source and "'flint'" in e.source


def test_overrides_apply_on_top_of_the_kubeconfig(tmp_path: Path, home: dict[str, str]) -> None:
    path = _write(tmp_path / "kc", "https://127.0.0.1:8443", "from-file")
    e = _resolve("http://127.0.0.1:8081", str(path), None, env=home)
    assert (e.server, e.token) == ("http://127.0.0.1:8081", Secret("from-file"))
    e = _resolve(None, str(path), None, env={**home, "FLINT_TOKEN": "override"})
    assert (e.server, e.token) == ("https://127.0.0.1:8443", Secret("override"))


def test_kubeconfig_env_merges_a_list_and_context_picks_one(
    tmp_path: Path, home: dict[str, str]
) -> None:
    a = _write(tmp_path / "a", "https://127.0.0.1:1001", "tok-a", name="a")
    b = _write(tmp_path / "b", "https://127.0.0.1:1002", "tok-b", name="b")
    env = {**home, "KUBECONFIG": f"{a}:{b}"}
    e = _resolve(None, None, "b", env=env)
    assert (e.server, e.token) == ("https://127.0.0.1:1002", Secret("tok-b"))
    e = _resolve(None, None, "a", env=env)
    assert e.token == Secret("tok-a")
    with pytest.raises(CliError, match="kubeconfig"):
        _resolve(None, None, "missing", env=env)


def test_flints_own_kubeconfig_comes_before_kubectls(tmp_path: Path, home: dict[str, str]) -> None:
    kube = Path(home["HOME"]) / ".kube" / "config"
    _write(kube, "https://127.0.0.1:2001", "kubectl-one")
    assert kubeconfig_paths(None, home) == str(kube)
    e = _resolve(None, None, None, env=home)
    assert e.token == Secret("kubectl-one")
    own = Path(home["HOME"]) / ".config" / "flint" / "kubeconfig"
    _write(own, "https://127.0.0.1:2002", "flint-one")
    e = _resolve(None, None, None, env=home)
    assert e.token == Secret("flint-one")
    moved = _write(tmp_path / "elsewhere", "https://127.0.0.1:2003", "moved")
    e = _resolve(None, None, None, env={**home, "FLINT_KUBECONFIG": str(moved)})
    assert e.token == Secret("moved")


def test_a_token_file_in_the_kubeconfig_is_read(tmp_path: Path, home: dict[str, str]) -> None:
    (tmp_path / "tok").write_text("from-token-file\n")
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:5"}}],
        "users": [{"name": "x", "user": {"tokenFile": str(tmp_path / "tok")}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))
    e = _resolve(None, str(path), None, env=home)
    assert e.token == Secret("from-token-file") and e.ssl is None


def test_an_unreadable_kubeconfig_is_a_clear_error(tmp_path: Path, home: dict[str, str]) -> None:
    path = tmp_path / "kc"
    path.write_text("current-context: nowhere\n")
    with pytest.raises(CliError, match="kubeconfig"):
        _resolve(None, str(path), None, env=home)
    with pytest.raises(CliError, match="no kubeconfig"):
        _resolve(None, str(tmp_path / "absent"), None, env=home)


def test_the_token_never_goes_over_plain_http_to_another_machine(
    tmp_path: Path, home: dict[str, str]
) -> None:
    env = {**home, "FLINT_TOKEN": "t0k"}
    assert _resolve("http://127.0.0.1:8081", None, None, env=env).token == Secret("t0k")
    assert _resolve("http://[::1]:8081", None, None, env=env).token == Secret("t0k")
    assert _resolve("https://flint.example:8443", None, None, env=env).token == Secret("t0k")
    with pytest.raises(CliError, match="plain HTTP"):
        _resolve("http://flint.example:8081", None, None, env=env)
    path = _write(tmp_path / "kc", "https://127.0.0.1:8443", "from-file")
    with pytest.raises(CliError, match="plain HTTP"):
        _resolve("http://10.0.0.5:8081", str(path), None, env=home)


def test_a_ca_with_insecure_skip_tls_verify_is_refused_as_kubectl_does(
    tmp_path: Path, home: dict[str, str]
) -> None:
    path = _write(tmp_path / "kc", "https://127.0.0.1:8443", "t")
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(CliError, match="insecure"):
        _resolve(None, str(path), None, env=home)


def test_may_carry_token() -> None:
    assert may_carry_token("https://example.com")
    assert may_carry_token("http://127.0.0.1:8083") and may_carry_token("http://localhost:1")
    assert not may_carry_token("http://192.0.2.1:8083")
    assert not may_carry_token("ftp://127.0.0.1")


def test_a_kubeconfig_proxy_never_carries_the_token_in_clear(
    tmp_path: Path, home: dict[str, str]
) -> None:
    path = _write(tmp_path / "kc", "https://127.0.0.1:8443", "t")
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"]["proxy-url"] = "http://proxy.example:3128"
    path.write_text(yaml.safe_dump(config))
    e = _resolve(None, str(path), None, env=home)
    assert e.proxy == "http://proxy.example:3128"  # to the https server: the proxy sees TLS only
    e = _resolve("http://127.0.0.1:8081", str(path), None, env=home)
    assert e.proxy is None  # --api replaced the server: its proxy does not apply
    config["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:8081"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(CliError, match="through the proxy"):
        _resolve(None, str(path), None, env=home)
