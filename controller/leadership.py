"""A controller replica's terms as the leader, on the Kubernetes engine: it campaigns
(`controller.leader`), writes its address where gateways and dispatchers look for the leader
(`controller.leader_endpoint`) while it leads, and switches the leader-only parts on and off.

What only the leader runs (the controller's `on_lead` / `on_standby`): the reconcilers (a
standby's informers stay warm, so a new leader resyncs from its caches at once), the autoscaler
(started afresh: no scale-down before a full stable window of reports), the gateway link and the
dispatch plan (a standby closes links with `NOT_LEADER` and answers plan polls 503), drains, and
Redis deletions. Every replica serves the API and `/healthz`, so readiness never waits for a term.

A clean stop empties the slice, then releases the Lease (a standby takes over within a retry
period); a killed leader's Lease runs out (a lease duration) and its slice is overwritten by the
next leader. Gateways keep serving their last snapshot, and dispatchers their plan, meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from kubernetes_asyncio import client

from controller.leader import LeaderElector, LeaderSettings
from controller.leader_endpoint import EndpointWriteFailed, LeaderEndpoint

__all__ = ["Leadership"]

log = logging.getLogger("flint.leader")


class Leadership:
    """Campaigns until `close`; calls `on_lead()` when a term starts and `on_standby()` when it
    ends (lost, or at `close`)."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderSettings,
        advertised: tuple[str, int],
        *,
        on_lead: Callable[[], None],
        on_standby: Callable[[], Awaitable[None]],
    ) -> None:
        self.elector = LeaderElector(api, settings, self._lead, changed=self._changed)
        host, port = advertised
        self.endpoint = LeaderEndpoint(
            api, settings.namespace, host, port, self.elector.identity,
            pod=os.environ.get("HOSTNAME", ""), timeout_s=settings.retry_period_s)
        self._retry_s = settings.retry_period_s
        self._on_lead = on_lead
        self._on_standby = on_standby
        self._standbys: set[asyncio.Task[None]] = set()
        self._stood_down = False
        """`close` already ran `on_standby` for the term that is ending."""

    @property
    def leading(self) -> bool:
        return self.elector.leading

    @property
    def identity(self) -> str:
        return self.elector.identity

    def start(self) -> None:
        self.elector.start()

    async def close(self) -> None:
        """Stop leading and campaigning: the slice emptied, the leader's work stopped
        (`on_standby`, reconciles under way cancelled), and only then the Lease released, so a
        standby that takes it at once never works next to us."""
        if self.leading:
            with contextlib.suppress(EndpointWriteFailed):
                await self.endpoint.withdraw()
            self._stood_down = True  # the term's end below must not stand us down twice
            await self._stand_by()
        await self.elector.close()
        if self._standbys:
            await asyncio.gather(*self._standbys, return_exceptions=True)

    async def _lead(self) -> None:
        """The term's own work: the leader's address published (again until it is), then hold."""
        while True:
            try:
                await self.endpoint.publish()
                break
            except EndpointWriteFailed as exc:
                log.warning("event=leader_endpoint_failed error=%s retry_s=%.1f", exc, self._retry_s)
                await asyncio.sleep(self._retry_s)
        await asyncio.Event().wait()  # until the term ends (the elector cancels this task)

    def _changed(self, leading: bool) -> None:
        if leading:
            log.info("event=leader_term_started identity=%s", self.identity)
            self._stood_down = False
            self._on_lead()
            return
        log.info("event=leader_term_ended identity=%s", self.identity)
        if self._stood_down:
            return
        task = asyncio.get_running_loop().create_task(self._stand_by(), name="leader-standby")
        self._standbys.add(task)
        task.add_done_callback(self._standbys.discard)

    async def _stand_by(self) -> None:
        try:
            await self._on_standby()
        except Exception:
            log.exception("event=standby_failed identity=%s", self.identity)
