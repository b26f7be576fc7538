"""One active controller on the Kubernetes engine: leader election on a `coordination.k8s.io/v1`
Lease, by `kubernetes_asyncio.leaderelection`, with what that library leaves out.

The library campaigns (create the Lease, or take it once its holder stopped renewing for a lease
duration as this candidate observed it), runs `lead` as a task while this candidate holds it,
renews every retry period, and when a renewal fails for the renew deadline cancels `lead` and
returns. `LeaderElector` adds:

* **running again**: a candidate that lost the Lease campaigns again (the library's `run` returns
  for good), so a controller that was partitioned away rejoins as a standby;
* **release on shutdown** (`close`): the leader writes the Lease back without a holder (Go's
  `ReleaseOnCancel`: no holder, a one-second lease), which the library's candidates take at once
  instead of a lease duration later, so a rolling update hands over in about a retry period;
* **bounded calls**: every Lease request times out after a retry period (kubernetes-asyncio's
  default is no timeout: a request hung on a dead API server would keep a leader leading past its
  lease, with a standby leading too), and a network error is a failed attempt, as an API error
  is (the library catches only the latter, so a blip would end the term at once);
* **a lead that ends ends the term**: if `lead` returns or raises, the Lease is released and the
  candidate campaigns again (the library would go on renewing a Lease nobody works under);
* `leading` and a `changed` callback, for the readiness of the parts only a leader runs.

The library's timing rules hold (lease duration > renew deadline > 1.2 × retry period, each at
least one second), and one more: lease duration > renew deadline + 2 × retry period, the longest a
leader whose renewals fail can still be leading, so two never lead at once. Its Lease times are
written from the local clock as UTC (`…Z`): run the controller with TZ unset or UTC, as containers
do; the decisions use only this process's observations, never another machine's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import orjson
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

__all__ = ["LeaderElector", "LeaderSettings", "default_identity"]

log = logging.getLogger("flint.leader")


def default_identity() -> str:
    """This process's candidate name: the pod's name (its hostname in a pod) and a random suffix,
    so a restarted container never mistakes its predecessor's Lease for its own."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaderSettings:
    """Where the Lease is and how long it lasts (seconds; the defaults are kube-controller-
    manager's)."""

    lease: str = "flint-controller"
    """The Lease's name."""
    namespace: str = "flint-system"
    """The Lease's namespace (it must exist)."""
    identity: str = ""
    """This candidate's name in `holderIdentity`; empty: `default_identity()`."""
    lease_duration_s: int = 15
    """How long a standby waits, after it last saw the Lease change, before taking it (whole
    seconds: the Lease's `leaseDurationSeconds`)."""
    renew_deadline_s: float = 10.0
    """How long the leader keeps trying to renew before it gives up leading."""
    retry_period_s: float = 2.0
    """The pause between two tries (renewals, campaigns)."""

    def __post_init__(self) -> None:
        if not isinstance(self.lease_duration_s, int):
            raise ValueError(f"lease_duration_s must be whole seconds, not {self.lease_duration_s}")
        for name in ("lease_duration_s", "renew_deadline_s", "retry_period_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 s, not {getattr(self, name)}")
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ValueError("lease_duration_s must be longer than renew_deadline_s")
        if self.renew_deadline_s <= 1.2 * self.retry_period_s:
            raise ValueError("renew_deadline_s must be longer than 1.2 × retry_period_s")
        if self.lease_duration_s <= self.renew_deadline_s + 2 * self.retry_period_s:
            # A leader whose renewals fail stops within renew deadline + two retry periods (the
            # pause before its renewals, its last attempt's timeout): before any standby may
            # take the Lease, a lease duration after it last saw it renewed.
            raise ValueError("lease_duration_s must be longer than renew_deadline_s + 2 × retry_period_s")


_NETWORK = (TimeoutError, OSError, aiohttp.ClientError)
"""What a Lease call raises when the API server is away or too slow (not an API error)."""
T = TypeVar("T")


