"""The cluster certificates at work: read (or made, once) from the Secret, served by one SSL
context that is reloaded in place when the Secret changes, and rotated by the leader.

Every replica, at start, reads Secret `flint-controller-certs`; a missing one it creates (a new CA
and serving certificate); a 409 means another replica did first, and it reads theirs. It then
watches the Secret and, when the serving certificate in it changes, loads it into the same
`ssl.SSLContext` (`context`: the HTTPS API's and the webhook's listeners hold it), so the next
handshakes present the new certificate and no listener is restarted.

The leader (`lead` / `stand_by`, from the controller's term callbacks) keeps the trust bundle
published — ConfigMap `flint-controller-ca` (`ca.crt`) and the `caBundle` of every webhook of the
two webhook configurations (skipped while they do not exist) — at the start of each term and
after every change, and applies `rotation.decide`'s steps, one write of the Secret each (under its
resourceVersion: a 409 reads it again). Key material never reaches a log: lines name serial
numbers, expiry times and steps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from controller import kube_calls
from controller.cluster_tls.rotation import advance, decide, initial, seconds_until_due
from controller.cluster_tls.settings import ClusterTLSSettings
from controller.cluster_tls.state import ClusterCerts, from_secret, to_secret
from controller.store.base import Gone, Kind, StoreError
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings
from flint_common.backoff import backoff_delay
from flint_common.tls import new_server_context, pem_files

__all__ = ["CertKeeper", "ClusterTLSError"]

log = logging.getLogger("flint.cluster_tls")

SECRETS = Kind("", "secrets")
MAX_STEPS = 4
"""Steps applied in one pass at most (a full rotation is three, spread over two overlaps)."""

Obj = dict[str, Any]


class ClusterTLSError(RuntimeError):
    """The certificates cannot be had: the API server refused for good (its status and why)."""


class _Retry(Exception):
    """A read or write the API server did not answer or answered 5xx/429: try again later."""


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for its end, cancelling again while it runs: Python 3.11's
    `asyncio.wait_for` (the store's watch uses it) drops a cancellation that races the end of
    its inner call, and the watch would then read on."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


def _older(version: str, than: str) -> bool:
    """Whether resourceVersion `version` is before `than`. They are opaque to clients, but every
    etcd-backed API server writes increasing integers; anything else is never taken as older."""
    return version.isdigit() and than.isdigit() and int(version) < int(than)


class CertKeeper:
    """One replica's view of the cluster certificates; `start` before serving with `context`."""

    def __init__(self, api: client.ApiClient, settings: ClusterTLSSettings,
                 kube: KubernetesSettings | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.context: ssl.SSLContext = new_server_context()
        """The server context of every TLS listener of the controller: reloaded in place."""
        self.certs: ClusterCerts | None = None
        """What the Secret held when it was last read."""
        self.loads = 0
        """How many serving certificates `context` has been given (1 after `start`)."""
        self._clock = clock
        self._core: Any = client.CoreV1Api(api)  # dict bodies; the stubs want models
        self._admission: Any = client.AdmissionregistrationV1Api(api)
        self._store = KubernetesStore(api, {SECRETS: ("v1", "Secret")}, kube)
        self._version = ""
        self._loaded: bytes = b""
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._leader: asyncio.Task[None] | None = None
        self._absent_logged: set[str] = set()
        self._taking = asyncio.Lock()
        """One `_take` at a time: the watch's and the leader's never interleave their loads."""
        self._deleted = False
        """The Secret was deleted: the leader writes back what this replica holds."""

    @property
    def bundle(self) -> bytes:
        """The PEM bundle of every CA to trust now."""
        assert self.certs is not None, "start() first"
        return self.certs.bundle

    # -- every replica ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Read (or create) the Secret, load the context, and follow the Secret's changes. Retries
        while the API server is away; a refusal for good (403, a missing namespace) raises
        `ClusterTLSError`."""
        failures = 0
        obj: Obj | None = None
        while obj is None:
            try:
                obj = await self._read_or_create()
            except _Retry as exc:
                delay = backoff_delay(0.2, self.settings.retry_s, failures)
                failures += 1
                log.warning("event=cluster_certs_unavailable error=%s retry_s=%.1f", exc, delay)
                await asyncio.sleep(delay)
        await self._take(obj)
        if self.certs is None:
            raise ClusterTLSError(f"Secret {self._where}: unusable (see the error above); delete it "
                                  "and a controller makes a new one")
        self._watcher = asyncio.create_task(self._watch(), name="cluster-certs-watch")

    async def close(self) -> None:
        await self.stand_by()
        await self._store.close()
        if self._watcher is not None:
            await _cancel(self._watcher)

    def poke(self) -> None:
        """Look at the schedule again now (a test's clock moved; the leader only)."""
        self._changed.set()

    @property
    def _where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.secret}"

    async def _read_or_create(self) -> Obj:
        s = self.settings
        while True:
            status, obj = await self._call(self._core.read_namespaced_secret, s.secret, s.namespace)
            if status == 200:
                return obj
            if status != 404:
                raise self._failure(status, f"reading Secret {self._where}")
            body = to_secret(initial(s.names, self._clock()), s.namespace, s.secret)
            status, obj = await self._call(self._core.create_namespaced_secret, s.namespace, body)
            if status == 201:
                log.info("event=cluster_certs_created secret=%s", self._where)
                return obj
            if status == 409:  # another replica made it first: theirs is read next
                log.info("event=cluster_certs_created_by_another secret=%s", self._where)
                continue
            raise self._failure(status, f"creating Secret {self._where}")

    def _failure(self, status: int, what: str) -> Exception:
        if status == 0 or status == 429 or status >= 500:
            return _Retry(f"{what}: {status or 'no answer'}")
        hint = {403: " (forbidden: the controller's service account needs create on Secrets in "
                     "its namespace, and get, update, list and watch on this one)",
                404: " (not found: does the namespace exist? see --system-namespace)"}.get(status, "")
        return ClusterTLSError(f"{what}: {status}{hint}")

    async def _take(self, obj: Obj) -> None:
        """Make `obj` (the Secret as read) the certificates, and load its serving certificate
        into `context` when it changed. A malformed Secret is logged and left: the context keeps
        what it serves."""
        async with self._taking:
            await self._take_locked(obj)

    async def _take_locked(self, obj: Obj) -> None:
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if _older(version, self._version):  # a watch event behind what the leader wrote and took
            return
        self._deleted = False
        try:
            certs = from_secret(obj)
        except ValueError as exc:
            log.error("event=cluster_certs_invalid secret=%s error=%s", self._where, exc)
            self._version = version
            return
        self.certs, self._version = certs, version
        cert, key = certs.tls_pem
        if cert != self._loaded:
            await self._load(cert, key)
            self._loaded = cert
            self.loads += 1
            log.info("event=cluster_certs_loaded secret=%s serial=%x not_after=%s", self._where,
                     certs.serving.serial_number, certs.serving.not_valid_after_utc.isoformat())
        self._changed.set()

    async def _load(self, cert: bytes, key: bytes) -> None:
        """`load_cert_chain` on the loop's thread (where the handshakes run: never while one is
        half done), from files written and removed off it."""
        files = pem_files(cert, key)
        cert_path, key_path = await asyncio.to_thread(files.__enter__)
        try:
            self.context.load_cert_chain(cert_path, key_path)
        finally:
            await asyncio.to_thread(files.__exit__, None, None, None)

    async def _watch(self) -> None:
        """Follow the Secret (from the version read), reading it again after a 410 or a failure."""
        failures = 0
        while True:
            try:
                async for ev in self._store.watch(SECRETS, self.settings.namespace, since=self._version,
                                                  name=self.settings.secret):
                    failures = 0
                    if ev.object.get("metadata", {}).get("name") != self.settings.secret:
                        continue  # (the API server sends only it)
                    if ev.type == "DELETED":  # the leader writes back the same (the context keeps it)
                        log.warning("event=cluster_certs_deleted secret=%s", self._where)
                        self._deleted = True
                        self._changed.set()
                        continue
                    await self._take(ev.object)
                return  # the store closed
            except (Gone, StoreError, OSError) as exc:
                delay = backoff_delay(0.2, self.settings.retry_s, failures)
                failures += 1
                log.info("event=cluster_certs_watch_restart error=%s retry_s=%.1f", exc, delay)
                await asyncio.sleep(delay)
                with contextlib.suppress(_Retry, ClusterTLSError):
                    await self._take(await self._read_or_create())

    # -- the leader ------------------------------------------------------------------------------

    def lead(self) -> None:
        """A term starts: publish the bundle and follow the schedule until `stand_by`."""
        if self._leader is None or self._leader.done():
            self._changed.set()
            self._leader = asyncio.get_running_loop().create_task(self._lead(), name="cluster-certs-leader")

    async def stand_by(self) -> None:
        task, self._leader = self._leader, None
        if task is not None:
            await _cancel(task)

    async def _lead(self) -> None:
        failures = 0
        while True:
            try:
                wait = await self._pass()
                failures = 0
            except (_Retry, ClusterTLSError) as exc:
                wait = backoff_delay(0.2, self.settings.retry_s, failures)
                failures += 1
                log.warning("event=cluster_certs_rotation_failed error=%s retry_s=%.1f", exc, wait)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def _pass(self) -> float:
        """The bundle published, then each due step written and published; the seconds until the
        schedule may have more."""
        self._changed.clear()
        s = self.settings
        if self._deleted and self.certs is not None:  # the same CA back: no client is cut off
            status, obj = await self._call(self._core.create_namespaced_secret, s.namespace,
                                           to_secret(self.certs, s.namespace, s.secret))
            if status == 201:
                log.info("event=cluster_certs_restored secret=%s", self._where)
                await self._take(obj)
            elif status != 409:  # 409: another wrote it meanwhile; its watch event follows
                raise self._failure(status, f"creating Secret {self._where}")
            return 0.0
        if self.certs is None:  # unreadable: nothing to decide on until someone fixes it
            return s.recheck_s
        await self._publish(self.certs.bundle)
        for _ in range(MAX_STEPS):
            assert self.certs is not None
            now = self._clock()
            step = decide(self.certs, s.names, now, s.rotation)
            if step is None:
                break
            body = to_secret(advance(self.certs, step, s.names, now), s.namespace, s.secret)
            body["metadata"]["resourceVersion"] = self._version
            status, obj = await self._call(self._core.replace_namespaced_secret, s.secret, s.namespace, body)
            if status == 409:  # changed under us: read it again and decide anew
                await self._take(await self._read_or_create())
                return 0.0
            if status != 200:
                raise self._failure(status, f"updating Secret {self._where}")
            log.info("event=cluster_certs_step step=%s reason=%r secret=%s", step.kind, step.reason,
                     self._where)
            await self._take(obj)
            assert self.certs is not None
            await self._publish(self.certs.bundle)
        assert self.certs is not None
        return min(s.recheck_s, seconds_until_due(self.certs, self._clock(), s.rotation))

    async def _publish(self, bundle: bytes) -> None:
        """The ConfigMap's `ca.crt` and every webhook's `caBundle` set to `bundle`, where not yet."""
        s = self.settings
        status, cm = await self._call(self._core.read_namespaced_config_map, s.configmap, s.namespace)
        text = bundle.decode("ascii")
        if status == 404:
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": s.configmap, "namespace": s.namespace,
                                 "labels": {"app.kubernetes.io/part-of": "flint"}},
                    "data": {"ca.crt": text}}
            status, _ = await self._call(self._core.create_namespaced_config_map, s.namespace, body)
            if status not in (201, 409):
                raise self._failure(status, f"creating ConfigMap {s.namespace}/{s.configmap}")
            if status == 409:
                raise _Retry(f"ConfigMap {s.namespace}/{s.configmap} appeared meanwhile")
            log.info("event=cluster_ca_published configmap=%s/%s", s.namespace, s.configmap)
        elif status == 200:
            if (cm.get("data") or {}).get("ca.crt") != text:
                cm["data"] = {**(cm.get("data") or {}), "ca.crt": text}
                status, _ = await self._call(self._core.replace_namespaced_config_map, s.configmap,
                                             s.namespace, cm)
                if status != 200:
                    raise self._failure(status if status != 409 else 503,
                                        f"updating ConfigMap {s.namespace}/{s.configmap}")
                log.info("event=cluster_ca_published configmap=%s/%s", s.namespace, s.configmap)
        else:
            raise self._failure(status, f"reading ConfigMap {s.namespace}/{s.configmap}")
        ca_bundle = base64.b64encode(bundle).decode("ascii")
        a = self._admission
        for kind, name, read, write in (
            ("MutatingWebhookConfiguration", s.mutating_webhook,
             a.read_mutating_webhook_configuration, a.replace_mutating_webhook_configuration),
            ("ValidatingWebhookConfiguration", s.validating_webhook,
             a.read_validating_webhook_configuration, a.replace_validating_webhook_configuration),
        ):
            status, config = await self._call(read, name)
            if status == 404:
                if name not in self._absent_logged:
                    self._absent_logged.add(name)
                    log.debug("event=webhook_configuration_absent kind=%s name=%s", kind, name)
                continue
            if status != 200:
                raise self._failure(status, f"reading {kind} {name}")
            self._absent_logged.discard(name)
            hooks = config.get("webhooks") or []
            stale = [h for h in hooks if (h.get("clientConfig") or {}).get("caBundle") != ca_bundle]
            if not stale:
                continue
            for hook in stale:
                hook.setdefault("clientConfig", {})["caBundle"] = ca_bundle
            status, _ = await self._call(write, name, config)
            if status != 200:
                raise self._failure(status if status != 409 else 503, f"updating {kind} {name}")
            log.info("event=webhook_ca_bundle_set kind=%s name=%s webhooks=%d", kind, name, len(stale))

    async def _call(self, method: Any, *args: Any) -> tuple[int, Obj]:
        """(HTTP status, JSON body) of one call; 0 when the API server did not answer."""
        return await kube_calls.call(method, *args, timeout_s=self.settings.retry_s * 2,
                                     event="cluster_certs_api_unreachable", log=log)
