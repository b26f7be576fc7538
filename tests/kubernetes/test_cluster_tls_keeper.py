"""The cluster certificates' keeper (`controller.cluster_tls.keeper`) on the contract fake: the
Secret made once (two replicas racing: one 409), one SSL context reloaded in place when the Secret
changes (an open listener serves the new certificate), and the leader's CA rotation in phases, a
client trusting only the published bundle connecting at every step."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography import x509
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget, eventually

from controller.cluster_tls.keeper import CertKeeper
from controller.cluster_tls.rotation import Step, advance
from controller.cluster_tls.settings import ClusterTLSSettings, RotationSettings
from controller.cluster_tls.state import ROTATE_CA, from_secret, to_secret
from flint_common.tls import client_context, load_bundle

SECRET = "flint-controller-certs"
DEADLINE_S = 20.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def settings(kube: KubeTarget, **kw: Any) -> ClusterTLSSettings:
    return ClusterTLSSettings(namespace=kube.namespace, extra_names=("127.0.0.1",), retry_s=0.5, **kw)


@contextlib.asynccontextmanager
async def keepers(kube: KubeTarget, n: int = 1, clock: Callable[[], float] = time.time,
                  **kw: Any) -> AsyncIterator[list[CertKeeper]]:
    made = [CertKeeper(kube.api, settings(kube, **kw), clock=clock) for _ in range(n)]
    try:
        await asyncio.gather(*(k.start() for k in made))
        yield made
    finally:
        for k in made:
            await k.close()


@contextlib.asynccontextmanager
async def listener(ctx: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 with `ctx` (what the API's and the webhook's sites do)."""
    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"ok")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def served(port: int, ca_pem: bytes) -> x509.Certificate:
    """The certificate the server on `port` presents to a client trusting only `ca_pem` (and
    checking the name 127.0.0.1); raises when it does not verify."""
    ctx = client_context(ca_pem)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        assert await reader.read() == b"ok"
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def read_secret(kube: KubeTarget) -> dict[str, Any]:
    core: Any = client.CoreV1Api(kube.api)
    secret = await core.read_namespaced_secret(SECRET, kube.namespace)
    return dict(kube.api.sanitize_for_serialization(secret))


