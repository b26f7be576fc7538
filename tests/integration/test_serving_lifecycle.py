"""Lifecycle end to end: what creates a revision, failing revisions, and routes that name unknown ones."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from support.harness import APPS, Flint, fetch, poll


def _cond(obj: dict, type_: str) -> dict:  # type: ignore[type-arg]
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c  # type: ignore[no-any-return]
    return {}


def test_service_labels_create_no_revision_but_template_changes_do(flint: Flint) -> None:
    flint.cli("service", "create", "labels", "--image", str(APPS / "echo"))
    svc = flint.get("ksvc", "labels")
    svc["metadata"].setdefault("labels", {})["team"] = "blue"
    svc["metadata"].setdefault("annotations", {})["note"] = "top-level only"
    flint.cli("apply", "-f", "-", input=yaml.safe_dump(svc))
    poll(lambda: flint.get("config", "labels")["metadata"].get("labels", {}).get("team") == "blue",
         20, "the label to propagate to the Configuration")
    assert flint.get("ksvc", "labels")["status"]["latestCreatedRevisionName"] == "labels-00001"
    assert flint.cli("get", "rev", "labels-00002", check=False).returncode != 0

    svc = flint.get("ksvc", "labels")
    template_meta = svc["spec"]["template"].setdefault("metadata", {})
    template_meta.setdefault("annotations", {})["x"] = "y"
    template_meta.setdefault("labels", {})["tier"] = "web"
    flint.cli("apply", "-f", "-", input=yaml.safe_dump(svc))
    flint.cli("service", "wait", "labels")
    rev = flint.get("rev", "labels-00002")
    assert rev["metadata"]["annotations"]["x"] == "y"
    # As in Knative: the template's metadata goes to the revision, with the serving labels.
    assert rev["metadata"]["labels"]["tier"] == "web"
    assert rev["metadata"]["labels"]["serving.knative.dev/service"] == "labels"
    assert flint.get("route", "labels")["metadata"]["labels"]["team"] == "blue"
    flint.cli("service", "delete", "labels")


def test_route_naming_an_unknown_revision_sets_a_condition(flint: Flint) -> None:
    route = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Route",
        "metadata": {"name": "dangling"},
        "spec": {"traffic": [{"revisionName": "nowhere-00001", "percent": 100}]},
    }
    flint.cli("apply", "-f", "-", input=yaml.safe_dump(route))

    def missing() -> bool:
        c = _cond(flint.get("route", "dangling"), "AllTrafficAssigned")
        return c.get("status") == "False" and c.get("reason") == "RevisionMissing"

    poll(missing, 20, "AllTrafficAssigned=False RevisionMissing")
    assert "nowhere-00001" in _cond(flint.get("route", "dangling"), "Ready")["message"]
    assert flint.cli("get", "ksvc").returncode == 0  # the controller is still fine
    flint.cli("delete", "route", "dangling")


def test_crashing_app_reports_exit_code_and_log_lines(flint: Flint) -> None:
    out = flint.cli("service", "create", "crash", "--image", str(APPS / "crasher"), "--no-wait")
    assert out.returncode == 0

    def unhealthy() -> bool:
        c = _cond(flint.get("rev", "crash-00001"), "ContainerHealthy")
        return c.get("status") == "False" and "exit code 3" in c.get("message", "")

    poll(unhealthy, 30, "ContainerHealthy=False with the exit code")
    msg = _cond(flint.get("rev", "crash-00001"), "ContainerHealthy")["message"]
    assert "about to fail on purpose" in msg
    flint.cli("service", "delete", "crash")


def test_progress_deadline_fails_and_stops_the_revision(flint: Flint) -> None:
    manifest = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "deaf"},
        "spec": {"template": {
            "metadata": {"annotations": {"serving.knative.dev/progress-deadline": "3s"}},
            "spec": {"containers": [{"image": str(APPS / "deaf")}]},
        }},
    }
    flint.cli("apply", "-f", "-", input=yaml.safe_dump(manifest))
    out = flint.cli("service", "wait", "deaf", "--wait-timeout", "30", check=False)
    assert out.returncode != 0
    assert "Initial scale was never achieved" in out.stderr and "within 3s" in out.stderr
    rev = flint.get("rev", "deaf-00001")
    ready = _cond(rev, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ProgressDeadlineExceeded"
    poll(lambda: not any(r["revision_key"] == "default/deaf-00001" for r in flint.replica_records()),
         20, "the failed revision's replica to stop")
    flint.cli("service", "delete", "deaf")


def test_rollback_to_a_named_revision_serves_it_again(flint: Flint) -> None:
    """Knative's rollback_byo_test: template named X-foo, then X-foo-new, then X-foo's again."""
    def manifest(revision: str, target: str) -> str:
        return yaml.safe_dump({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "byo"},
            "spec": {"template": {
                "metadata": {"name": revision},
                "spec": {"containers": [{"image": str(APPS / "echo"),
                                         "env": [{"name": "TARGET", "value": target}]}]},
            }},
        })

    def served() -> str:
        status, _, body = asyncio.run(fetch(flint.port, flint.host("byo")))
        return str(json.loads(body)["revision"]) if status == 200 else f"status {status}"

    flint.cli("apply", "-f", "-", input=manifest("byo-foo", "one"))
    flint.cli("service", "wait", "byo")
    flint.cli("apply", "-f", "-", input=manifest("byo-foo-new", "two"))
    poll(lambda: flint.get("ksvc", "byo")["status"].get("latestReadyRevisionName") == "byo-foo-new",
         30, "byo-foo-new to be the latest ready revision")
    poll(lambda: served() == "byo-foo-new", 30, "@latest traffic to reach byo-foo-new")

    flint.cli("apply", "-f", "-", input=manifest("byo-foo", "one"))  # the rollback
    poll(lambda: flint.get("ksvc", "byo")["status"].get("latestReadyRevisionName") == "byo-foo",
         30, "byo-foo to be the latest ready revision again")
    st = flint.get("ksvc", "byo")["status"]
    assert st["latestCreatedRevisionName"] == "byo-foo"
    poll(lambda: served() == "byo-foo", 30, "@latest traffic to reach byo-foo again")
    poll(lambda: _cond(flint.get("ksvc", "byo"), "Ready").get("status") == "True", 30,
         "the service to be Ready")
    revs = json.loads(flint.cli("get", "rev", "-o", "json").stdout)
    names = sorted(r["metadata"]["name"] for r in revs.get("items", revs)
                   if r["metadata"]["name"].startswith("byo-"))
    assert names == ["byo-foo", "byo-foo-new"]  # no new revision
    flint.cli("service", "delete", "byo")


def test_gradual_rollout_moves_traffic_in_steps(flint: Flint) -> None:
    """Knative's rollout_test: with rollout-duration the new revision takes over in steps."""
    def manifest(target: str) -> str:
        return yaml.safe_dump({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "gradual",
                         "annotations": {"serving.knative.dev/rollout-duration": "8s"}},
            "spec": {"template": {"spec": {"containers": [{
                "image": str(APPS / "echo"), "env": [{"name": "TARGET", "value": target}]}]}}},
        })

    flint.cli("apply", "-f", "-", input=manifest("one"))
    flint.cli("service", "wait", "gradual")
    assert [t["percent"] for t in flint.get("ksvc", "gradual")["status"]["traffic"]] == [100]
    flint.cli("apply", "-f", "-", input=manifest("two"))
    shapes: list[list[tuple[str, int]]] = []

    def finished() -> bool:
        svc = flint.get("ksvc", "gradual")
        st = svc["status"]
        traffic = [(t["revisionName"], t["percent"]) for t in st.get("traffic") or []]
        if not shapes or shapes[-1] != traffic:
            shapes.append(traffic)
        routes_ready = _cond(svc, "RoutesReady")
        if len(traffic) == 2:
            assert routes_ready.get("reason") == "RolloutInProgress", routes_ready
            assert _cond(svc, "Ready").get("reason") == "RolloutInProgress"
        return (_cond(svc, "Ready").get("status") == "True"
                and traffic == [("gradual-00002", 100)])

    poll(finished, 60, "the rollout to finish on gradual-00002")
    split = [s for s in shapes if len(s) == 2]
    assert split, shapes  # traffic was split between both revisions on the way
    assert all(dict(s)["gradual-00001"] + dict(s)["gradual-00002"] == 100 for s in split)
    new_share = [dict(s)["gradual-00002"] for s in split]
    assert new_share == sorted(new_share)
    assert len(set(new_share)) > 1, shapes  # it moved in more than one step
    flint.cli("service", "delete", "gradual")


@pytest.mark.parametrize("memory", [None, "256Mi"])
def test_the_process_sees_command_and_args_as_given(flint: Flint, memory: str | None) -> None:
    """Knative's runtime cmd_args_test: argv is exactly `command` + `args`."""
    name = "argv" if memory is None else "argv-limited"
    container: dict = {"image": str(APPS / "argv"), "command": ["python3", "app.py"],  # type: ignore[type-arg]
                       "args": ["--flag", "two words", ""],
                       # The system's python3: a pyenv shim on PATH would exec the real one by path.
                       "env": [{"name": "PATH", "value": "/usr/bin:/bin"}]}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    flint.cli("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }))
    flint.cli("service", "wait", name)
    status, _, body = asyncio.run(fetch(flint.port, flint.host(name)))
    assert status == 200, body
    assert json.loads(body)["argv"] == ["python3", "app.py", "--flag", "two words", ""]
    flint.cli("service", "delete", name)
