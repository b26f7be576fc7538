"""When the Kubernetes engine may take a revision's last pods away (`gateways_let_go`): only once
some gateway is linked and every linked one has applied a snapshot that no longer needs them."""

from __future__ import annotations

from typing import Any

from controller.reconcilers.revision_kubernetes import gateways_let_go
from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot

KEY = "default/hello-00001"


def with_revision() -> Snapshot:
    target = RevisionTarget(namespace="default", name="hello-00001", service="hello", timeout_s=300.0,
                            response_start_timeout_s=300.0, idle_timeout_s=0.0, container_concurrency=0,
                            endpoints=(Endpoint("p", "127.0.1.2", 8080),))
    return Snapshot(version=0, routes=(), revisions=(target,))


class Hub:
    def __init__(self, connected: int, acked: bool, snapshot: Snapshot) -> None:
        self._connected, self._acked, self.snapshot, self.version = connected, acked, snapshot, 7

    def connected(self) -> int:
        return self._connected

    def acked_by_all(self, version: int) -> bool:
        return self._acked and version == 7


def let_go(hub: Any, routed: bool) -> bool:
    return gateways_let_go(hub, KEY, routed)


def test_no_gateway_linked_holds_the_pods_its_last_snapshot_may_still_use() -> None:
    assert not let_go(Hub(0, True, Snapshot.empty()), routed=False)


def test_a_gateway_that_has_not_acked_holds_them() -> None:
    assert not let_go(Hub(2, False, Snapshot.empty()), routed=False)


def test_an_unrouted_revision_still_in_the_snapshot_is_held_and_let_go_once_out() -> None:
    assert not let_go(Hub(1, True, with_revision()), routed=False)
    assert let_go(Hub(1, True, Snapshot.empty()), routed=False)


def test_a_routed_revision_scaled_to_zero_goes_once_the_gateways_acked() -> None:
    assert let_go(Hub(1, True, with_revision()), routed=True)

