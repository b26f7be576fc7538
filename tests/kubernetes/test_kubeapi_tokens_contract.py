"""The service-account token contract Flint's link relies on: TokenRequest and TokenReview.

Like test_kubeapi_contract.py, these run against the fake by default and unchanged against a real
cluster with FLINT_KUBECONFIG set (its user needs to create serviceaccounts/token and
tokenreviews); `fake_only` tests use the fake's controls (its clock).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget

AUDIENCE = "flint-controller"


def untyped(api: Any) -> Any:
    return api


async def make_account(kube: KubeTarget, name: str) -> Any:
    core = untyped(client.CoreV1Api(kube.api))
    return await core.create_namespaced_service_account(kube.namespace, {"metadata": {"name": name}})


async def request_token(kube: KubeTarget, name: str, spec: dict[str, Any]) -> Any:
    core = untyped(client.CoreV1Api(kube.api))
    return await core.create_namespaced_service_account_token(
        name, kube.namespace,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})


async def review(kube: KubeTarget, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    """The TokenReview's status as JSON (the generated model renames the fields)."""
    auth = untyped(client.AuthenticationV1Api(kube.api))
    spec: dict[str, Any] = {"token": token}
    if audiences is not None:
        spec["audiences"] = audiences
    response = await auth.create_token_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        _preload_content=False)
    try:
        assert response.status == 201, response.status
        status: dict[str, Any] = orjson.loads(await response.read())["status"]
    finally:
        response.release()
    return status


async def test_a_token_request_issues_a_token_with_its_audience_and_expiry(kube: KubeTarget):
    account = await make_account(kube, "flint-gateway")
    before = datetime.now(UTC).replace(microsecond=0)
    issued = await request_token(kube, "flint-gateway", {"audiences": [AUDIENCE], "expirationSeconds": 600})
    assert issued.status.token and issued.spec.audiences == [AUDIENCE]
    expires = issued.status.expiration_timestamp
    assert before + timedelta(seconds=590) <= expires <= datetime.now(UTC) + timedelta(seconds=610)
    status = await review(kube, issued.status.token, [AUDIENCE])
    assert status["authenticated"] is True and status["audiences"] == [AUDIENCE]
    user = status["user"]
    assert user["username"] == f"system:serviceaccount:{kube.namespace}:flint-gateway"
    assert user["uid"] == account.metadata.uid
    assert {"system:serviceaccounts", f"system:serviceaccounts:{kube.namespace}",
            "system:authenticated"} <= set(user["groups"])


async def test_a_token_request_defaults_to_an_hour_and_the_api_servers_audience(kube: KubeTarget):
    await make_account(kube, "sa")
    issued = await request_token(kube, "sa", {})
    assert issued.spec.expiration_seconds == 3600 and issued.spec.audiences
    # a review naming no audience is checked against the API server's own
    status = await review(kube, issued.status.token)
    assert status["authenticated"] is True and status["audiences"] == issued.spec.audiences
    # ... which is not ours
    refused = await review(kube, issued.status.token, [AUDIENCE])
    assert not refused.get("authenticated") and refused["error"]


async def test_the_audiences_of_a_review_are_the_intersection(kube: KubeTarget):
    await make_account(kube, "sa")
    issued = await request_token(kube, "sa", {"audiences": [AUDIENCE, "other"]})
    status = await review(kube, issued.status.token, [AUDIENCE, "third"])
    assert status["authenticated"] is True and status["audiences"] == [AUDIENCE]


async def test_a_token_request_needs_an_existing_account_and_ten_minutes(kube: KubeTarget):
    with pytest.raises(client.ApiException) as missing:
        await request_token(kube, "nobody", {"audiences": [AUDIENCE]})
    assert missing.value.status == 404
    assert orjson.loads(missing.value.body or b"{}")["message"] == 'serviceaccounts "nobody" not found'
    await make_account(kube, "sa")
    with pytest.raises(client.ApiException) as short:
        await request_token(kube, "sa", {"audiences": [AUDIENCE], "expirationSeconds": 10})
    body = orjson.loads(short.value.body or b"{}")
    assert short.value.status == 422 and body["reason"] == "Invalid"
    assert "may not specify a duration less than 10 minutes" in body["message"]
    assert body["details"]["causes"][0]["field"] == "spec.expirationSeconds"


async def test_a_review_refuses_a_wrong_audience_an_unknown_token_and_a_deleted_account(kube: KubeTarget):
    await make_account(kube, "sa")
    issued = await request_token(kube, "sa", {"audiences": ["someone-else"]})
    wrong = await review(kube, issued.status.token, [AUDIENCE])
    assert not wrong.get("authenticated") and wrong["error"] and not wrong.get("audiences")
    token = issued.status.token
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (forged, "not-a-token"):
        status = await review(kube, bad, [AUDIENCE])
        assert not status.get("authenticated") and status["error"]
    ours = await request_token(kube, "sa", {"audiences": [AUDIENCE]})
    assert (await review(kube, ours.status.token, [AUDIENCE]))["authenticated"] is True
    core = untyped(client.CoreV1Api(kube.api))
    await core.delete_namespaced_service_account("sa", kube.namespace)
    gone = await review(kube, ours.status.token, [AUDIENCE])
    assert not gone.get("authenticated") and gone["error"]


async def test_service_accounts_are_listed_in_discovery_with_their_token_subresource(kube: KubeTarget):
    core = await untyped(client.CoreV1Api(kube.api)).get_api_resources()
    names = {r.name: r for r in core.resources}
    assert names["serviceaccounts"].namespaced and "sa" in (names["serviceaccounts"].short_names or [])
    assert names["serviceaccounts/token"].kind == "TokenRequest"
    assert names["serviceaccounts/token"].verbs == ["create"]
    auth = await untyped(client.AuthenticationV1Api(kube.api)).get_api_resources()
    reviews = {r.name: r for r in auth.resources}["tokenreviews"]
    assert reviews.verbs == ["create"] and not reviews.namespaced


@pytest.mark.fake_only
async def test_a_token_expires_by_the_fakes_clock(kube: KubeTarget):
    assert kube.fake is not None
    await make_account(kube, "sa")
    issued = await request_token(kube, "sa", {"audiences": [AUDIENCE], "expirationSeconds": 600})
    kube.fake.advance_clock(599)
    assert (await review(kube, issued.status.token, [AUDIENCE]))["authenticated"] is True
    kube.fake.advance_clock(1)
    expired = await review(kube, issued.status.token, [AUDIENCE])
    assert not expired.get("authenticated") and "expired" in expired["error"]
