"""`flint service create/update` flags as pure edits of a Service, with kn's semantics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from controller.cli.client import CliError
from controller.cli.service_edit import (
    ServiceFlags,
    edit_env,
    edit_traffic,
    new_service,
    parse_key_values,
    parse_traffic,
    revision_name,
    update_service,
    validate,
)

CWD = Path("/work/project")


def fixed(n: int) -> str:
    return "x" * n


def create(**kw: Any) -> dict[str, Any]:
    return new_service("hello", "default", ServiceFlags(**kw), CWD, fixed)


def update(svc: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return update_service(svc, ServiceFlags(**kw), CWD, fixed)


def container(svc: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = svc["spec"]["template"]["spec"]["containers"][0]
    return c


def live() -> dict[str, Any]:
    """A service as the server returns it after some edits."""
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": "hello",
            "namespace": "default",
            "generation": 2,
            "resourceVersion": "41",
            "annotations": {"team": "a"},
        },
        "spec": {
            "template": {
                "metadata": {"name": "hello-v2", "annotations": {"team": "a"}},
                "spec": {
                    "containerConcurrency": 0,
                    "containers": [
                        {
                            "image": "/srv/hello",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "args": ["--old"],
                        }
                    ],
                },
            },
            "traffic": [
                {"revisionName": "hello-v1", "percent": 50, "latestRevision": False},
                {"latestRevision": True, "percent": 50},
            ],
        },
        "status": {"observedGeneration": 2, "url": "http://hello.default.localhost"},
    }


# -- create ------------------------------------------------------------------------------------


def test_create_minimal() -> None:
    svc = create(image="nginx:1.25")
    assert svc == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"image": "nginx:1.25"}]}}},
    }


def test_create_requires_image() -> None:
    with pytest.raises(CliError, match="--image") as e:
        create()
    assert e.value.code == 2


def test_create_relative_image_resolves_against_cwd() -> None:
    assert container(create(image="./app"))["image"] == "/work/project/app"
    assert container(create(image="."))["image"] == "/work/project"
    assert container(create(image="../other"))["image"] == "/work/other"


def test_create_all_flags() -> None:
    svc = create(
        image="/srv/app",
        cmd=["python", "-m"],
        args=["app", "--port=8080"],
        env=["A=1", "B=x=y"],
        concurrency_limit=10,
        annotations=["team=a", "autoscaling.knative.dev/window=30s"],
        labels=["app=hello"],
        revision_name="v1",
        scale_min=1,
        scale_max=5,
        scale_target=20,
    )
    c = container(svc)
    assert c["command"] == ["python", "-m"]
    assert c["args"] == ["app", "--port=8080"]
    assert c["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]
    tmpl = svc["spec"]["template"]
    assert tmpl["spec"]["containerConcurrency"] == 10
    assert tmpl["metadata"]["name"] == "hello-v1"
    assert tmpl["metadata"]["annotations"] == {
        "team": "a",
        "autoscaling.knative.dev/window": "30s",
        "autoscaling.knative.dev/min-scale": "1",
        "autoscaling.knative.dev/max-scale": "5",
        "autoscaling.knative.dev/target": "20",
    }
    # autoscaling annotations belong to the revision template only
    assert svc["metadata"]["annotations"] == {"team": "a"}
    assert svc["metadata"]["labels"] == {"app": "hello"}
    assert tmpl["metadata"]["labels"] == {"app": "hello"}
    assert "traffic" not in svc["spec"]


def test_create_with_latest_tag() -> None:
    svc = create(image="x:1", tags=["@latest=current"])
    assert svc["spec"]["traffic"] == [{"latestRevision": True, "percent": 100, "tag": "current"}]


# -- env ---------------------------------------------------------------------------------------


def test_parse_key_values() -> None:
    assert parse_key_values(["A=1", "B=", "C-", "D=e=f"], "env") == (
        {"A": "1", "B": "", "D": "e=f"},
        ["C"],
    )
    for bad in ["A", "=1", "-"]:
        with pytest.raises(CliError) as e:
            parse_key_values([bad], "env")
        assert e.value.code == 2


def test_edit_env_keeps_order_and_replaces_value_from() -> None:
    env: list[dict[str, Any]] = [
        {"name": "A", "value": "1"},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "B", "value": "2"},
    ]
    out = edit_env(env, {"S": "plain", "C": "3"}, ["B"])
    assert out == [
        {"name": "A", "value": "1"},
        {"name": "S", "value": "plain"},
        {"name": "C", "value": "3"},
    ]
    assert env[1]["valueFrom"]  # the input is untouched


def test_update_env_merge_and_remove() -> None:
    svc = update(live(), env=["B=20", "C=3", "A-"])
    assert container(svc)["env"] == [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]


def test_update_env_removing_all_drops_the_field() -> None:
    svc = update(live(), env=["A-", "B-"])
    assert "env" not in container(svc)


# -- update basics -----------------------------------------------------------------------------


def test_update_does_not_mutate_input_and_drops_status() -> None:
    before = live()
    original = copy.deepcopy(before)
    svc = update(before, image="./new")
    assert before == original
    assert "status" not in svc
    assert svc["metadata"]["resourceVersion"] == "41"
    assert container(svc)["image"] == "/work/project/new"


def test_update_replaces_args_and_cmd() -> None:
    svc = update(live(), args=["--new", "1"], cmd=["/bin/app"])
    assert container(svc)["args"] == ["--new", "1"]
    assert container(svc)["command"] == ["/bin/app"]


def test_update_concurrency() -> None:
    svc = update(live(), concurrency_limit=5)
    assert svc["spec"]["template"]["spec"]["containerConcurrency"] == 5
    with pytest.raises(CliError):
        update(live(), concurrency_limit=-1)


def test_update_annotations_set_and_remove_on_both() -> None:
    svc = update(live(), annotations=["team-", "owner=b", "autoscaling.knative.dev/target=7"])
    assert svc["metadata"]["annotations"] == {"owner": "b"}
    assert svc["spec"]["template"]["metadata"]["annotations"] == {
        "owner": "b",
        "autoscaling.knative.dev/target": "7",
    }


def test_update_service_and_revision_only_annotations() -> None:
    svc = update(live(), service_annotations=["s=1"], revision_annotations=["r=1", "team-"])
    assert svc["metadata"]["annotations"] == {"team": "a", "s": "1"}
    assert svc["spec"]["template"]["metadata"]["annotations"] == {"r": "1"}


def test_update_removing_every_annotation_drops_the_map() -> None:
    svc = update(live(), annotations=["team-"])
    assert "annotations" not in svc["metadata"]
    assert "annotations" not in svc["spec"]["template"]["metadata"]


# -- revision names ----------------------------------------------------------------------------


def test_revision_name_templates() -> None:
    assert revision_name("v1", "hello", 3, fixed) == "hello-v1"
    assert revision_name("hello-v1", "hello", 3, fixed) == "hello-v1"
    assert revision_name("{{.Service}}-{{.Generation}}", "hello", 3, fixed) == "hello-3"
    assert revision_name("{{ .Service }}-{{.Random 3}}", "hello", 3, fixed) == "hello-xxx"
    assert revision_name("{{.Random}}", "hello", 3, fixed) == "hello-xxxxx"
    with pytest.raises(CliError):
        revision_name("{{.Unknown}}", "hello", 1, fixed)


def test_update_with_revision_name_uses_next_generation() -> None:
    svc = update(live(), image="x:2", revision_name="{{.Service}}-g{{.Generation}}")
    assert svc["spec"]["template"]["metadata"]["name"] == "hello-g3"


def test_update_that_changes_the_template_clears_an_old_revision_name() -> None:
    svc = update(live(), env=["A=9"])
    assert "name" not in svc["spec"]["template"]["metadata"]


def test_update_of_traffic_only_keeps_the_revision_name() -> None:
    svc = update(live(), traffic=["@latest=100"])
    assert svc["spec"]["template"]["metadata"]["name"] == "hello-v2"


# -- traffic -----------------------------------------------------------------------------------


def test_parse_traffic() -> None:
    assert parse_traffic(["a=10", "@latest=90%"]) == [("a", 10), ("@latest", 90)]
    for bad in [["a"], ["a=x"], ["a=101"], ["a=-1"], ["a=1", "a=2"]]:
        with pytest.raises(CliError) as e:
            parse_traffic(bad)
        assert e.value.code == 2


def test_traffic_replaces_the_split() -> None:
    out = edit_traffic(
        [{"latestRevision": True, "percent": 100}],
        traffic=[("hello-v1", 20), ("@latest", 80)],
    )
    assert out == [
        {"latestRevision": True, "percent": 80},
        {"revisionName": "hello-v1", "latestRevision": False, "percent": 20},
    ]


def test_traffic_drops_unmentioned_untagged_targets_and_keeps_tagged_at_zero() -> None:
    current = [
        {"revisionName": "a", "percent": 50},
        {"revisionName": "b", "percent": 50, "tag": "blue"},
        {"latestRevision": True, "percent": 0, "tag": "current"},
    ]
    out = edit_traffic(current, traffic=[("@latest", 100)])
    assert out == [
        {"revisionName": "b", "percent": 0, "tag": "blue"},
        {"latestRevision": True, "percent": 100, "tag": "current"},
    ]


def test_traffic_key_may_be_a_tag() -> None:
    current = [
        {"revisionName": "a", "percent": 100, "tag": "green"},
        {"revisionName": "b", "percent": 0, "tag": "blue"},
    ]
    out = edit_traffic(current, traffic=[("blue", 100)])
    assert out == [
        {"revisionName": "a", "percent": 0, "tag": "green"},
        {"revisionName": "b", "percent": 100, "tag": "blue"},
    ]


def test_traffic_must_sum_to_100() -> None:
    with pytest.raises(CliError, match="sum to 90, want 100") as e:
        edit_traffic([], traffic=[("a", 40), ("@latest", 50)])
    assert e.value.code == 1


def test_empty_traffic_defaults_to_latest() -> None:
    assert edit_traffic([], tags=[("@latest", "current")]) == [
        {"latestRevision": True, "percent": 100, "tag": "current"}
    ]


def test_tag_attaches_to_untagged_target_of_revision() -> None:
    current = [{"revisionName": "a", "percent": 100}]
    assert edit_traffic(current, tags=[("a", "stable")]) == [
        {"revisionName": "a", "percent": 100, "tag": "stable"}
    ]


def test_tag_adds_zero_percent_target_when_revision_absent_or_already_tagged() -> None:
    current = [{"revisionName": "a", "percent": 100, "tag": "stable"}]
    out = edit_traffic(current, tags=[("a", "again"), ("b", "candidate")])
    assert out == [
        {"revisionName": "a", "percent": 100, "tag": "stable"},
        {"revisionName": "a", "latestRevision": False, "percent": 0, "tag": "again"},
        {"revisionName": "b", "latestRevision": False, "percent": 0, "tag": "candidate"},
    ]


def test_tag_in_use_is_refused_unless_untagged_first() -> None:
    current = [{"revisionName": "a", "percent": 100, "tag": "stable"}]
    with pytest.raises(CliError, match="--untag stable"):
        edit_traffic(current, tags=[("b", "stable")])
    out = edit_traffic(current, tags=[("b", "stable")], untags=["stable"])
    assert out == [
        {"revisionName": "a", "percent": 100},
        {"revisionName": "b", "latestRevision": False, "percent": 0, "tag": "stable"},
    ]


def test_duplicate_tag_flags_are_a_usage_error() -> None:
    with pytest.raises(CliError) as e:
        edit_traffic([], tags=[("a", "t"), ("b", "t")])
    assert e.value.code == 2


def test_untag_drops_zero_percent_target_and_keeps_serving_one() -> None:
    current = [
        {"revisionName": "a", "percent": 100, "tag": "stable"},
        {"revisionName": "b", "percent": 0, "tag": "candidate"},
    ]
    assert edit_traffic(current, untags=["stable", "candidate"]) == [
        {"revisionName": "a", "percent": 100}
    ]


def test_untag_unknown_tag_is_an_error() -> None:
    with pytest.raises(CliError, match="not present"):
        edit_traffic([{"latestRevision": True, "percent": 100}], untags=["nope"])


def test_tag_then_traffic_in_one_command() -> None:
    # kn: tag the new latest revision and move half the traffic to it
    current = [{"revisionName": "a", "percent": 100}]
    out = edit_traffic(current, traffic=[("a", 50), ("@latest", 50)], tags=[("@latest", "new")])
    assert out == [
        {"revisionName": "a", "percent": 50},
        {"latestRevision": True, "percent": 50, "tag": "new"},
    ]


def test_update_traffic_through_service() -> None:
    svc = update(live(), traffic=["hello-v1=10", "@latest=90"], tags=["hello-v1=old"])
    assert svc["spec"]["traffic"] == [
        {"revisionName": "hello-v1", "percent": 10, "latestRevision": False, "tag": "old"},
        {"latestRevision": True, "percent": 90},
    ]


def test_update_without_traffic_flags_leaves_traffic_alone() -> None:
    assert update(live(), env=["X=1"])["spec"]["traffic"] == live()["spec"]["traffic"]


def test_validate_catches_syntax_before_any_request() -> None:
    validate(ServiceFlags(env=["A=1"], traffic=["a=100"], tags=["a=b"]))
    for flags in [
        ServiceFlags(env=["A"]),
        ServiceFlags(annotations=["x"]),
        ServiceFlags(traffic=["a=x"]),
        ServiceFlags(tags=["a"]),
        ServiceFlags(scale_min=-1),
    ]:
        with pytest.raises(CliError) as e:
            validate(flags)
        assert e.value.code == 2