async def published(kube: KubeTarget) -> bytes:
    """The ConfigMap's bundle (b"" while there is none)."""
    core: Any = client.CoreV1Api(kube.api)
    try:
        cm = await core.read_namespaced_config_map("flint-controller-ca", kube.namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return b""
        raise
    return str((cm.data or {}).get("ca.crt", "")).encode()


async def test_the_first_replica_creates_the_secret_and_serves_it(kube: KubeTarget,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "flint.cluster_tls")
    async with keepers(kube) as (keeper,), listener(keeper.context) as port:
        secret = await read_secret(kube)
        assert secret["type"] == "Opaque"
        assert {"ca.crt", "ca.key", "tls.crt", "tls.key"} <= set(secret["data"])
        certs = from_secret(secret)
        names = certs.serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"flint-webhook.{kube.namespace}.svc" in names.get_values_for_type(x509.DNSName)
        assert f"flint-controller-leader.{kube.namespace}.svc.cluster.local" in names.get_values_for_type(
            x509.DNSName)
        assert (await served(port, keeper.bundle)).serial_number == certs.serving.serial_number
    for key in ("ca.key", "tls.key"):  # no key material in any log line
        assert secret["data"][key] not in caplog.text
        assert base64.b64decode(secret["data"][key]).decode() not in caplog.text


async def test_two_replicas_racing_share_one_secret(kube: KubeTarget,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "flint.cluster_tls")
    async with keepers(kube, 2) as (a, b):
        assert a.certs is not None and b.certs is not None
        assert a.certs.tls_pem == b.certs.tls_pem and a.bundle == b.bundle
    assert caplog.text.count("event=cluster_certs_created ") == 1
    assert caplog.text.count("event=cluster_certs_created_by_another") == 1


async def test_a_changed_secret_is_served_by_the_open_listener(kube: KubeTarget) -> None:
    async with keepers(kube) as (keeper,), listener(keeper.context) as port:
        assert keeper.certs is not None
        first = await served(port, keeper.bundle)
        renewed = advance(keeper.certs, Step("renew", "test"), keeper.settings.names, time.time())
        body = to_secret(renewed, kube.namespace, SECRET)
        core: Any = client.CoreV1Api(kube.api)
        await core.replace_namespaced_secret(SECRET, kube.namespace, body)  # another replica's write

        async def serial() -> int:
            return (await served(port, keeper.bundle)).serial_number

        await eventually(serial, lambda s: s == renewed.serving.serial_number, DEADLINE_S,
                         "the listener serving the renewed certificate")
        assert first.serial_number != renewed.serving.serial_number and keeper.loads == 2


async def webhook_configs(kube: KubeTarget, suffix: str = "") -> None:
    api: Any = client.AdmissionregistrationV1Api(kube.api)
    hook = {"clientConfig": {"service": {"namespace": kube.namespace, "name": "flint-webhook"}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"]}
    await api.create_mutating_webhook_configuration({
        "metadata": {"name": "flint-defaulting" + suffix},
        "webhooks": [{**hook, "name": "defaulting.webhook.flint.dev"}]})
    await api.create_validating_webhook_configuration({
        "metadata": {"name": "flint-validation" + suffix},
        "webhooks": [{**hook, "name": "validation.webhook.flint.dev"}]})


async def ca_bundles(kube: KubeTarget, suffix: str = "") -> list[bytes]:
    api: Any = client.AdmissionregistrationV1Api(kube.api)
    out = []
    for config in (await api.read_mutating_webhook_configuration("flint-defaulting" + suffix),
                   await api.read_validating_webhook_configuration("flint-validation" + suffix)):
        out += [base64.b64decode(w.client_config.ca_bundle or "") for w in config.webhooks]
    return out


async def test_the_leader_publishes_the_bundle_at_each_term(kube: KubeTarget) -> None:
    async with keepers(kube, mutating_webhook="flint-defaulting-x",
                       validating_webhook="flint-validation-x") as (keeper,):
        keeper.lead()  # no webhook configurations yet: skipped, the ConfigMap written
        await eventually(lambda: published(kube), lambda b: b == keeper.bundle, DEADLINE_S,
                         "the ConfigMap holding the CA")
        await keeper.stand_by()
        await webhook_configs(kube, "-x")  # deploy applied them later: the next term fills them in
        keeper.lead()
        await eventually(lambda: ca_bundles(kube, "-x"), lambda bs: bs == [keeper.bundle] * 2, DEADLINE_S,
                         "the webhooks' caBundle")


async def test_a_full_ca_rotation_never_breaks_a_client_of_the_bundle(kube: KubeTarget) -> None:
    """Phase by phase (a clock of the test's, an overlap of 60 s): a client holding the bundle
    published before the step, and one holding the bundle after it, both connect."""
    clock = Clock()
    await webhook_configs(kube)
    overlap = RotationSettings(ca_overlap_s=60.0)
    async with keepers(kube, 2, clock=clock, rotation=overlap) as (leader, other), \
            listener(leader.context) as port_a, listener(other.context) as port_b:
        assert leader.certs is not None
        original = leader.certs.ca.cert
        leader.lead()
        await eventually(lambda: published(kube), lambda b: b == leader.bundle, DEADLINE_S, "the bundle")
        held = await published(kube)

        async def phase(done: Callable[[dict[str, Any]], bool], what: str) -> None:
            nonlocal held
            await eventually(lambda: read_secret(kube), done, DEADLINE_S, what)
            await eventually(lambda: published(kube), lambda b: b == leader.bundle, DEADLINE_S,
                             f"the bundle of {what}")
            await eventually(lambda: ca_bundles(kube), lambda bs: bs == [leader.bundle] * 2, DEADLINE_S,
                             f"the webhooks' caBundle of {what}")
            now = await published(kube)
            for port in (port_a, port_b):  # the replica that leads and the one that does not
                for bundle in (held, now):
                    assert leader.certs is not None
                    want = leader.certs.serving.serial_number
                    await eventually(lambda p=port, b=bundle: served(p, b),  # type: ignore[misc]
                                     lambda cert, w=want: cert.serial_number == w,  # type: ignore[misc]
                                     DEADLINE_S, f"{what}: port {port} serving the Secret's certificate")
            held = now

        core: Any = client.CoreV1Api(kube.api)  # an operator asks: kubectl annotate secret …
        await core.patch_namespaced_secret(SECRET, kube.namespace,
                                           {"metadata": {"annotations": {ROTATE_CA: "now"}}})
        await phase(lambda s: "ca-next.crt" in s["data"], "phase 1 (the new CA trusted)")
        assert len(load_bundle(held, "bundle")) == 2 and leader.certs.ca.cert == original
        clock.now += 61
        leader.poke()
        await phase(lambda s: "ca-previous.crt" in s["data"], "phase 2 (serving from the new CA)")
        assert leader.certs.ca.cert != original and leader.certs.previous_ca == original
        clock.now += 61
        leader.poke()
        await phase(lambda s: "ca-previous.crt" not in s["data"] and "ca-next.crt" not in s["data"],
                    "phase 3 (the old CA gone)")
        assert load_bundle(held, "bundle") == [leader.certs.ca.cert] != [original]
        assert ROTATE_CA not in ((await read_secret(kube))["metadata"].get("annotations") or {})


async def test_a_deleted_secret_is_written_back_with_the_same_ca(kube: KubeTarget) -> None:
    async with keepers(kube) as (keeper,):
        keeper.lead()
        await eventually(lambda: published(kube), lambda b: b == keeper.bundle, DEADLINE_S, "the bundle")
        before = await read_secret(kube)
        core: Any = client.CoreV1Api(kube.api)
        await core.delete_namespaced_secret(SECRET, kube.namespace)

        async def uid() -> str:
            try:
                return str((await read_secret(kube))["metadata"]["uid"])
            except client.ApiException as exc:
                if exc.status == 404:
                    return ""
                raise

        await eventually(uid, lambda u: u not in ("", before["metadata"]["uid"]), DEADLINE_S,
                         "the Secret written back")
        after = await read_secret(kube)
        assert after["data"] == before["data"] and await published(kube) == keeper.bundle
