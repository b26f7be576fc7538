"""The CLI against a tiny fake Kubernetes-style API: discovery, create/replace with 409 retries,
Status errors with causes, warnings, apply, wait, logs and the unreachable-API message."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.cli import client as client_mod
from controller.cli.apply import apply_one
from controller.cli.client import ApiClient, ApiError, Unreachable, format_status, parse_warning
from controller.cli.kinds import BUILTIN, UnknownKind
from controller.cli.main import main
from controller.cli.manifests import Manifest

Obj = dict[str, Any]
SERVING = "serving.knative.dev/v1"
RESOURCES = {
    SERVING: [
        {
            "name": "services",
            "singularName": "service",
            "kind": "Service",
            "namespaced": True,
            "shortNames": ["ksvc"],
        },
        {"name": "services/status", "singularName": "", "kind": "Service", "namespaced": True},
        {
            "name": "revisions",
            "singularName": "revision",
            "kind": "Revision",
            "namespaced": True,
            "shortNames": ["rev"],
        },
        {
            "name": "routes",
            "singularName": "route",
            "kind": "Route",
            "namespaced": True,
            "shortNames": ["rt"],
        },
        {
            "name": "configurations",
            "singularName": "configuration",
            "kind": "Configuration",
            "namespaced": True,
            "shortNames": ["config", "cfg"],
        },
    ],
    "eventing.knative.dev/v1": [
        {"name": "brokers", "singularName": "broker", "kind": "Broker", "namespaced": True},
    ],
}


def status(code: int, reason: str, message: str, causes: list[Obj] | None = None) -> web.Response:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if causes:
        body["details"] = {"causes": causes}
    return web.json_response(body, status=code)


class FakeApi:
    """Services (and any plural) in memory; a Service turns Ready on the second read."""

    def __init__(self, discovery: bool = True) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 0
        self.conflicts = 0
        self.frozen = False  # the controller stopped: statuses stay as they are
        self.discovery_calls = 0
        self.reads: dict[str, int] = {}
        self.app = web.Application()
        r = self.app.router
        if discovery:
            r.add_get("/apis", self.groups)
            r.add_get("/apis/{g}/{v}", self.resources)
        base = "/apis/{g}/{v}/namespaces/{ns}/{plural}"
        r.add_get(base, self.list)
        r.add_post(base, self.create)
        r.add_get(base + "/{name}", self.get)
        r.add_put(base + "/{name}", self.replace)
        r.add_delete(base + "/{name}", self.delete)
        r.add_get("/internal/logs/{ns}/{svc}", self.logs)

    async def groups(self, request: web.Request) -> web.Response:
        self.discovery_calls += 1
        return web.json_response(
            {
                "kind": "APIGroupList",
                "groups": [
                    {
                        "name": gv.split("/")[0],
                        "versions": [{"groupVersion": gv}],
                        "preferredVersion": {"groupVersion": gv},
                    }
                    for gv in RESOURCES
                ],
            }
        )

    async def resources(self, request: web.Request) -> web.Response:
        gv = f"{request.match_info['g']}/{request.match_info['v']}"
        return web.json_response(
            {"kind": "APIResourceList", "groupVersion": gv, "resources": RESOURCES[gv]}
        )

    def _key(self, request: web.Request, name: str | None = None) -> tuple[str, str, str]:
        m = request.match_info
        return (m["plural"], m["ns"], name or m["name"])

    async def list(self, request: web.Request) -> web.Response:
        m = request.match_info
        sel = request.query.get("labelSelector", "")
        items = [
            o
            for (p, ns, _), o in sorted(self.objects.items())
            if p == m["plural"] and ns == m["ns"]
        ]
        if sel:
            k, _, v = sel.partition("=")
            items = [o for o in items if (o["metadata"].get("labels") or {}).get(k) == v]
        return web.json_response({"kind": "List", "items": items})

    async def get(self, request: web.Request) -> web.Response:
        key = self._key(request)
        obj = self.objects.get(key)
        if obj is None:
            return status(404, "NotFound", f'services.serving.knative.dev "{key[2]}" not found')
        self.reads[key[2]] = self.reads.get(key[2], 0) + 1
        if key[0] == "services" and self.reads[key[2]] >= 2 and not self.frozen:
            self._settle(obj)
        return web.json_response(obj)

    def _settle(self, obj: Obj) -> None:
        gen = obj["metadata"]["generation"]
        name = obj["metadata"]["name"]
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        rev = f"{name}-{gen:05d}"
        failed = image.endswith("/fail")
        obj["status"] = {
            "observedGeneration": gen,
            "url": f"http://{name}.default.localhost:8080",
            "latestCreatedRevisionName": rev,
            "latestReadyRevisionName": None if failed else rev,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False" if failed else "True",
                    "reason": "RevisionFailed" if failed else "",
                    "message": "the app exited with status 3" if failed else "",
                }
            ],
        }

    def _pending(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [
                {
                    "type": "ConfigurationsReady",
                    "status": "Unknown",
                    "message": f'Configuration "{name}" is waiting for a Revision to become ready.',
                },
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "message": f'Configuration "{name}" is waiting for a Revision to become ready.',
                },
            ],
        }

    def _invalid(self, obj: Obj) -> web.Response | None:
        for c in (obj.get("spec") or {}).get("template", {}).get("spec", {}).get("containers", []):
            if not str(c.get("image", "")).startswith("/"):
                field = "spec.template.spec.containers[0].image"
                return status(
                    422,
                    "Invalid",
                    f'Service.serving.knative.dev "{obj["metadata"]["name"]}" is '
                    f"invalid: {field}: image must be a local directory",
                    [{"field": field, "message": "image must be a local directory"}],
                )
        return None

    async def create(self, request: web.Request) -> web.Response:
        obj = await request.json()
        key = self._key(request, obj["metadata"]["name"])
        if key in self.objects:
            return status(409, "AlreadyExists", f'"{key[2]}" already exists')
        bad = self._invalid(obj)
        if bad is not None:
            return bad
        self.rv += 1
        obj["metadata"].update(
            resourceVersion=str(self.rv),
            generation=1,
            namespace=key[1],
            creationTimestamp="2024-05-01T12:00:00Z",
        )
        self._pending(obj)
        self.objects[key] = obj
        self.reads[key[2]] = 0
        headers = {"Warning": '299 flint "image \\"x\\" is big"'} if "warn" in key[2] else {}
        return web.json_response(obj, status=201, headers=headers)

    async def replace(self, request: web.Request) -> web.Response:
        key = self._key(request)
        obj = await request.json()
        live = self.objects.get(key)
        if live is None:
            return status(404, "NotFound", "not found")
        if (
            self.conflicts > 0
            or obj["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]
        ):
            self.conflicts = max(0, self.conflicts - 1)
            self.rv += 1
            live["metadata"]["resourceVersion"] = str(self.rv)
            return status(
                409,
                "Conflict",
                "the object has been modified; please apply your "
                "changes to the latest version and try again",
            )
        bad = self._invalid(obj)
        if bad is not None:
            return bad
        self.rv += 1
        gen = live["metadata"]["generation"] + (obj.get("spec") != live.get("spec"))
        obj["metadata"].update(
            resourceVersion=str(self.rv),
            generation=gen,
            creationTimestamp=live["metadata"]["creationTimestamp"],
        )
        obj["status"] = live.get("status", {})
        if gen != live["metadata"]["generation"] and not self.frozen:
            self._pending(obj)
            self.reads[key[2]] = 0
        self.objects[key] = obj
        return web.json_response(obj)

    async def delete(self, request: web.Request) -> web.Response:
        if self.objects.pop(self._key(request), None) is None:
            return status(404, "NotFound", f'"{request.match_info["name"]}" not found')
        return web.json_response({"kind": "Status", "status": "Success"})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(int(request.query.get("tail", "3"))):
            await resp.write(f"[{request.match_info['svc']}-00001/0] line {i}\n".encode())
        await resp.write_eof()
        return resp


@pytest.fixture(autouse=True)
def _fresh_discovery() -> Iterator[None]:
    client_mod._discovery.clear()
    yield
    client_mod._discovery.clear()


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
def threaded() -> Iterator[tuple[FakeApi, str]]:
    """The fake API on its own loop in a thread, for `main()` (which calls asyncio.run)."""
    fake = FakeApi()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield fake, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def svc(name: str = "hello", image: str = "/srv/app") -> Obj:
    return {
        "apiVersion": SERVING,
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


# -- client ------------------------------------------------------------------------------------


async def test_discovery_resolves_every_name_once_per_process(served: tuple[FakeApi, str]) -> None:
    fake, url = served
    async with ApiClient(url) as api:
        for word in ("ksvc", "services", "Service", "service", "services.serving.knative.dev"):
            assert (await api.resolve(word)).plural == "services"
        assert (await api.resolve("cfg")).kind == "Configuration"
        broker = await api.resolve("broker")
        assert (broker.group, broker.plural, broker.qualified) == (
            "eventing.knative.dev",
            "brokers",
            "broker.eventing.knative.dev",
        )
        with pytest.raises(UnknownKind, match='"widgets"'):
            await api.resolve("widgets")
    async with ApiClient(url) as api:
        await api.resolve("rev")
    assert fake.discovery_calls == 1


async def test_discovery_failure_falls_back_to_builtin_kinds() -> None:
    server = TestServer(FakeApi(discovery=False).app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ApiClient(str(server.make_url(""))) as api:
            assert await api.resources() == list(BUILTIN)
            assert (await api.resolve("rt")).kind == "Route"
    finally:
        await server.close()


async def test_get_create_replace_and_404(served: tuple[FakeApi, str]) -> None:
    _, url = served
    async with ApiClient(url) as api:
        info = await api.resolve("ksvc")
        made = await api.create(info, "default", svc())
        assert made["metadata"]["generation"] == 1
        got = await api.get(info, "default", "hello")
        got["spec"]["template"]["spec"]["containers"][0]["image"] = "/srv/v2"
        put = await api.replace(info, "default", got)
        assert put["metadata"]["generation"] == 2
        assert await api.get_or_none(info, "default", "nope") is None
        with pytest.raises(ApiError) as e:
            await api.get(info, "default", "nope")
        assert e.value.code_http == 404 and e.value.code == 1


async def test_update_retries_on_conflict(served: tuple[FakeApi, str]) -> None:
    fake, url = served
    async with ApiClient(url) as api:
        info = await api.resolve("ksvc")
        await api.create(info, "default", svc())
        fake.conflicts = 2
        calls = 0

        def mutate(cur: Obj) -> Obj:
            nonlocal calls
            calls += 1
            cur["spec"]["template"]["spec"]["containers"][0]["image"] = "/srv/v2"
            return cur

        out = await api.update(info, "default", "hello", mutate)
        assert calls == 3
        assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "/srv/v2"
        fake.conflicts = 100
        with pytest.raises(ApiError) as e:
            await api.update(info, "default", "hello", mutate, retries=2)
        assert e.value.code_http == 409


async def test_refusal_renders_status_with_causes_and_warnings(served: tuple[FakeApi, str]) -> None:
    _, url = served
    async with ApiClient(url) as api:
        info = await api.resolve("ksvc")
        with pytest.raises(ApiError) as e:
            await api.create(info, "default", svc(image="nginx:1.25"))
        assert e.value.reason == "Invalid"
        lines = e.value.message.splitlines()
        assert lines[0].startswith("Error from server (Invalid): Service.serving.knative.dev")
        assert (
            lines[1] == "  spec.template.spec.containers[0].image: image must be a local directory"
        )
        await api.create(info, "default", svc(name="warn-me"))
        assert api.warnings == ['image "x" is big']


def test_format_status_and_warning_header() -> None:
    assert format_status({"message": "boom"}, 500) == "Error from server (HTTP 500): boom"
    assert parse_warning('299 flint "a \\"quoted\\" word"') == 'a "quoted" word'
    assert parse_warning("free text") == "free text"


async def test_unreachable_api() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with ApiClient(url) as api:
        with pytest.raises(Unreachable) as e:
            await api.request("GET", "/apis")
    assert str(e.value) == f"cannot reach the Flint API at {url}: is 'flint up' running?"


async def test_apply_created_unchanged_configured_with_conflict_retry(
    served: tuple[FakeApi, str], tmp_path: Path
) -> None:
    fake, url = served
    async with ApiClient(url) as api:
        m = Manifest(svc(), "x.yaml", tmp_path)
        assert (await apply_one(api, m, "default")).line() == (
            "service.serving.knative.dev/hello created"
        )
        assert (await apply_one(api, m, "default")).action == "unchanged"
        changed = Manifest(svc(image="/srv/v2"), "x.yaml", tmp_path)
        fake.conflicts = 1
        result = await apply_one(api, changed, "default")
        assert result.action == "configured"
        assert result.obj["metadata"]["generation"] == 2


# -- the command line --------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, _out, err = run(capsys, "--api", url, "get", "ksvc")
    assert code == 1
    assert err == f"cannot reach the Flint API at {url}: is 'flint up' running?\n"


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["get"])
    assert e.value.code == 2
    code, _, err = run(capsys, "service", "create", "x", "--image", "/a", "--env", "oops")
    assert code == 2 and "--env 'oops'" in err


def test_cli_apply_get_delete(
    threaded: tuple[FakeApi, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = threaded
    monkeypatch.setenv("FLINT_API", url)
    (tmp_path / "app").mkdir()
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(json.dumps(svc(image="./app")))
    code, out, _ = run(capsys, "apply", "-f", str(manifest))
    assert (code, out) == (0, "service.serving.knative.dev/hello created\n")
    assert fake.objects[("services", "default", "hello")]["spec"]["template"]["spec"]["containers"][
        0
    ]["image"] == str(tmp_path / "app")
    assert run(capsys, "apply", "-f", str(manifest))[1].endswith("unchanged\n")

    code, out, _ = run(capsys, "get", "ksvc", "hello", "-o", "json")
    assert code == 0 and json.loads(out)["metadata"]["name"] == "hello"
    code, out, _ = run(capsys, "get", "services")
    assert out.splitlines()[0].split()[:3] == ["NAME", "URL", "LATEST"]
    code, _, err = run(capsys, "get", "ksvc", "-n", "empty")
    assert err == "No resources found in empty namespace.\n"

    code, out, _ = run(capsys, "delete", "ksvc", "hello")
    assert out == 'service.serving.knative.dev "hello" deleted\n'
    code, _, err = run(capsys, "delete", "ksvc", "hello")
    assert code == 1 and err.startswith("Error from server (NotFound)")


def test_cli_apply_refused(
    threaded: tuple[FakeApi, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = threaded
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(json.dumps(svc(image="nginx:1.25")))
    code, out, err = run(capsys, "--api", url, "apply", "-f", str(manifest))
    assert code == 1 and out == ""
    assert "spec.template.spec.containers[0].image: image must be a local directory" in err


def test_cli_service_create_waits_and_prints_url(
    threaded: tuple[FakeApi, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = threaded
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "service", "create", "hello", "--image", "./app", "--api", url)
    assert code == 0, err
    assert out.startswith("Creating service 'hello' in namespace 'default':\n")
    assert 'Configuration "hello" is waiting for a Revision to become ready.' in out
    assert out.endswith(
        "Service 'hello' created to latest revision 'hello-00001' is available at URL:\n"
        "http://hello.default.localhost:8080\n"
    )
    stored = fake.objects[("services", "default", "hello")]
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == str(tmp_path / "app")

    code, out, err = run(capsys, "service", "create", "hello", "--image", "./app", "--api", url)
    assert code == 1 and "already exists and no --force option was given" in err

    code, out, err = run(capsys, "--api", url, "service", "update", "hello", "--env", "A=1")
    assert code == 0, err
    assert "Service 'hello' updated to latest revision 'hello-00002'" in out
    env = fake.objects[("services", "default", "hello")]["spec"]["template"]["spec"]["containers"][
        0
    ]["env"]
    assert env == [{"name": "A", "value": "1"}]

    code, out, _ = run(capsys, "--api", url, "service", "delete", "hello")
    assert out == "Service 'hello' successfully deleted in namespace 'default'.\n"


def test_cli_service_failure_exits_1(
    threaded: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = threaded
    code, _out, err = run(
        capsys,
        "--api",
        url,
        "service",
        "create",
        "bad",
        "--image",
        "/srv/fail",
        "--wait-window",
        "0",
    )
    assert code == 1
    assert "RevisionFailed: the app exited with status 3" in err


def test_cli_service_no_wait_and_update_ignores_the_old_ready_state(
    threaded: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = threaded
    code, out, _ = run(capsys, "--api", url, "service", "create", "a", "--image", "/x", "--no-wait")
    assert (code, out) == (0, "Service 'a' created in namespace 'default'.\n")
    code, out, _ = run(capsys, "--api", url, "service", "update", "a", "--env", "X=1")
    assert code == 0 and "updated to latest revision 'a-00002'" in out
    # the controller stops: generation 3 is never observed, the Ready of generation 2 stays
    fake.frozen = True
    code, out, err = run(
        capsys, "--api", url, "service", "update", "a", "--env", "X=2", "--wait-timeout", "0.3"
    )
    assert code == 1
    assert "timeout: service 'a' not ready after 0.3 seconds" in err
    assert "Ready to serve" not in out


def test_cli_logs(threaded: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, url = threaded
    code, out, _ = run(capsys, "--api", url, "logs", "hello", "--tail", "2")
    assert code == 0
    assert out == "[hello-00001/0] line 0\n[hello-00001/0] line 1\n"
