"""The dispatcher's admin token on a cluster: the first controller replica makes Secret
`flint-dispatcher-admin`, any later one reads the same token (what its dead-letter proxy sends),
and a Secret without a usable token is refused with what to do."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget

from controller.admin_secret import ADMIN_SECRET, ADMIN_SECRET_KEY, admin_token


async def test_made_once_then_read_by_every_replica(kube: KubeTarget) -> None:
    first = await admin_token(kube.api, kube.namespace)
    second = await admin_token(kube.api, kube.namespace)
    assert first.reveal() == second.reveal() and len(first.reveal()) >= 32
    stored = await client.CoreV1Api(kube.api).read_namespaced_secret(ADMIN_SECRET, kube.namespace)
    assert base64.b64decode(stored.data[ADMIN_SECRET_KEY]).decode() == first.reveal()
    assert first.reveal() not in repr(first)


async def test_a_secret_without_a_token_is_refused_saying_what_to_do(kube: KubeTarget) -> None:
    core: Any = client.CoreV1Api(kube.api)
    await core.create_namespaced_secret(kube.namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": ADMIN_SECRET},
        "data": {"other": base64.b64encode(b"x").decode()}})
    with pytest.raises(RuntimeError, match="has no usable key 'token': delete it"):
        await admin_token(kube.api, kube.namespace)
