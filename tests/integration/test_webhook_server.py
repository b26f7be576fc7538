"""The admission webhook's listener on loopback: TLS with a certificate for the Service name the API
server verifies, the two paths and nothing else, bounded and well-formed bodies; and the
`--webhook-port` flag."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from controller.__main__ import settings_from_argv
from controller.api.registry import registry_for
from controller.cluster_tls.settings import serving_names
from controller.webhook.server import DEFAULTING_PATH, VALIDATION_PATH, WebhookServer
from controller.webhook.settings import WebhookSettings
from flint_common.tls import Authority, client_context, ensure_server_files, new_authority, server_context

SERVICE = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "hello", "namespace": "default"},
           "spec": {"template": {"spec": {"containers": [{"image": "example.com/app"}]}}}}


def review(obj: Any) -> bytes:
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "operation": "CREATE", "object": obj, "namespace": "default", "name": "hello",
        "kind": {"group": "serving.knative.dev", "version": "v1", "kind": "Service"},
        "resource": {"group": "serving.knative.dev", "version": "v1", "resource": "services"}}})


@pytest.fixture
def ca() -> Authority:
    return new_authority("webhook test CA", dt.datetime.now(dt.UTC))


@pytest.fixture
async def webhook(tmp_path: Path, ca: Authority) -> AsyncIterator[WebhookServer]:
    names = [*serving_names("flint-system"), "localhost"]
    files, _ = await asyncio.to_thread(
        ensure_server_files, ca, tmp_path / "tls", "webhook", names, dt.datetime.now(dt.UTC))
    server = WebhookServer(registry_for("kubernetes"),
                           WebhookSettings(port=0, host="127.0.0.1", max_body_bytes=64 * 1024),
                           server_context(files))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def trusting(ca: Authority) -> ssl.SSLContext:
    return client_context(ca.cert_pem)


async def post(server: WebhookServer, ca: Authority, path: str, data: bytes,
               hostname: str = "flint-webhook.flint-system.svc") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
            server.url + path, data=data, ssl=trusting(ca), server_hostname=hostname,
            headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.read()


async def test_defaulting_and_validation_over_tls_for_the_service_name(
        webhook: WebhookServer, ca: Authority) -> None:
    status, raw = await post(webhook, ca, DEFAULTING_PATH, review(SERVICE))
    assert status == 200
    response = orjson.loads(raw)["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    paths = {op["path"] for op in orjson.loads(base64.b64decode(response["patch"]))}
    assert "/spec/traffic" in paths
    status, raw = await post(webhook, ca, VALIDATION_PATH, review(SERVICE))
    assert status == 200 and orjson.loads(raw)["response"]["allowed"] is False  # not defaulted: no traffic


async def test_the_certificate_names_the_service_and_nothing_else_is_trusted(
        webhook: WebhookServer, ca: Authority) -> None:
    assert "flint-webhook.flint-system.svc" in serving_names("flint-system")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(webhook, ca, DEFAULTING_PATH, review(SERVICE), hostname="flint-webhook.elsewhere.svc")
    other = new_authority("another CA", dt.datetime.now(dt.UTC))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(webhook, other, DEFAULTING_PATH, review(SERVICE))


async def test_other_paths_are_404_and_bad_bodies_are_refused(webhook: WebhookServer, ca: Authority) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path in (("GET", "/"), ("GET", DEFAULTING_PATH), ("POST", "/healthz"),
                             ("POST", "/admission/other")):
            async with http.request(method, webhook.url + path, ssl=trusting(ca),
                                    server_hostname="localhost") as r:
                assert r.status == 404, (method, path)
    status, raw = await post(webhook, ca, VALIDATION_PATH, b'{"kind": "AdmissionReview"}')
    assert status == 400 and b"admissionReviewVersions" in raw
    status, _ = await post(webhook, ca, VALIDATION_PATH, b" " * (65 * 1024))
    assert status == 413


def test_the_flag_is_the_kubernetes_engines(capsys: pytest.CaptureFixture[str]) -> None:
    settings, _ = settings_from_argv(["--engine", "kubernetes", "--webhook-port", "8444"])
    assert settings.webhook == WebhookSettings(port=8444, host="0.0.0.0")
    assert settings_from_argv([])[0].webhook.port == 0
    for argv, words in ((["--webhook-port", "8444"], "add --engine kubernetes"),
                        (["--engine", "kubernetes", "--webhook-port", "70000"], "not a TCP port")):
        with pytest.raises(SystemExit) as exited:
            settings_from_argv(argv)
        assert exited.value.code == 2 and words in capsys.readouterr().err
