"""The controllers-and-kubelet stand-in (tests/support/kubelet) over the contract fake: Deployments
become Pods that run the test apps on their own loopback IPs, Services get EndpointSlices."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget, eventually
from support.kubelet import Kubelet, KubeletSettings

pytestmark = pytest.mark.fake_only  # on a real cluster the real kubelet does this

SETTINGS = KubeletSettings(
    probe_period_s=0.05,
    grace_period_s=3.0,
    shutdown_grace_s=0.5,
    crash_backoff_s=0.1,
    crash_backoff_max_s=0.4,
    image_backoff_s=0.2,
    resync_s=0.1,
)
ECHO = "flint.test/apps/echo"


@pytest.fixture
async def kubelet(kube: KubeTarget) -> AsyncIterator[Kubelet]:
    k = Kubelet(kube.api, namespace=kube.namespace, settings=SETTINGS)
    await k.start()
    try:
        yield k
    finally:
        pids = k.pids()
        await k.stop()
        assert k.pids() == []
        for pid in pids:  # reaped, not only signalled
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def deployment(name: str, replicas: int = 2, image: str = ECHO, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}],
                         **container}
                    ],
                },
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{name}-private", "labels": {"owner": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


class Api:
    """The typed kubernetes-asyncio APIs a test uses, bound to its namespace."""

    def __init__(self, kube: KubeTarget) -> None:
        self.ns = kube.namespace
        self.apps: Any = client.AppsV1Api(kube.api)  # the stubs want models; dicts go on the wire
        self.core: Any = client.CoreV1Api(kube.api)
        self.discovery: Any = client.DiscoveryV1Api(kube.api)

    async def pods(self, app: str) -> list[Any]:
        return list((await self.core.list_namespaced_pod(self.ns, label_selector=f"app={app}")).items)

    async def endpoints(self, svc: str) -> list[Any]:
        slices = await self.discovery.list_namespaced_endpoint_slice(
            self.ns, label_selector=f"kubernetes.io/service-name={svc}"
        )
        return [e for s in slices.items for e in s.endpoints or []]

    async def readiness(self, svc: str) -> list[bool]:
        return [bool(e.conditions.ready) for e in await self.endpoints(svc)]

    async def deployment(self, name: str) -> Any:
        return await self.apps.read_namespaced_deployment(name, self.ns)


def ready(pod: Any) -> bool:
    return pod.status is not None and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def all_ready(n: int) -> Any:
    return lambda pods: len(pods) == n and all(ready(p) and p.status.pod_ip for p in pods)


async def get(ip: str, port: int = 8080, path: str = "/") -> tuple[int, Any]:
    """GET it; (0, error) when nothing answers."""
    try:
        async with aiohttp.ClientSession() as http, http.get(
            f"http://{ip}:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            text = await r.text()
    except aiohttp.ClientConnectionError as e:
        return 0, e
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


async def answer(ip: str, port: int = 8080) -> Any:
    """What the app at ip:port answers, once it listens (Ready comes when its process starts, as
    with a kubelet and no readinessProbe, which may be before it binds)."""
    _, body = await eventually(lambda: get(ip, port), lambda r: r[0] == 200, what=f"{ip}:{port} answering")
    return body


async def refused(ip: str, port: int = 8080) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_a_deployment_runs_ready_pods_that_answer_on_their_own_ips(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    body = deployment("web", env=[{"name": "TARGET", "value": "hello"}])
    await api.apps.create_namespaced_deployment(api.ns, body)
    pods = await eventually(lambda: api.pods("web"), all_ready(2), what="2 ready pods")
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.0.1.") for ip in ips)
    dep = await api.deployment("web")
    for pod in pods:
        assert pod.status.phase == "Running" and pod.status.host_ip == "127.0.0.1"
        assert pod.spec.node_name == SETTINGS.node_name
        ref = pod.metadata.owner_references[0]
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Deployment", "web", dep.metadata.uid, True)
        h = pod.metadata.labels["pod-template-hash"]
        assert pod.metadata.name.startswith(f"web-{h}-") and pod.metadata.labels["app"] == "web"
        (cs,) = pod.status.container_statuses
        assert cs.ready and cs.started and cs.restart_count == 0 and cs.state.running.started_at
        types = {c.type: c.status for c in pod.status.conditions}
        assert types == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
                         "Ready": "True", "PodReadyToStartContainers": "True"}
        body = await answer(pod.status.pod_ip)
        assert body["port"] == "8080" and body["env"]["TARGET"] == "hello"
    dep = await eventually(lambda: api.deployment("web"), lambda d: (d.status.ready_replicas or 0) == 2)
    assert (dep.status.replicas, dep.status.available_replicas, dep.status.updated_replicas) == (2, 2, 2)
    assert dep.status.observed_generation == dep.metadata.generation
    conditions = {c.type: (c.status, c.reason) for c in dep.status.conditions}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"),
                          "Progressing": ("True", "NewReplicaSetAvailable")}
    assert len(kubelet.pids()) == 2


async def test_endpoints_follow_scale_to_zero_with_prestop_and_back(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    pre_stop = {"preStop": {"exec": {"command": ["sleep", "0.5"]}}}
    await api.apps.create_namespaced_deployment(api.ns, deployment("web", lifecycle=pre_stop))
    await api.core.create_namespaced_service(api.ns, service("web"))
    pods = await eventually(lambda: api.pods("web"), all_ready(2), what="2 ready pods")
    eps = await eventually(lambda: api.endpoints("web-private"),
                           lambda eps: len(eps) == 2 and all(e.conditions.ready for e in eps))
    assert {e.addresses[0] for e in eps} == {p.status.pod_ip for p in pods}
    for pod in pods:
        await answer(pod.status.pod_ip)
    assert {e.target_ref.name for e in eps} == {p.metadata.name for p in pods}
    assert all(e.node_name == SETTINGS.node_name and e.conditions.serving for e in eps)
    (slice_,) = (await api.discovery.list_namespaced_endpoint_slice(api.ns)).items
    assert slice_.address_type == "IPv4" and slice_.metadata.name.startswith("web-private-")
    assert [(p.name, p.port, p.protocol) for p in slice_.ports] == [("http", 8080, "TCP")]
    assert slice_.metadata.labels == {
        "owner": "web",
        "kubernetes.io/service-name": "web-private",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert slice_.metadata.owner_references[0].kind == "Service"

    await api.apps.patch_namespaced_deployment_scale("web", api.ns, {"spec": {"replicas": 0}})
    eps = await eventually(
        lambda: api.endpoints("web-private"),
        lambda eps: len(eps) == 2 and all(e.conditions.terminating for e in eps),
        what="terminating endpoints",
    )
    assert all(e.conditions.serving and not e.conditions.ready for e in eps)
    for ip in (p.status.pod_ip for p in pods):  # preStop runs: the processes still answer
        assert (await get(ip))[0] == 200
    await eventually(lambda: api.endpoints("web-private"), lambda eps: eps == [], what="no endpoints")
    await eventually(lambda: api.pods("web"), lambda pods: pods == [], what="pods deleted")
    assert kubelet.pids() == []
    for pod in pods:
        assert await refused(pod.status.pod_ip)
    dep = await eventually(lambda: api.deployment("web"), lambda d: d.status.replicas == 0)
    assert not dep.status.ready_replicas

    await api.apps.patch_namespaced_deployment_scale("web", api.ns, {"spec": {"replicas": 1}})
    (pod,) = await eventually(lambda: api.pods("web"), all_ready(1), what="1 ready pod")
    await eventually(lambda: api.endpoints("web-private"),
                     lambda eps: [e.conditions.ready for e in eps] == [True])
    await answer(pod.status.pod_ip)


async def test_a_template_change_rolls_with_a_ready_endpoint_throughout(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    await api.apps.create_namespaced_deployment(api.ns, deployment("web"))
    await api.core.create_namespaced_service(api.ns, service("web"))
    before = await eventually(lambda: api.pods("web"), all_ready(2), what="2 ready pods")
    await eventually(lambda: api.endpoints("web-private"),
                     lambda eps: sum(bool(e.conditions.ready) for e in eps) == 2)
    fewest = 2
    patch = {"spec": {"template": {"metadata": {"labels": {"app": "web", "version": "2"}}}}}
    await api.apps.patch_namespaced_deployment("web", api.ns, patch)
    old_names = {p.metadata.name for p in before}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        eps = await api.endpoints("web-private")
        ready_eps = [e for e in eps if e.conditions.ready]
        fewest = min(fewest, len(ready_eps))
        names = {e.target_ref.name for e in eps}
        if len(ready_eps) == 2 and len(eps) == 2 and not names & old_names:
            break
        assert loop.time() < deadline, f"roll not done: {eps}"
        await asyncio.sleep(0.01)
    assert fewest >= 1
    after = await eventually(lambda: api.pods("web"), all_ready(2))
    assert all(p.metadata.labels.get("version") == "2" for p in after)
    dep = await eventually(lambda: api.deployment("web"),
                           lambda d: d.status.updated_replicas == 2 and d.status.replicas == 2)
    assert dep.status.observed_generation == dep.metadata.generation == 2


async def test_an_unknown_image_is_err_image_pull_then_back_off(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    body = deployment("bad", replicas=1, image="flint.test/apps/no-such-app")
    body["spec"]["progressDeadlineSeconds"] = 1
    await api.apps.create_namespaced_deployment(api.ns, body)

    def waiting(reason: str) -> Any:
        def check(pods: list[Any]) -> bool:
            statuses: list[Any] = (pods[0].status.container_statuses or []) if pods and pods[0].status else []
            return bool(statuses) and statuses[0].state.waiting is not None and (
                statuses[0].state.waiting.reason == reason)
        return check

    (pod,) = await eventually(lambda: api.pods("bad"), waiting("ErrImagePull"), what="ErrImagePull")
    message = pod.status.container_statuses[0].state.waiting.message
    assert 'failed to pull and unpack image "flint.test/apps/no-such-app"' in message
    assert message.endswith("not found")
    assert pod.status.phase == "Pending" and not ready(pod)
    (pod,) = await eventually(lambda: api.pods("bad"), waiting("ImagePullBackOff"), what="ImagePullBackOff")
    assert pod.status.container_statuses[0].state.waiting.message == (
        'Back-off pulling image "flint.test/apps/no-such-app"')
    assert kubelet.pids() == []
    dep = await eventually(
        lambda: api.deployment("bad"),
        lambda d: any(
            c.reason == "ProgressDeadlineExceeded" for c in (d.status.conditions if d.status else None) or []
        ),
        what="ProgressDeadlineExceeded",
    )
    progressing = next(c for c in dep.status.conditions if c.type == "Progressing")
    assert progressing.status == "False" and "has timed out progressing" in progressing.message


async def test_a_crashing_container_goes_into_crash_loop_back_off(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    await api.apps.create_namespaced_deployment(api.ns, deployment("crash", 1, "flint.test/apps/crasher"))

    def crash_looping(pods: list[Any]) -> bool:
        cs = (pods[0].status.container_statuses or [None])[0] if pods and pods[0].status else None
        return bool(cs and cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff"
                    and cs.restart_count >= 1)

    (pod,) = await eventually(lambda: api.pods("crash"), crash_looping, what="CrashLoopBackOff")
    cs = pod.status.container_statuses[0]
    assert (cs.last_state.terminated.exit_code, cs.last_state.terminated.reason) == (3, "Error")
    assert "back-off" in cs.state.waiting.message and not cs.ready and not cs.started and not ready(pod)
    assert pod.status.phase == "Running"  # restartPolicy Always: it keeps being restarted
    first = cs.restart_count
    await eventually(lambda: api.pods("crash"),
                     lambda pods: pods[0].status.container_statuses[0].restart_count >= first + 2,
                     what="more restarts")


async def test_a_failing_readiness_probe_keeps_the_endpoint_unready(
    kube: KubeTarget, kubelet: Kubelet, tmp_path: Path
):
    api = Api(kube)
    (tmp_path / "unready").touch()
    body = deployment(
        "probed", replicas=1, command=["python3", "../httpapp.py"],
        env=[{"name": "CONTROL_DIR", "value": str(tmp_path)}],
        readinessProbe={"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1,
                        "failureThreshold": 1},
    )
    await api.apps.create_namespaced_deployment(api.ns, body)
    await api.core.create_namespaced_service(api.ns, service("probed"))
    (pod,) = await eventually(
        lambda: api.pods("probed"),
        lambda pods: len(pods) == 1 and pods[0].status is not None
        and pods[0].status.container_statuses is not None
        and pods[0].status.container_statuses[0].state.running is not None,
        what="a running container",
    )
    eps = await eventually(lambda: api.endpoints("probed-private"), lambda eps: len(eps) == 1)
    (pod,) = await api.pods("probed")
    assert not ready(pod) and pod.status.phase == "Running"
    assert pod.status.container_statuses[0].started and not pod.status.container_statuses[0].ready
    assert pod.status.container_statuses[0].state.running is not None
    ready_cond = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready_cond.reason == "ContainersNotReady"
    assert [e.conditions.ready for e in eps] == [False]
    (tmp_path / "unready").unlink()  # the probe passes: Ready, and so is the endpoint
    await eventually(lambda: api.readiness("probed-private"), lambda flags: flags == [True])
    (tmp_path / "unready").touch()
    await eventually(lambda: api.readiness("probed-private"), lambda flags: flags == [False])


async def test_the_pod_env_and_a_failing_liveness_probe_restarting_the_container(
    kube: KubeTarget, kubelet: Kubelet, tmp_path: Path
):
    api = Api(kube)
    body = deployment(
        "live", replicas=1, command=["python3", "../httpapp.py"],
        env=[{"name": "CONTROL_DIR", "value": str(tmp_path)},
             {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        # without a delay a liveness probe this fast kills the app before it listens (startupProbe's job)
        livenessProbe={"httpGet": {"path": "/live", "port": 8080}, "failureThreshold": 2,
                       "initialDelaySeconds": 2},
    )
    await api.apps.create_namespaced_deployment(api.ns, body)
    (pod,) = await eventually(lambda: api.pods("live"), all_ready(1), what="a ready pod")
    await answer(pod.status.pod_ip)
    _, env = await get(pod.status.pod_ip, path="/env")  # what a downward-API env would give
    assert (env["POD_IP"], env["POD_NAME"], env["POD_NAMESPACE"], env["PORT"], env["MY_NODE"]) == (
        pod.status.pod_ip, pod.metadata.name, api.ns, "8080", SETTINGS.node_name)
    (tmp_path / "dead").touch()
    (pod,) = await eventually(
        lambda: api.pods("live"),
        lambda pods: pods[0].status.container_statuses[0].restart_count >= 1,
        what="a restart",
    )
    assert pod.status.container_statuses[0].last_state.terminated is not None


async def test_deleting_the_deployment_deletes_its_pods_and_processes(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    await api.apps.create_namespaced_deployment(api.ns, deployment("web"))
    pods = await eventually(lambda: api.pods("web"), all_ready(2), what="2 ready pods")
    pids = list(kubelet.pids())
    assert len(pids) == 2
    await api.apps.delete_namespaced_deployment("web", api.ns)
    await eventually(lambda: api.pods("web"), lambda pods: pods == [], what="pods collected")
    assert kubelet.pids() == []
    for pod in pods:
        assert await refused(pod.status.pod_ip)


async def test_a_container_that_ignores_sigterm_is_killed_after_its_grace(kube: KubeTarget, kubelet: Kubelet):
    api = Api(kube)
    body = deployment("stubborn", replicas=1, command=["python3", "../httpapp.py", "--ignore-term"])
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    await api.apps.create_namespaced_deployment(api.ns, body)
    (pod,) = await eventually(lambda: api.pods("stubborn"), all_ready(1))
    await answer(pod.status.pod_ip)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await api.core.delete_namespaced_pod(pod.metadata.name, api.ns)
    terminating = await api.core.read_namespaced_pod(pod.metadata.name, api.ns)
    assert terminating.metadata.deletion_grace_period_seconds == 1
    await eventually(
        lambda: api.pods("stubborn"),
        lambda pods: pod.metadata.name not in {p.metadata.name for p in pods},
        what="the pod gone",
    )
    assert loop.time() - started >= 0.9  # SIGTERM was ignored: it took the SIGKILL at the grace's end
    assert await refused(pod.status.pod_ip)


async def test_an_exec_pre_stop_hook_runs_in_the_container_env_before_sigterm(
    kube: KubeTarget, kubelet: Kubelet, tmp_path: Path
):
    api = Api(kube)
    mark = tmp_path / "pre-stop"
    hook = {"preStop": {"exec": {"command": ["/bin/sh", "-c", 'echo "$POD_NAME" > "$MARK"']}}}
    body = deployment("hooked", replicas=1, lifecycle=hook, env=[{"name": "MARK", "value": str(mark)}])
    await api.apps.create_namespaced_deployment(api.ns, body)
    (pod,) = await eventually(lambda: api.pods("hooked"), all_ready(1))
    await api.apps.patch_namespaced_deployment_scale("hooked", api.ns, {"spec": {"replicas": 0}})
    await eventually(lambda: api.pods("hooked"), lambda pods: pods == [], what="the pod gone")
    assert mark.read_text().strip() == pod.metadata.name


async def test_stopping_the_stand_in_leaves_no_process(kube: KubeTarget):
    api = Api(kube)
    async with Kubelet(kube.api, settings=SETTINGS) as k:  # every namespace
        await api.apps.create_namespaced_deployment(api.ns, deployment("web", 3))
        pods = await eventually(lambda: api.pods("web"), all_ready(3), what="3 ready pods")
        pids = k.pids()
        assert len(pids) == 3
    assert k.pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for pod in pods:
        assert await refused(pod.status.pod_ip)


async def test_a_replacement_pod_gets_another_ip_while_the_old_one_terminates(
    kube: KubeTarget, kubelet: Kubelet
):
    api = Api(kube)
    pre_stop = {"preStop": {"sleep": {"seconds": 1}}}  # the old Pod keeps its IP a while
    await api.apps.create_namespaced_deployment(api.ns, deployment("web", 1, lifecycle=pre_stop))
    (first,) = await eventually(lambda: api.pods("web"), all_ready(1))
    await api.core.delete_namespaced_pod(first.metadata.name, api.ns)  # replaced at once: a new IP
    (second,) = await eventually(
        lambda: api.pods("web"),
        lambda pods: len(pods) == 1 and pods[0].metadata.name != first.metadata.name and all_ready(1)(pods),
    )
    assert second.status.pod_ip != first.status.pod_ip
    await eventually(lambda: api.pods("web"), lambda pods: len(pods) == 1, what="the old pod gone")
    # that the freed IP is taken again is test_kubelet_pieces' (another test run may take it first)
