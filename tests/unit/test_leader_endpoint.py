"""The leader's Service and EndpointSlice (`controller.leader_endpoint`): what gateways and
dispatchers resolve `flint-controller-leader` to."""

from __future__ import annotations

import pytest

from controller.leader_endpoint import (
    IDENTITY_ANNOTATION,
    LEADER_SERVICE,
    LeaderEndpoint,
    leader_service,
    leader_slice,
)


def test_the_service_selects_nothing_so_its_endpoints_are_the_slice_the_leader_writes() -> None:
    svc = leader_service("flint-system", 8081)
    assert svc["metadata"]["name"] == LEADER_SERVICE
    assert "selector" not in svc["spec"]
    assert svc["spec"]["ports"] == [{"name": "link", "port": 8081, "targetPort": 8081, "protocol": "TCP"}]


def test_the_slice_names_the_leader_belongs_to_the_service_and_to_flint() -> None:
    s = leader_slice("flint-system", "10.1.2.3", 8081, "pod-a_1234", pod="pod-a")
    assert s["metadata"]["labels"] == {"kubernetes.io/service-name": LEADER_SERVICE,
                                       "endpointslice.kubernetes.io/managed-by": "flint.dev/controller"}
    assert s["metadata"]["annotations"] == {IDENTITY_ANNOTATION: "pod-a_1234"}
    assert s["addressType"] == "IPv4"
    assert s["endpoints"] == [{"addresses": ["10.1.2.3"],
                               "conditions": {"ready": True, "serving": True, "terminating": False},
                               "targetRef": {"kind": "Pod", "name": "pod-a", "namespace": "flint-system"}}]
    assert s["ports"] == [{"name": "link", "port": 8081, "protocol": "TCP"}]


def test_an_ipv6_leader_gets_an_ipv6_slice_and_a_withdrawn_one_has_no_endpoint() -> None:
    assert leader_slice("ns", "fd00::5", 8081, "x")["addressType"] == "IPv6"
    assert leader_slice("ns", "", 8081, "x")["endpoints"] == []


def test_an_advertised_address_must_be_an_ip() -> None:
    with pytest.raises(ValueError):
        LeaderEndpoint(None, "ns", "flint-controller.local", 8081, "x")  # type: ignore[arg-type]