class _BoundedLeaseLock(LeaseLock):
    """The library's Lease lock with every call bounded by `timeout_s` (kubernetes-asyncio's own
    default is no timeout at all: a hung request would keep a leader leading past its lease) and
    network errors taken as a failed attempt (the library catches only `ApiException`, so a
    blip would otherwise end the election outright)."""

    def __init__(self, name: str, namespace: str, identity: str, api: client.ApiClient,
                 timeout_s: float) -> None:
        super().__init__(name, namespace, identity, api)
        self.timeout_s = timeout_s

    async def _bounded(self, call: Awaitable[T], what: str, failed: T) -> T:
        """`call` within `timeout_s`; `failed` (the library's value for a failed attempt) when it
        times out or the network fails."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call
        except _NETWORK as exc:
            log.warning("event=lease_%s_failed error=%r", what, exc)
            return failed

    async def get(self, name: str, namespace: str) -> Any:
        failed = ApiException(status=503, reason="the API server did not answer in time")
        failed.body = orjson.dumps({"code": 503, "message": failed.reason})
        return await self._bounded(super().get(name, namespace), "read", (False, failed))

    async def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return await self._bounded(super().create(name, namespace, election_record), "create", False)

    async def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return await self._bounded(super().update(name, namespace, updated_record), "update", False)


class LeaderElector:
    """Campaigns for the Lease until `close`; runs `lead()` while this candidate holds it (the
    task is cancelled when the Lease is lost or at `close`)."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderSettings,
        lead: Callable[[], Awaitable[None]],
        *,
        changed: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.identity = settings.identity or default_identity()
        self._api = api
        self._lead = lead
        self._changed = changed
        self._leases: Any = client.CoordinationV1Api(api)  # the stubs want models; dicts go on the wire
        self._task: asyncio.Task[None] | None = None
        self._lead_task: asyncio.Task[Any] | None = None
        """The library's task running `lead` (it cancels it on a loss, but never awaits it, and
        leaves it running when the campaign itself is cancelled)."""
        self._lead_ended = asyncio.Event()
        """Set when `lead` returned or raised: the term ends and the Lease is released."""
        self.leading = False
        """Whether this candidate holds the Lease (and `lead` runs)."""
        self.terms = 0
        """How many times this candidate became the leader."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._campaign(), name="leader-election")

    async def close(self) -> None:
        """Stop campaigning; a leader stops `lead` and releases the Lease."""
        was_leading = self.leading
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._end_lead()
        self._set(False)
        if was_leading:
            await self.release()

    async def release(self) -> bool:
        """Give the Lease up if this candidate holds it: no holder, a one-second lease (Go's
        release). True when written; a Lease someone else holds now is left alone."""
        s = self.settings
        try:
            lease = await self._leases.read_namespaced_lease(s.lease, s.namespace)
            if (lease.spec.holder_identity or "") != self.identity:
                return False
            now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.acquire_time = now
            lease.spec.renew_time = now
            await self._leases.replace_namespaced_lease(s.lease, s.namespace, lease)
        except (ApiException, *_NETWORK) as exc:
            log.warning("event=lease_release_failed lease=%s/%s error=%s", s.namespace, s.lease, exc)
            return False
        log.info("event=lease_released lease=%s/%s identity=%s", s.namespace, s.lease, self.identity)
        return True

    async def _campaign(self) -> None:
        s = self.settings
        while True:
            lock = _BoundedLeaseLock(s.lease, s.namespace, self.identity, self._api, s.retry_period_s)
            election = LeaderElection(Config(
                lock, lease_duration=s.lease_duration_s, renew_deadline=s.renew_deadline_s,
                retry_period=s.retry_period_s, onstarted_leading=self._leading,
                onstopped_leading=self._stopped))
            log.info("event=campaign lease=%s/%s identity=%s", s.namespace, s.lease, self.identity)
            self._lead_ended.clear()
            run = asyncio.get_running_loop().create_task(election.run(), name="leader-election-term")
            ended = asyncio.get_running_loop().create_task(self._lead_ended.wait())
            try:
                await asyncio.wait({run, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not run.done():  # `lead` ended on its own: hold the Lease no longer
                    run.cancel()
                with contextlib.suppress(asyncio.CancelledError, ApiException, *_NETWORK):
                    await run  # returns once leadership is lost
            was_leading = self.leading
            await self._end_lead()
            self._set(False)
            if was_leading and self._lead_ended.is_set():
                await self.release()  # a standby takes over now, not a lease later
            await asyncio.sleep(s.retry_period_s)

    async def _end_lead(self) -> None:
        task, self._lead_task = self._lead_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _leading(self) -> None:
        self._lead_task = asyncio.current_task()
        self.terms += 1
        self._set(True)
        log.info("event=leading lease=%s/%s identity=%s term=%d", self.settings.namespace,
                 self.settings.lease, self.identity, self.terms)
        try:
            await self._lead()
            log.error("event=lead_ended identity=%s reason=returned (a leader's work never ends "
                      "by itself): giving the Lease up", self.identity)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=lead_failed identity=%s: giving the Lease up", self.identity)
        self._lead_task = None
        self._lead_ended.set()

    async def _stopped(self) -> None:
        log.warning("event=leadership_lost lease=%s/%s identity=%s", self.settings.namespace,
                    self.settings.lease, self.identity)
        self._set(False)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if self._changed is not None:
                self._changed(leading)
