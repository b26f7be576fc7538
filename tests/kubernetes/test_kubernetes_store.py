"""The Kubernetes store (controller/store/kubernetes.py) over real HTTP, on the contract fake.

Flint's own CRDs (deploy/crds) are registered in the fake; every Store operation, the watch's
resume, bookmarks, 410, dropped and hung connections, the 409 retry, garbage collection by owner
references and a finalizer are driven through kubernetes-asyncio as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from support.flint_crds import StoreMaker, flint_crds, register_crds
from support.kubeapi.session import KubeTarget, eventually

from controller.api.finalizers import REDIS_STREAMS_FINALIZER, finalizers_for, without_finalizer
from controller.api.meta import controller_ref
from controller.api.registry import served_kinds
from controller.informer import Informer
from controller.store import logic
from controller.store.base import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    Kind,
    NotFound,
    Obj,
    StoreError,
    TooLarge,
    WatchEvent,
)
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings
from controller.store.kubernetes_watch import KubeWatch
from controller.store.retry import mutate

# Knative's groups on a real cluster belong to Knative; the watch tests use the fake's controls.
pytestmark = pytest.mark.fake_only

SVC = Kind("serving.knative.dev", "services")
CFG = Kind("serving.knative.dev", "configurations")
BROKER = Kind("eventing.knative.dev", "brokers")


def ksvc(name: str, image: str = "ghcr.io/example/hello") -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


def image_of(obj: Obj) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def with_image(obj: Obj, image: str) -> Obj:
    out = logic.copy_obj(obj)
    out["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return out


def fake_of(kube: KubeTarget) -> Any:
    assert kube.fake is not None
    return kube.fake


class Collector:
    """Reads a watch in the background into `events` (so the test can poll them)."""

    def __init__(self, it: AsyncIterator[WatchEvent]) -> None:
        self.it = it
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for ev in self.it:
                self.events.append(ev)
        except Exception as e:  # surfaced by the assertions
            self.error = e

    def names(self) -> list[tuple[str, str]]:
        return [(e.type, e.object["metadata"]["name"]) for e in self.events]

    async def wait(self, n: int, what: str = "") -> list[WatchEvent]:
        async def probe() -> int:
            if self.error is not None:
                raise self.error
            return len(self.events)

        await eventually(probe, lambda k: k >= n, what=what or f"{n} events")
        return self.events

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def collectors() -> AsyncIterator[list[Collector]]:
    made: list[Collector] = []
    yield made
    for c in made:
        await c.stop()


# -- create / get / list --


async def test_create_get_list_carry_the_api_servers_metadata(kstore: KubernetesStore, kube: KubeTarget):
    obj = ksvc("hello")
    obj["metadata"]["resourceVersion"] = "12345"  # dropped, as the Store protocol says
    created = await kstore.create(SVC, obj)
    md = created["metadata"]
    assert md["namespace"] == kube.namespace and md["generation"] == 1 and md["uid"]
    assert md["resourceVersion"] != "12345" and "uid" not in obj["metadata"]
    assert await kstore.get(SVC, kube.namespace, "hello") == created
    no_kind = {"metadata": {"generateName": "gen-"}, "spec": ksvc("x")["spec"]}
    generated = await kstore.create(SVC, no_kind)  # apiVersion and kind filled in
    assert generated["metadata"]["name"].startswith("gen-") and generated["kind"] == "Service"
    items, rv = await kstore.list(SVC, kube.namespace)
    assert [o["metadata"]["name"] for o in items] == sorted(["hello", generated["metadata"]["name"]])
    assert rv == generated["metadata"]["resourceVersion"]
    assert len((await kstore.list(SVC))[0]) == 2  # all namespaces
    later, _ = await kstore.list(SVC, kube.namespace, not_older_than=rv)
    assert len(later) == 2
    with pytest.raises(TooLarge, match="Too large resource version"):
        await kstore.list(SVC, kube.namespace, not_older_than=str(int(rv) + 1000))


async def test_errors_are_the_protocols_naming_kind_and_name(kstore: KubernetesStore, kube: KubeTarget):
    await kstore.create(SVC, ksvc("hello"))
    with pytest.raises(AlreadyExists, match='"hello" already exists') as taken:
        await kstore.create(SVC, ksvc("hello"))
    assert taken.value.kind == SVC and taken.value.name == "hello" and taken.value.code == 409
    with pytest.raises(NotFound) as missing:
        await kstore.get(SVC, kube.namespace, "nope")
    assert missing.value.kind == SVC and missing.value.name == "nope"
    with pytest.raises(BadRequest, match="name or generateName is required"):
        await kstore.create(SVC, {"spec": {}})
    wrong = ksvc("wrong")
    wrong["spec"]["traffic"] = [{"percent": "all"}]
    with pytest.raises(Invalid, match=r"spec\.traffic\[0\]\.percent") as invalid:
        await kstore.create(SVC, wrong)
    assert invalid.value.code == 422 and invalid.value.name == "wrong"
    with pytest.raises(BadRequest, match="unknown kind"):
        await kstore.get(Kind("example.com", "widgets"), kube.namespace, "w")


# -- update / patch / status / delete --


async def test_update_is_optimistic_with_a_resource_version_and_unconditional_without(
    kstore: KubernetesStore, kube: KubeTarget
):
    created = await kstore.create(SVC, ksvc("hello"))
    fresh = await kstore.update(SVC, with_image(created, "b"))
    assert fresh["metadata"]["generation"] == 2 and image_of(fresh) == "b"
    with pytest.raises(Conflict, match="the object has been modified") as stale:
        await kstore.update(SVC, with_image(created, "c"))
    assert stale.value.name == "hello"
    blind = with_image(created, "d")
    del blind["metadata"]["resourceVersion"]
    out = await kstore.update(SVC, blind)  # read, PUT under the version read
    assert image_of(out) == "d" and out["metadata"]["generation"] == 3
    labelled = logic.copy_obj(out)
    labelled["metadata"]["labels"] = {"a": "b"}
    relabelled = await kstore.update(SVC, labelled)
    assert relabelled["metadata"]["generation"] == 3  # metadata only: no new generation
    assert await kstore.update(SVC, relabelled) == relabelled  # a no-op writes nothing
    with pytest.raises(NotFound):
        await kstore.update(SVC, ksvc("missing"))


async def test_merge_patch_of_the_object_and_of_its_status(kstore: KubernetesStore, kube: KubeTarget):
    await kstore.create(SVC, ksvc("hello"))
    patched = await kstore.patch(
        SVC, kube.namespace, "hello", {"metadata": {"labels": {"team": "a"}}, "status": {"url": "x"}}
    )
    assert patched["metadata"]["labels"] == {"team": "a"} and "url" not in (patched.get("status") or {})
    status = await kstore.patch_status(SVC, kube.namespace, "hello", {"status": {"url": "http://h"}})
    assert status["status"]["url"] == "http://h" and status["metadata"]["generation"] == 1
    removed = await kstore.patch(SVC, kube.namespace, "hello", {"metadata": {"labels": {"team": None}}})
    assert not removed["metadata"].get("labels")


async def test_status_writes_replace_status_only_and_never_bump_generation(
    kstore: KubernetesStore, kube: KubeTarget
):
    created = await kstore.create(SVC, ksvc("hello"))
    attempt = with_image(created, "ignored")
    attempt["status"] = {"observedGeneration": 1, "url": "http://a"}
    out = await kstore.update_status(SVC, attempt)
    assert image_of(out) == image_of(created) and out["metadata"]["generation"] == 1
    assert out["status"] == {"observedGeneration": 1, "url": "http://a"}
    with pytest.raises(Conflict):
        await kstore.update_status(SVC, attempt)  # the old resourceVersion
    blind = {"metadata": {"name": "hello"}, "status": {"observedGeneration": 1}}
    replaced = await kstore.update_status(SVC, blind)  # read-modify-write, replacing status
    assert replaced["status"] == {"observedGeneration": 1}
    assert replaced["metadata"]["generation"] == 1
    kept = await kstore.update(SVC, {**replaced, "status": {"url": "user"}})
    assert kept["status"] == {"observedGeneration": 1}  # a user write keeps the status


async def test_delete_answers_the_object(kstore: KubernetesStore, kube: KubeTarget):
    created = await kstore.create(SVC, ksvc("hello"))
    deleted = await kstore.delete(SVC, kube.namespace, "hello")
    assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(NotFound):
        await kstore.get(SVC, kube.namespace, "hello")
    with pytest.raises(NotFound):
        await kstore.delete(SVC, kube.namespace, "hello")


async def test_a_redis_broker_finalizer_holds_its_delete_until_removed(
    kstore: KubernetesStore, kube: KubeTarget, collectors: list[Collector]
):
    broker: Obj = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "orders",
                     "annotations": {"eventing.knative.dev/broker.class": "FlintRedis"}},
    }
    broker["metadata"]["finalizers"] = finalizers_for(broker)
    assert broker["metadata"]["finalizers"] == [REDIS_STREAMS_FINALIZER]
    created = await kstore.create(BROKER, broker)
    watch = Collector(kstore.watch(BROKER, kube.namespace, since=created["metadata"]["resourceVersion"]))
    collectors.append(watch)
    marked = await kstore.delete(BROKER, kube.namespace, "orders")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
    assert (await kstore.get(BROKER, kube.namespace, "orders"))["metadata"]["deletionTimestamp"]
    assert finalizers_for(marked) == [REDIS_STREAMS_FINALIZER]  # kept, never added again

    def streams_cleaned(obj: Obj) -> Obj:
        obj["metadata"]["finalizers"] = without_finalizer(obj)
        return obj

    await mutate(kstore, BROKER, kube.namespace, "orders", streams_cleaned)
    with pytest.raises(NotFound):
        await kstore.get(BROKER, kube.namespace, "orders")
    events = await watch.wait(2)
    assert [e.type for e in events] == ["MODIFIED", "DELETED"]


async def test_children_go_with_their_owner_by_owner_references(kstore: KubernetesStore, kube: KubeTarget):
    parent = await kstore.create(SVC, ksvc("hello"))
    ref = controller_ref(parent)
    assert ref["controller"] is True and ref["blockOwnerDeletion"] is True
    child: Obj = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Configuration",
        "metadata": {"name": "hello", "ownerReferences": [ref]},
        "spec": {"template": ksvc("x")["spec"]["template"]},
    }
    created = await kstore.create(CFG, child)
    assert created["metadata"]["ownerReferences"] == [ref]
    await kstore.delete(SVC, kube.namespace, "hello")

    async def child_status() -> str:
        try:
            await kstore.get(CFG, kube.namespace, "hello")
        except NotFound:
            return "gone"
        return "present"

    await eventually(child_status, lambda s: s == "gone", what="the child collected")


# -- mutate: 409 → read again and retry --


async def test_mutate_rereads_and_retries_after_a_conflict(kstore: KubernetesStore, kube: KubeTarget):
    await kstore.create(SVC, ksvc("hello"))
    other = KubernetesStore(kube.api, served_kinds(), kstore.settings)
    calls: list[str] = []

    def add_label(obj: Obj) -> Obj:
        calls.append(obj["metadata"]["resourceVersion"])
        if len(calls) == 1:  # someone else writes between our read and our write
            raced = asyncio.get_running_loop().create_task(
                other.patch(SVC, kube.namespace, "hello", {"metadata": {"labels": {"other": "1"}}})
            )
            pending.append(raced)
        obj["metadata"].setdefault("labels", {})["mine"] = "1"
        return obj

    pending: list[asyncio.Task[Obj]] = []
    real_update = kstore.update

    async def update_after_the_race(kind: Kind, obj: Obj) -> Obj:
        for task in pending:
            await task
        return await real_update(kind, obj)

    kstore.update = update_after_the_race  # type: ignore[method-assign]
    out = await mutate(kstore, SVC, kube.namespace, "hello", add_label)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert out["metadata"]["labels"] == {"other": "1", "mine": "1"}
    assert await mutate(kstore, SVC, kube.namespace, "hello", lambda obj: None) == out


async def test_mutate_gives_up_with_the_conflict_after_its_attempts(
    kstore: KubernetesStore, kube: KubeTarget
):
    await kstore.create(SVC, ksvc("hello"))
    calls = 0

    def always_stale(obj: Obj) -> Obj:
        nonlocal calls
        calls += 1
        return obj

    async def conflicting(kind: Kind, obj: Obj) -> Obj:
        raise Conflict("the object has been modified", kind=kind, name="hello")

    kstore.update = conflicting  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        await mutate(kstore, SVC, kube.namespace, "hello", always_stale, attempts=3)
    assert calls == 3


# -- watch --


async def test_watch_lists_then_follows_and_close_ends_it(
    make_kstore: StoreMaker, kube: KubeTarget, collectors: list[Collector]
):
    kstore = await make_kstore()
    await kstore.create(SVC, ksvc("b"))
    await kstore.create(SVC, ksvc("a"))
    await kstore.create(CFG, {"metadata": {"name": "other-kind"}, "spec": {}})
    watch = Collector(kstore.watch(SVC, kube.namespace))
    collectors.append(watch)
    await watch.wait(2)
    assert watch.names() == [("ADDED", "a"), ("ADDED", "b")]
    a = await kstore.get(SVC, kube.namespace, "a")
    updated = await kstore.update(SVC, with_image(a, "x"))
    deleted = await kstore.delete(SVC, kube.namespace, "b")
    await watch.wait(4)
    assert watch.names()[2:] == [("MODIFIED", "a"), ("DELETED", "b")]
    assert [e.resource_version for e in watch.events[2:]] == [
        updated["metadata"]["resourceVersion"], deleted["metadata"]["resourceVersion"]]
    await kstore.close()
    await asyncio.wait_for(watch.task, 5)  # ends without an error
    assert watch.error is None


async def test_a_dropped_watch_resumes_with_no_event_lost_or_repeated(
    kstore: KubernetesStore, kube: KubeTarget, collectors: list[Collector]
):
    fake = fake_of(kube)
    _, rv = await kstore.list(SVC, kube.namespace)
    watch = Collector(kstore.watch(SVC, kube.namespace, since=rv))
    collectors.append(watch)
    await eventually(lambda: _value(fake.open_watches), lambda n: n == 1, what="watch open")
    for i in range(3):
        await kstore.create(SVC, ksvc(f"s{i}"))
    await watch.wait(3)
    assert fake.drop_watches() == 1
    for i in range(3, 6):
        await kstore.create(SVC, ksvc(f"s{i}"))
    assert fake.drop_watches() in (0, 1)  # again, possibly before the reconnection
    for i in range(6, 9):
        await kstore.create(SVC, ksvc(f"s{i}"))
    await watch.wait(9)
    assert watch.names() == [("ADDED", f"s{i}") for i in range(9)]
    assert fake.watch_requests >= 2


async def test_a_watch_ended_by_timeout_seconds_resumes_silently(
    make_kstore: StoreMaker, kube: KubeTarget, collectors: list[Collector]
):
    fake = fake_of(kube)
    kstore = await make_kstore(watch_timeout_s=1)
    watch = Collector(kstore.watch(SVC, kube.namespace))
    collectors.append(watch)
    for i in range(4):
        await eventually(lambda: _value(fake.watch_requests), partial(operator.lt, i), what="a new watch")
        await kstore.create(SVC, ksvc(f"s{i}"))
    await watch.wait(4)
    assert watch.names() == [("ADDED", f"s{i}") for i in range(4)]


async def test_bookmarks_move_the_resume_point_and_are_not_yielded(
    kstore: KubernetesStore, kube: KubeTarget, collectors: list[Collector]
):
    fake = fake_of(kube)
    fake.bookmark_interval = 0.05
    _, rv = await kstore.list(SVC, kube.namespace)
    it = kstore.watch(SVC, kube.namespace, since=rv)
    assert isinstance(it, KubeWatch)
    watch = Collector(it)
    collectors.append(watch)
    for i in range(3):  # other kinds move the global resourceVersion
        await kstore.create(CFG, {"metadata": {"name": f"c{i}"}, "spec": {}})
    await eventually(lambda: _value(it.resource_version), lambda v: v == str(fake.store.rv),
                     what="a bookmark's version")
    assert watch.events == []
    fake.compact()  # the bookmark's version is not older than the compaction: no 410
    fake.drop_watches()
    await eventually(lambda: _value(fake.watch_requests), lambda n: n >= 2, what="reconnected")
    await kstore.create(SVC, ksvc("after"))
    await watch.wait(1)
    assert watch.names() == [("ADDED", "after")] and watch.error is None


async def test_a_hung_watch_is_reconnected_after_the_inactivity_timeout(
    make_kstore: StoreMaker, kube: KubeTarget, collectors: list[Collector]
):
    fake = fake_of(kube)
    fake.bookmark_interval = 0.1  # a live watch is never silent for inactivity_s
    kstore = await make_kstore(inactivity_s=1.0)
    it = kstore.watch(SVC, kube.namespace)
    assert isinstance(it, KubeWatch)
    watch = Collector(it)
    collectors.append(watch)
    await eventually(lambda: _value(fake.open_watches), lambda n: n == 1, what="watch open")
    assert fake.hang_watches() == 1
    await kstore.create(SVC, ksvc("meanwhile"))  # the hung watch swallows it
    await watch.wait(1, what="the event after the reconnection")
    assert watch.names() == [("ADDED", "meanwhile")]
    assert it.connections == 2


async def test_a_watch_from_before_a_compaction_raises_gone(kstore: KubernetesStore, kube: KubeTarget):
    fake = fake_of(kube)
    _, rv = await kstore.list(SVC, kube.namespace)
    await kstore.create(SVC, ksvc("hello"))
    fake.compact()
    with pytest.raises(Gone, match="too old resource version"):
        await asyncio.wait_for(anext(kstore.watch(SVC, kube.namespace, since=rv)), 5)


async def test_a_410_while_following_raises_gone_for_the_consumer_to_relist(
    kstore: KubernetesStore, kube: KubeTarget, collectors: list[Collector]
):
    fake = fake_of(kube)
    fake.bookmark_interval = 3600  # no bookmark moves the resume point past the compaction
    _, rv = await kstore.list(SVC, kube.namespace)
    watch = Collector(kstore.watch(SVC, kube.namespace, since=rv))
    collectors.append(watch)
    await eventually(lambda: _value(fake.open_watches), lambda n: n == 1, what="watch open")
    fake.hang_watches()
    await kstore.create(SVC, ksvc("lost"))
    fake.compact()
    fake.drop_watches()
    await asyncio.wait_for(watch.task, 5)
    assert isinstance(watch.error, Gone) and watch.events == []


# -- the informer over the Kubernetes store --


async def test_the_informer_converges_on_creates_updates_deletes_and_after_a_410(
    kstore: KubernetesStore, kube: KubeTarget
):
    fake = fake_of(kube)
    fake.bookmark_interval = 3600
    await kstore.create(SVC, ksvc("before"))
    informer = Informer(kstore, SVC)
    seen: list[tuple[str, str]] = []
    informer.on_change(lambda t, obj, old: seen.append((t, obj["metadata"]["name"])))
    await informer.start()
    try:
        assert [o["metadata"]["name"] for o in informer.list()] == ["before"]

        async def cache() -> dict[str, str]:
            return {o["metadata"]["name"]: image_of(o) for o in informer.list()}

        created = await kstore.create(SVC, ksvc("a"))
        await kstore.update(SVC, with_image(created, "v2"))
        await kstore.delete(SVC, kube.namespace, "before")
        await eventually(cache, lambda c: c == {"a": "v2"}, what="create, update, delete")
        # A 410: the watch misses changes, its history is compacted, it reconnects and relists.
        await eventually(lambda: _value(fake.open_watches), lambda n: n == 1, what="watch open")
        fake.hang_watches()
        await kstore.create(SVC, ksvc("during"))
        await kstore.delete(SVC, kube.namespace, "a")
        fake.compact()
        fake.drop_watches()
        await eventually(cache, lambda c: c == {"during": "ghcr.io/example/hello"},
                         what="relisted after the 410")
        assert ("ADDED", "during") in seen and ("DELETED", "a") in seen
        await kstore.create(SVC, ksvc("after"))
        await eventually(cache, lambda c: set(c) == {"during", "after"}, what="following again")
    finally:
        await informer.stop()


# -- configuration --


async def test_an_api_server_that_does_not_answer_is_a_503_naming_it() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # loopback, nothing listens on discard
    api = client.ApiClient(configuration)
    store = KubernetesStore(api, served_kinds(), KubernetesSettings(request_timeout_s=5))
    try:
        with pytest.raises(StoreError, match=r"API server at http://127\.0\.0\.1:9 did not answer") as e:
            await store.get(SVC, "default", "hello")
        assert e.value.code == 503 and e.value.name == "hello"
    finally:
        await store.close()
        await api.close()


async def test_connect_loads_a_kubeconfig(kube: KubeTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "fake", "cluster": {"server": fake_of(kube).url}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}},
                     {"name": "other", "context": {"cluster": "nowhere", "user": "u"}}],
    }))
    store = await KubernetesStore.connect(
        served_kinds(), KubernetesSettings(kubeconfig=str(path), context="fake", namespace=kube.namespace)
    )
    try:
        await register_crds(kube.api, flint_crds())
        created = await store.create(SVC, ksvc("via-kubeconfig"))
        assert created["metadata"]["namespace"] == kube.namespace
    finally:
        await store.close()


async def _value(v: Any) -> Any:
    return v
