"""The contract fake's admission webhooks (tests/support/kubeapi/admission.py) against a small
webhook of this test's own over TLS: the mutating patch applied, the validating webhook shown the
stored-to-be object and its denial passed on in kube-apiserver's words, warnings as `Warning`
headers, `caBundle` and the Service's DNS name verified, failurePolicy Fail and Ignore."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from support.kubeapi.session import KubeTarget

from flint_common.tls import Authority, ensure_server_files, new_authority, server_context
from loadtests.flint_process import free_ports

pytestmark = pytest.mark.fake_only  # the fake calls a webhook on loopback; a cluster could not

JSON = dict[str, Any]
CONFIGMAPS = {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"],
              "operations": ["CREATE", "UPDATE"]}


@dataclass
class Hook:
    """The test's webhook: `/mutate` adds a label (and warns), `/validate` denies an object
    labelled `deny` with the Status it carries, and both record what they were sent."""

    url: str = ""
    port: int = 0
    seen: list[tuple[str, JSON]] = field(default_factory=list)

    async def mutate(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.seen.append(("mutate", review))
        labels = (review["request"]["object"].get("metadata") or {}).get("labels")
        ops = ([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}] if labels is None
               else [{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
        response = {"uid": review["request"]["uid"], "allowed": True, "patchType": "JSONPatch",
                    "patch": base64.b64encode(orjson.dumps(ops)).decode(), "warnings": ["mutated it"]}
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": response})

    async def validate(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.seen.append(("validate", review))
        labels = (review["request"]["object"].get("metadata") or {}).get("labels") or {}
        response: JSON = {"uid": review["request"]["uid"], "allowed": "deny" not in labels}
        if "deny" in labels:
            response["status"] = {"code": 422, "reason": "Invalid", "message": "data.x: not allowed",
                                  "details": {"causes": [{"field": "data.x", "message": "not allowed"}]}}
        else:
            response["warnings"] = ["looked fine"]
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": response})


@pytest.fixture
def ca() -> Authority:
    return new_authority("admission test CA", dt.datetime.now(dt.UTC))


@pytest.fixture
async def hook(tmp_path: Path, ca: Authority) -> AsyncIterator[Hook]:
    files, _ = await asyncio.to_thread(ensure_server_files, ca, tmp_path, "hook",
                                       ["hook.flint-system.svc", "127.0.0.1"], dt.datetime.now(dt.UTC))
    h = Hook()
    app = web.Application()
    app.router.add_post("/mutate", h.mutate)
    app.router.add_post("/validate", h.validate)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    (h.port,) = free_ports(1)
    context = await asyncio.to_thread(server_context, files)
    await web.TCPSite(runner, "127.0.0.1", h.port, ssl_context=context).start()
    h.url = f"https://127.0.0.1:{h.port}"
    try:
        yield h
    finally:
        await runner.cleanup()


def configuration(kind: str, path: str, ca: Authority, **webhook: Any) -> JSON:
    plural = f"{kind.removesuffix('WebhookConfiguration').lower()}webhookconfigurations"
    hook = {"name": f"{path}.hook.test", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": "flint-system", "name": "hook", "path": f"/{path}"},
                             "caBundle": base64.b64encode(ca.cert_pem).decode()},
            "rules": [CONFIGMAPS], **webhook}
    return {"plural": plural, "body": {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                                       "metadata": {"name": f"{path}-config"}, "webhooks": [hook]}}


async def register(kube: KubeTarget, *configurations: JSON) -> None:
    async with aiohttp.ClientSession() as http:
        for c in configurations:
            async with http.post(f"{_url(kube)}/apis/admissionregistration.k8s.io/v1/{c['plural']}",
                                 json=c["body"]) as r:
                assert r.status == 201, await r.text()


def _url(kube: KubeTarget) -> str:
    assert kube.fake is not None
    return kube.fake.url


async def write(kube: KubeTarget, method: str, obj: JSON, name: str = "") -> tuple[int, JSON, list[str]]:
    base = f"{_url(kube)}/api/v1/namespaces/{kube.namespace}/configmaps"
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{base}/{name}" if name else base, json=obj) as r:
        return r.status, orjson.loads(await r.read()), r.headers.getall("Warning", [])


def cm(name: str = "one", **labels: str) -> JSON:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "1"},
            "metadata": {"name": name, **({"labels": labels} if labels else {})}}


async def expose_hook(kube: KubeTarget) -> None:
    """Service flint-system/hook, as a webhook's Service would be (its namespace made first)."""
    async with aiohttp.ClientSession() as http:
        for url, body in ((f"{_url(kube)}/api/v1/namespaces", {"metadata": {"name": "flint-system"}}),
                          (f"{_url(kube)}/api/v1/namespaces/flint-system/services",
                           {"metadata": {"name": "hook"}, "spec": {"ports": [{"port": 443}]}})):
            async with http.post(url, json=body) as r:
                assert r.status == 201, await r.text()


@pytest.fixture
def mapped(kube: KubeTarget, hook: Hook) -> Hook:
    assert kube.fake is not None
    kube.fake.webhook_addresses["flint-system/hook"] = f"127.0.0.1:{hook.port}"
    return hook


