"""deploy/: the base and each overlay render with kustomize, every object is valid against its
kind's Kubernetes schema offline, the Dockerfile passes hadolint, every Flint container is locked
down with requests and limits, and every RBAC rule says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.webhook.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30.0"
TARGETS = ["deploy", "deploy/overlays/nodeport", "deploy/overlays/redis"]


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(ROOT / target)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_is_valid_for_its_kind(target: str) -> None:
    objs = render(target)
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    dep = next(o for o in render("deploy") if o["kind"] == "Deployment")
    dep["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "warning",
                           str(ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _pods(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_locked_down_with_requests_and_limits(target: str) -> None:
    for pod in _pods(render(target)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod.get("initContainers", []) + pod["containers"]:
            for k in ("requests", "limits"):
                assert set(c["resources"][k]) >= {"cpu", "memory"}, c["name"]
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_every_rbac_rule_says_why() -> None:
    for path in (ROOT / "deploy" / "flint").glob("rbac-*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("- apiGroups:"):
                j = i - 1
                while j >= 0 and lines[j].startswith("#") and not lines[j].startswith("# why:"):
                    j -= 1
                assert j >= 0 and lines[j].startswith("# why:"), f"{path.name}:{i + 1} has no `# why:`"


def test_exposed_ports_are_the_flint_containers_ports() -> None:
    exposed = {int(p) for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
               if line.startswith("EXPOSE") for p in line.split()[1:]}
    ports = {p["containerPort"] for pod in _pods(render("deploy")) for c in pod["containers"]
             if c["image"].startswith("flint") for p in c.get("ports", [])}
    assert exposed == ports


def _flint_args(target: str, pod_ip: str) -> dict[str, list[str]]:
    """Each Flint container's `python -m` arguments in `target`, `$(VAR)` expanded as the kubelet
    does from the downward API."""
    env = {"POD_IP": pod_ip, "POD_NAMESPACE": "flint-system"}
    out: dict[str, list[str]] = {}
    for pod in _pods(render(target)):
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c["image"].startswith("flint"):
                args = [str(a) for a in c["args"]]
                for var, value in env.items():
                    args = [a.replace(f"$({var})", value) for a in args]
                out[c["name"]] = args
    return out


@pytest.mark.parametrize("pod_ip", ["10.1.2.3", "fd00::5"])  # single-stack IPv4 and IPv6 clusters
@pytest.mark.parametrize("target", TARGETS)
def test_every_flint_container_s_arguments_are_what_its_parser_takes(target: str, pod_ip: str) -> None:
    from controller.__main__ import settings_from_argv
    from controller.eventing.__main__ import build_parser as dispatcher_parser
    from gateway.server import build_parser as gateway_parser
    from gateway.server import settings_from_args

    args = _flint_args(target, pod_ip)
    assert {"controller", "gateway", "dispatcher", "owner-token"} <= set(args)
    module, *rest = args["controller"]
    assert module == "controller"
    controller, _ = settings_from_argv(rest)
    assert controller.engine == "kubernetes" and controller.webhook == WebhookSettings(8444, pod_ip)
    assert controller.cluster_tls.namespace == "flint-system" == controller.leader.namespace
    assert controller.advertise == (pod_ip, 8443) and (pod_ip, 8443) in controller.api_listen
    module, *rest = args["gateway"]
    assert module == "gateway"
    gateway = settings_from_args(gateway_parser().parse_args(rest))
    assert (pod_ip, 8080) in gateway.listen and gateway.probe_address == (pod_ip, 8081)
    assert gateway.peer_address == (pod_ip, 8090)
    assert gateway.link_token_file is not None and gateway.controller_ca is not None
    module, *rest = args["dispatcher"]
    assert module == "controller.eventing"
    dispatcher = dispatcher_parser().parse_args(rest)
    assert dispatcher.admin_listen == [pod_ip]
    assert str(dispatcher.token_file) == "/etc/flint/dispatcher-admin/token"
    assert args["owner-token"][0] == "flint_common.owner_token"


def test_the_dispatcher_mounts_the_admin_secret_the_controller_makes() -> None:
    from controller.admin_secret import ADMIN_SECRET, ADMIN_SECRET_KEY

    objs = render("deploy")
    dispatcher = next(o for o in objs
                      if o["kind"] == "Deployment" and o["metadata"]["name"] == "flint-dispatcher")
    pod = dispatcher["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == ADMIN_SECRET)
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert f"{mount['mountPath']}/{ADMIN_SECRET_KEY}" in pod["containers"][0]["args"]
    assert not volume["secret"].get("optional")  # the pod waits for the controller to make it


def _rules(kind: str, name: str) -> list[dict[str, Any]]:
    objs = render("deploy")
    rules: list[dict[str, Any]] = next(
        o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)["rules"]
    return rules


def _allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str,
            name: str | None = None) -> bool:
    return any(group in r["apiGroups"] and (resource in r["resources"] or "*" in r["resources"])
               and verb in r["verbs"] and (not r.get("resourceNames") or name in r["resourceNames"])
               for r in rules)


def test_rbac_on_flint_s_own_secrets_and_configmap_is_by_name() -> None:
    from controller.admin_secret import ADMIN_SECRET
    from controller.cluster_tls.settings import CA_CONFIGMAP, CERTS_SECRET

    role = _rules("Role", "flint-controller")
    for verb in ("get", "update"):
        assert _allows(role, "", "secrets", verb, CERTS_SECRET)
        assert _allows(role, "", "configmaps", verb, CA_CONFIGMAP)
    assert _allows(role, "", "secrets", "get", ADMIN_SECRET) and _allows(role, "", "secrets", "create")
    assert not _allows(role, "", "secrets", "update", ADMIN_SECRET)  # made once, never rewritten
    for verb in ("list", "watch"):  # the keeper's watch names its Secret (fieldSelector)
        assert _allows(role, "", "secrets", verb, CERTS_SECRET)
        assert not _allows(role, "", "secrets", verb, "flint-owner-token")
    cli = _rules("ClusterRole", "flint-cli")
    assert _allows(cli, "", "secrets", "get", ADMIN_SECRET)
    assert not _allows(cli, "", "secrets", "get", CERTS_SECRET)  # the CA's key stays the controller's
    assert _allows(cli, "", "services/proxy", "get", "flint-dispatcher:admin")
    assert _allows(cli, "", "pods/log", "get")