async def test_mutate_then_validate_on_create_and_update(
        kube: KubeTarget, mapped: Hook, ca: Authority) -> None:
    await register(kube, configuration("MutatingWebhookConfiguration", "mutate", ca),
                   configuration("ValidatingWebhookConfiguration", "validate", ca))
    status, made, warnings = await write(kube, "POST", {**cm(), "metadata": {"generateName": "gen-"}})
    assert status == 201, made
    assert made["metadata"]["labels"] == {"mutated": "yes"}
    assert warnings == ['299 - "mutated it"', '299 - "looked fine"']
    (step, mutating), (step2, validating) = mapped.seen
    assert (step, step2) == ("mutate", "validate")
    request = mutating["request"]
    assert request["operation"] == "CREATE" and request["oldObject"] is None
    assert request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
    assert request["namespace"] == kube.namespace
    assert request["object"]["metadata"]["namespace"] == kube.namespace
    assert "name" not in request["object"]["metadata"]  # generateName is picked after mutation
    shown = validating["request"]["object"]
    assert shown["metadata"]["labels"] == {"mutated": "yes"}  # after the patch
    assert shown["metadata"]["name"] == made["metadata"]["name"]  # the name that was stored
    mapped.seen.clear()
    changed = {**made, "data": {"x": "2"}}
    status, updated, _ = await write(kube, "PUT", changed, made["metadata"]["name"])
    assert status == 200 and updated["data"] == {"x": "2"}
    (_, mutating), (_, validating) = mapped.seen
    assert mutating["request"]["operation"] == "UPDATE"
    assert validating["request"]["oldObject"]["data"] == {"x": "1"}


async def test_a_denial_is_the_webhooks_status_prefixed(
        kube: KubeTarget, mapped: Hook, ca: Authority) -> None:
    await register(kube, configuration("ValidatingWebhookConfiguration", "validate", ca))
    status, body, _ = await write(kube, "POST", cm(deny="1"))
    assert status == 422
    assert body["message"] == 'admission webhook "validate.hook.test" denied the request: data.x: not allowed'
    assert body["reason"] == "Invalid" and body["details"]["causes"][0]["field"] == "data.x"
    status, body, _ = await write(kube, "GET", {}, "one")
    assert status == 404  # nothing was stored


async def test_unreachable_untrusted_or_misnamed_webhooks_fail_the_write(
        kube: KubeTarget, hook: Hook, ca: Authority) -> None:
    assert kube.fake is not None
    await register(kube, configuration("ValidatingWebhookConfiguration", "validate", ca))
    status, body, _ = await write(kube, "POST", cm())  # no address for the Service
    assert status == 500 and body["reason"] == "InternalError"
    assert body["message"] == (
        'Internal error occurred: failed calling webhook "validate.hook.test": failed to call webhook: '
        'Post "https://hook.flint-system.svc:443/validate?timeout=10s": service "hook" not found')
    await expose_hook(kube)  # the Service exists, nothing behind it
    status, body, _ = await write(kube, "POST", cm())
    assert status == 500 and body["message"].endswith(
        'Post "https://hook.flint-system.svc:443/validate?timeout=10s": '
        'no endpoints available for service "hook"'), body
    (closed,) = free_ports(1)
    kube.fake.webhook_addresses["flint-system/hook"] = f"127.0.0.1:{closed}"
    status, body, _ = await write(kube, "POST", cm())
    assert status == 500 and "failed calling webhook" in body["message"]
    kube.fake.webhook_addresses["flint-system/hook"] = f"127.0.0.1:{hook.port}"
    other = new_authority("not the hook's CA", dt.datetime.now(dt.UTC))
    wrong = configuration("ValidatingWebhookConfiguration", "validate", other)
    wrong["body"]["metadata"] = {"name": "wrong-ca"}
    await register(kube, wrong)
    status, body, _ = await write(kube, "POST", cm())
    assert status == 500 and "certificate verify failed" in body["message"], body
    assert [s for s, _ in hook.seen] == ["validate"]  # the trusted one answered; the other never got it


async def test_a_certificate_without_the_service_name_is_refused(
        kube: KubeTarget, hook: Hook, ca: Authority) -> None:
    assert kube.fake is not None
    c = configuration("ValidatingWebhookConfiguration", "validate", ca)
    c["body"]["webhooks"][0]["clientConfig"]["service"]["name"] = "elsewhere"
    await register(kube, c)
    kube.fake.webhook_addresses["flint-system/elsewhere"] = f"127.0.0.1:{hook.port}"
    status, body, _ = await write(kube, "POST", cm())
    assert status == 500 and "elsewhere.flint-system.svc" in body["message"] and not hook.seen


async def test_failure_policy_ignore_skips_and_unmatched_writes_are_not_sent(
        kube: KubeTarget, hook: Hook, ca: Authority) -> None:
    assert kube.fake is not None
    await register(
        kube, configuration("ValidatingWebhookConfiguration", "validate", ca, failurePolicy="Ignore"),
        configuration("MutatingWebhookConfiguration", "mutate", ca,
                      rules=[{**CONFIGMAPS, "operations": ["DELETE"]}]))
    status, made, _ = await write(kube, "POST", cm())
    assert status == 201 and "labels" not in made["metadata"]  # Ignore: unreachable, skipped
    calls = kube.fake.admission.calls
    assert calls == 1  # the validating one was tried; the mutating one wants deletions only
    status, _, _ = await write(kube, "DELETE", {}, "one")
    assert status == 200 and kube.fake.admission.calls == calls  # deletions are not admitted here


async def test_client_config_url(kube: KubeTarget, hook: Hook, ca: Authority) -> None:
    c = configuration("MutatingWebhookConfiguration", "mutate", ca)
    c["body"]["webhooks"][0]["clientConfig"] = {"url": f"{hook.url}/mutate",
                                                "caBundle": base64.b64encode(ca.cert_pem).decode()}
    await register(kube, c)
    status, made, warnings = await write(kube, "POST", cm())
    assert status == 201 and made["metadata"]["labels"] == {"mutated": "yes"} and warnings
