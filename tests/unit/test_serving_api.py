"""Knative serving API on dicts: defaults, validation in Knative's words, naming, builders."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from controller.api import autoscaling, meta, naming, serving
from controller.api.serving_embedded import (
    EMBEDDED_FIELD_RULES,
    embedded_rules_markdown,
)
from controller.api.serving_quantity import (
    QuantityError,
    cpu_millis,
    parse_quantity,
    quantity_bytes,
)
from controller.api.types import FieldError

Obj = dict[str, Any]


def service(**spec_overrides: Any) -> Obj:
    """A valid Service; keyword arguments replace fields of `spec.template.spec`."""
    rspec: Obj = {"containers": [{"image": "/srv/app"}]}
    rspec.update(spec_overrides)
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"template": {"spec": rspec}},
    }


def container(svc: Obj) -> Obj:
    c: Obj = svc["spec"]["template"]["spec"]["containers"][0]
    return c


def errors_of(obj: Obj, old: Obj | None = None, kind: str = "Service") -> list[FieldError]:
    defaulter = {
        "Service": serving.default_service,
        "Configuration": serving.default_configuration,
        "Revision": serving.default_revision,
        "Route": serving.default_route,
    }[kind]
    validator = {
        "Service": serving.validate_service,
        "Configuration": serving.validate_configuration,
        "Revision": serving.validate_revision,
        "Route": serving.validate_route,
    }[kind]
    obj = copy.deepcopy(obj)
    defaulter(obj)
    return validator(obj, old)


def only(errs: list[FieldError]) -> FieldError:
    assert len(errs) == 1, errs
    return errs[0]


def has(errs: list[FieldError], path: str, message: str) -> bool:
    return FieldError(path, message) in errs


TC = "spec.template.spec.containers[0]"

# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------


def test_service_defaults_match_knative() -> None:
    svc = service()
    del svc["metadata"]["namespace"]
    serving.default_service(svc)
    assert svc["metadata"]["namespace"] == "default"
    rspec = svc["spec"]["template"]["spec"]
    assert rspec["timeoutSeconds"] == 300
    assert rspec["containerConcurrency"] == 0
    assert rspec["enableServiceLinks"] is False
    assert "responseStartTimeoutSeconds" not in rspec
    assert "idleTimeoutSeconds" not in rspec
    c = rspec["containers"][0]
    assert c["name"] == "user-container"
    assert c["readinessProbe"] == {"tcpSocket": {"port": 0}, "successThreshold": 1}
    assert "ports" not in c  # the runtime assigns the port in $PORT
    assert svc["spec"]["traffic"] == [{"percent": 100, "latestRevision": True}]


def test_defaults_keep_what_the_user_set() -> None:
    svc = service(timeoutSeconds=30, containerConcurrency=5, enableServiceLinks=True)
    container(svc)["name"] = "app"
    container(svc)["readinessProbe"] = {"httpGet": {"path": "/ready"}, "periodSeconds": 2}
    serving.default_service(svc)
    rspec = svc["spec"]["template"]["spec"]
    assert (rspec["timeoutSeconds"], rspec["containerConcurrency"]) == (30, 5)
    assert rspec["enableServiceLinks"] is True
    probe = container(svc)["readinessProbe"]
    assert "tcpSocket" not in probe
    assert probe["successThreshold"] == 1
    assert (probe["timeoutSeconds"], probe["failureThreshold"]) == (1, 3)
    assert container(svc)["name"] == "app"


def test_zero_timeout_defaults_to_300() -> None:
    svc = service(timeoutSeconds=0)
    serving.default_service(svc)
    assert svc["spec"]["template"]["spec"]["timeoutSeconds"] == 300


def test_multi_container_names_are_indexed() -> None:
    svc = service(containers=[{"image": "a", "ports": [{"containerPort": 80}]}, {"image": "b"}])
    serving.default_service(svc)
    cs = svc["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["user-container-0", "user-container-1"]
    assert "readinessProbe" in cs[0] and "readinessProbe" not in cs[1]


def test_traffic_latest_revision_defaults_from_revision_name() -> None:
    svc = service()
    svc["spec"]["traffic"] = [
        {"percent": 50, "revisionName": "hello-00001"},
        {"percent": 50},
    ]
    serving.default_service(svc)
    assert [t["latestRevision"] for t in svc["spec"]["traffic"]] == [False, True]


def test_route_traffic_defaults_without_default_traffic() -> None:
    route: Obj = {"metadata": {"name": "r"}, "spec": {}}
    serving.default_route(route)
    assert route["spec"].get("traffic") is None
    route["spec"]["traffic"] = [{"configurationName": "c", "percent": 100}]
    serving.default_route(route)
    assert route["spec"]["traffic"][0]["latestRevision"] is True
    assert route["metadata"]["namespace"] == "default"


def test_defaults_tolerate_malformed_objects() -> None:
    for obj in ({"spec": "nope"}, {"spec": {"template": 3}}, {"metadata": 1}):
        serving.default_service(copy.deepcopy(obj))
        serving.default_configuration(copy.deepcopy(obj))
        serving.default_revision(copy.deepcopy(obj))
        serving.default_route(copy.deepcopy(obj))


def test_valid_service_has_no_errors_or_warnings() -> None:
    svc = service()
    assert errors_of(svc) == []
    serving.default_service(svc)
    assert serving.service_warnings(svc) == []


# ---------------------------------------------------------------------------------------------
# Traffic
# ---------------------------------------------------------------------------------------------


def with_traffic(*targets: Obj) -> Obj:
    svc = service()
    svc["spec"]["traffic"] = list(targets)
    return svc


def test_traffic_sum_must_be_100() -> None:
    errs = errors_of(with_traffic({"percent": 50}, {"percent": 30, "revisionName": "hello-1"}))
    assert only(errs) == FieldError("spec.traffic", "Traffic targets sum to 80, want 100")


def test_traffic_percent_out_of_bounds() -> None:
    errs = errors_of(with_traffic({"percent": 101}, {"percent": -1, "revisionName": "hello-1"}))
    assert has(errs, "spec.traffic[0].percent", "expected 0 <= 101 <= 100")
    assert has(errs, "spec.traffic[1].percent", "expected 0 <= -1 <= 100")


def test_traffic_percent_must_be_an_integer() -> None:
    errs = errors_of(with_traffic({"percent": "100"}))
    assert has(errs, "spec.traffic[0].percent", "invalid value: 100")


def test_service_traffic_may_not_name_a_configuration() -> None:
    errs = errors_of(with_traffic({"percent": 100, "configurationName": "other"}))
    assert only(errs) == FieldError(
        "spec.traffic[0].configurationName", "must not set the field(s)"
    )


def test_latest_revision_true_with_revision_name() -> None:
    errs = errors_of(
        with_traffic({"percent": 100, "revisionName": "hello-1", "latestRevision": True})
    )
    assert only(errs) == FieldError(
        "spec.traffic[0].latestRevision",
        'may not set revisionName "hello-1" when latestRevision is true',
    )


def test_latest_revision_false_without_revision_name() -> None:
    errs = errors_of(with_traffic({"percent": 100, "latestRevision": False}))
    assert only(errs) == FieldError(
        "spec.traffic[0].latestRevision",
        'may not set revisionName "" when latestRevision is false',
    )


def test_duplicate_tags() -> None:
    errs = errors_of(
        with_traffic(
            {"percent": 50, "tag": "blue"},
            {"percent": 50, "revisionName": "hello-1", "tag": "blue"},
        )
    )
    assert only(errs) == FieldError(
        "spec.traffic[0].tag, spec.traffic[1].tag", 'Multiple definitions for "blue"'
    )


@pytest.mark.parametrize("tag", ["Blue", "1blue", "blue_green", "blue-", "a" * 64])
def test_tag_must_be_a_dns1035_label(tag: str) -> None:
    err = only(errors_of(with_traffic({"percent": 100, "tag": tag})))
    assert err.path == "spec.traffic[0].tag"
    assert err.message.startswith("invalid value: not a DNS 1035 label: [")


def test_traffic_url_is_not_allowed_in_spec() -> None:
    errs = errors_of(with_traffic({"percent": 100, "tag": "a", "url": "http://x"}))
    assert only(errs) == FieldError("spec.traffic[0].url", "must not set the field(s)")


def test_traffic_unknown_field() -> None:
    errs = errors_of(with_traffic({"percent": 100, "weight": 3}))
    assert only(errs) == FieldError("spec.traffic[0].weight", "must not set the field(s)")


def test_traffic_revision_name_must_be_qualified() -> None:
    errs = errors_of(with_traffic({"percent": 100, "revisionName": "bad name!"}))
    err = only(errs)
    assert err.path == "spec.traffic[0].revisionName"
    assert err.message.startswith('invalid key name "bad name!"')


def route(*targets: Obj, **meta_extra: Any) -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Route",
        "metadata": {"name": "r", **meta_extra},
        "spec": {"traffic": list(targets)},
    }


def test_route_target_needs_revision_or_configuration() -> None:
    errs = errors_of(route({"percent": 100}), kind="Route")
    assert only(errs) == FieldError(
        "spec.traffic[0].configurationName, spec.traffic[0].revisionName",
        "expected exactly one, got neither",
    )


def test_route_target_may_not_name_both() -> None:
    errs = errors_of(
        route({"percent": 100, "revisionName": "a-1", "configurationName": "a"}), kind="Route"
    )
    assert has(
        errs,
        "spec.traffic[0].configurationName, spec.traffic[0].revisionName",
        "expected exactly one, got both",
    )


def test_route_valid_and_empty_traffic() -> None:
    assert errors_of(route({"percent": 100, "configurationName": "c"}), kind="Route") == []
    errs = errors_of(route(), kind="Route")
    assert only(errs) == FieldError("spec.traffic", "Traffic targets sum to 0, want 100")


# ---------------------------------------------------------------------------------------------
# Revision spec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeoutSeconds", 700, "expected 0 <= 700 <= 600"),
        ("timeoutSeconds", -1, "expected 0 <= -1 <= 600"),
        ("containerConcurrency", 1001, "expected 0 <= 1001 <= 1000"),
        ("containerConcurrency", -1, "expected 0 <= -1 <= 1000"),
        ("responseStartTimeoutSeconds", 601, "expected 0 <= 601 <= 300"),
        ("idleTimeoutSeconds", -5, "expected 0 <= -5 <= 300"),
        ("timeoutSeconds", "30", "invalid value: 30"),
        ("containerConcurrency", True, "invalid value: true"),
    ],
)
def test_revision_spec_bounds(field: str, value: Any, message: str) -> None:
    errs = errors_of(service(**{field: value}))
    assert has(errs, f"spec.template.spec.{field}", message), errs


def test_response_start_timeout_bounded_by_timeout() -> None:
    errs = errors_of(service(timeoutSeconds=100, responseStartTimeoutSeconds=200))
    assert only(errs) == FieldError(
        "spec.template.spec.responseStartTimeoutSeconds", "expected 0 <= 200 <= 100"
    )
    assert errors_of(service(timeoutSeconds=600, idleTimeoutSeconds=600)) == []


def test_image_is_required() -> None:
    svc = service()
    del container(svc)["image"]
    assert only(errors_of(svc)) == FieldError(f"{TC}.image", "missing field(s)")


def test_containers_are_required() -> None:
    assert only(errors_of(service(containers=[]))) == FieldError(
        "spec.template.spec.containers", "missing field(s)"
    )


def test_exactly_one_container_on_the_embedded_engine() -> None:
    errs = errors_of(service(containers=[{"image": "a"}, {"image": "b"}]))
    err = only(errs)
    assert err.path == "spec.template.spec.containers"
    assert err.message.startswith("not supported by the embedded engine: exactly one container")


def test_more_than_one_port() -> None:
    svc = service()
    container(svc)["ports"] = [{"containerPort": 8080}, {"containerPort": 9000}]
    errs = errors_of(svc)
    assert has(
        errs,
        "spec.template.spec.containers[*].ports",
        "more than one container port is set; Only a single port is allowed across all containers",
    )


def test_unknown_pod_and_container_fields() -> None:
    svc = service(hostNetwork=True)
    container(svc)["stdin"] = True
    errs = errors_of(svc)
    assert has(errs, "spec.template.spec.hostNetwork", "must not set the field(s)")
    assert has(errs, f"{TC}.stdin", "must not set the field(s)")


def test_reserved_env_and_missing_env_name() -> None:
    svc = service()
    container(svc)["env"] = [{"name": "K_REVISION", "value": "x"}, {"value": "y"}]
    errs = errors_of(svc)
    assert has(errs, f"{TC}.env[0].name", '"K_REVISION" is a reserved environment variable')
    assert has(errs, f"{TC}.env[1].name", "missing field(s)")


def test_reserved_container_name() -> None:
    svc = service()
    container(svc)["name"] = "queue-proxy"
    assert has(errors_of(svc), f"{TC}.name", '"queue-proxy" is a reserved container name')


def test_port_rules() -> None:
    svc = service()
    container(svc)["ports"] = [{"containerPort": 70000, "protocol": "UDP", "name": "grpc"}]
    errs = errors_of(svc)
    assert has(errs, f"{TC}.ports[0].containerPort", "expected 0 <= 70000 <= 65535")
    assert has(errs, f"{TC}.ports[0].protocol", "invalid value: UDP")
    assert has(
        errs,
        f"{TC}.ports",
        "Port name grpc is not allowed; Name must be empty, or one of: 'h2c', 'http1'",
    )


def test_reserved_port() -> None:
    svc = service()
    container(svc)["ports"] = [{"containerPort": 8012}]
    err = only(errors_of(svc))
    assert err.path == f"{TC}.ports[0].containerPort"
    assert err.message.startswith("invalid value: 8012 is a reserved port")


def test_http1_port_is_fine() -> None:
    svc = service()
    container(svc)["ports"] = [{"name": "http1", "containerPort": 8080}]
    assert errors_of(svc) == []


def test_termination_message_policy() -> None:
    svc = service()
    container(svc)["terminationMessagePolicy"] = "Sometimes"
    assert only(errors_of(svc)) == FieldError(
        f"{TC}.terminationMessagePolicy", "invalid value: Sometimes"
    )


def test_service_account_name_must_be_a_subdomain() -> None:
    errs = errors_of(service(serviceAccountName="Not_OK"))
    err = only(errs)
    assert err.path == "spec.template.spec.serviceAccountName"
    assert err.message.startswith("invalid value: Not_OK; a lowercase RFC 1123 subdomain")


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------


def with_probe(kind: str, probe: Obj) -> Obj:
    svc = service()
    container(svc)[kind] = probe
    return svc


def test_probe_needs_one_handler() -> None:
    errs = errors_of(with_probe("livenessProbe", {"periodSeconds": 3}))
    p = f"{TC}.livenessProbe"
    assert has(
        errs,
        f"{p}.exec, {p}.grpc, {p}.httpGet, {p}.tcpSocket",
        "expected exactly one, got neither",
    )


def test_probe_with_two_handlers() -> None:
    errs = errors_of(with_probe("readinessProbe", {"httpGet": {"path": "/"}, "tcpSocket": {}}))
    p = f"{TC}.readinessProbe"
    assert has(errs, f"{p}.httpGet, {p}.tcpSocket", "expected exactly one, got both")


@pytest.mark.parametrize("handler", ["exec", "grpc"])
@pytest.mark.parametrize("kind", ["livenessProbe", "readinessProbe"])
def test_exec_and_grpc_probes_are_refused(kind: str, handler: str) -> None:
    errs = errors_of(with_probe(kind, {handler: {"command": ["true"]}}))
    err = only(errs)
    assert err.path == f"{TC}.{kind}.{handler}"
    assert err.message == (
        "not supported by the embedded engine: only httpGet and tcpSocket probes are run"
    )


def test_probe_port_must_match_container_port() -> None:
    errs = errors_of(with_probe("livenessProbe", {"httpGet": {"path": "/", "port": "admin"}}))
    assert only(errs) == FieldError(
        f"{TC}.livenessProbe.httpGet.port",
        "invalid value: admin; Probe port must match container port",
    )
    named = with_probe("livenessProbe", {"httpGet": {"path": "/", "port": "http1"}})
    container(named)["ports"] = [{"name": "http1"}]
    assert errors_of(named) == []
    assert errors_of(with_probe("livenessProbe", {"tcpSocket": {"port": "http"}})) == []


def test_http_probe_path_must_be_absolute() -> None:
    errs = errors_of(with_probe("readinessProbe", {"httpGet": {"path": "healthz"}}))
    assert has(
        errs,
        f"{TC}.readinessProbe.httpGet.path",
        "invalid value: healthz; must be an absolute path",
    )


def test_readiness_probe_numbers() -> None:
    p = f"{TC}.readinessProbe"
    errs = errors_of(
        with_probe(
            "readinessProbe",
            {"tcpSocket": {}, "periodSeconds": 0, "failureThreshold": 3, "timeoutSeconds": 2},
        )
    )
    assert has(
        errs, f"{p}.failureThreshold", "failureThreshold is disallowed when periodSeconds is zero"
    )
    assert has(
        errs, f"{p}.timeoutSeconds", "timeoutSeconds is disallowed when periodSeconds is zero"
    )
    errs = errors_of(
        with_probe(
            "readinessProbe", {"tcpSocket": {}, "periodSeconds": -1, "initialDelaySeconds": -2}
        )
    )
    assert has(errs, f"{p}.periodSeconds", "expected 0 <= -1 <= 2147483647")
    assert has(errs, f"{p}.initialDelaySeconds", "expected 0 <= -2 <= 2147483647")
    errs = errors_of(
        with_probe("readinessProbe", {"tcpSocket": {}, "periodSeconds": 5, "timeoutSeconds": 0})
    )
    assert has(errs, f"{p}.timeoutSeconds", "expected 1 <= 0 <= 2147483647")


def test_valid_probes() -> None:
    svc = service()
    container(svc)["readinessProbe"] = {"httpGet": {"path": "/ready"}, "periodSeconds": 5}
    container(svc)["livenessProbe"] = {"tcpSocket": {}, "initialDelaySeconds": 3}
    assert errors_of(svc) == []


# ---------------------------------------------------------------------------------------------
# Embedded-engine rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "field", "value", "path"),
    [
        ("pod", "volumes", [{"name": "v", "emptyDir": {}}], "spec.template.spec.volumes"),
        ("pod", "imagePullSecrets", [{"name": "s"}], "spec.template.spec.imagePullSecrets"),
        ("pod", "initContainers", [{"image": "x"}], "spec.template.spec.initContainers"),
        ("container", "volumeMounts", [{"name": "v", "mountPath": "/v"}], f"{TC}.volumeMounts"),
        ("container", "envFrom", [{"secretRef": {"name": "s"}}], f"{TC}.envFrom"),
        ("container", "lifecycle", {"preStop": {"exec": {}}}, f"{TC}.lifecycle"),
        (
            "container",
            "env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            f"{TC}.env[0].valueFrom",
        ),
        ("container", "ports", [{"name": "h2c"}], f"{TC}.ports[0].name"),
        (
            "container",
            "securityContext",
            {"capabilities": {"add": ["NET_ADMIN"]}},
            f"{TC}.securityContext.capabilities.add",
        ),
    ],
)
def test_refused_fields(where: str, field: str, value: Any, path: str) -> None:
    svc = service()
    target = svc["spec"]["template"]["spec"] if where == "pod" else container(svc)
    target[field] = value
    errs = [e for e in errors_of(svc) if e.message.startswith("not supported by the embedded")]
    assert [e.path for e in errs] == [path]


@pytest.mark.parametrize(
    ("where", "field", "value", "path"),
    [
        ("pod", "serviceAccountName", "builder", "spec.template.spec.serviceAccountName"),
        ("pod", "nodeSelector", {"disk": "ssd"}, "spec.template.spec.nodeSelector"),
        ("pod", "affinity", {"nodeAffinity": {}}, "spec.template.spec.affinity"),
        ("pod", "tolerations", [{"key": "k"}], "spec.template.spec.tolerations"),
        ("pod", "runtimeClassName", "gvisor", "spec.template.spec.runtimeClassName"),
        ("container", "startupProbe", {"tcpSocket": {}}, f"{TC}.startupProbe"),
        ("container", "resources", {"requests": {"cpu": "100m"}}, f"{TC}.resources.requests"),
        ("container", "resources", {"limits": {"cpu": "1"}}, f"{TC}.resources.limits.cpu"),
        ("container", "ports", [{"containerPort": 3000}], f"{TC}.ports[0].containerPort"),
    ],
)
def test_warned_fields(where: str, field: str, value: Any, path: str) -> None:
    svc = service()
    target = svc["spec"]["template"]["spec"] if where == "pod" else container(svc)
    target[field] = value
    assert errors_of(svc) == []
    serving.default_service(svc)
    assert serving.service_warnings(svc) == [
        f"{path} is accepted but not enforced by the embedded engine"
    ]


def test_target_burst_capacity_is_warned() -> None:
    svc = service()
    svc["spec"]["template"]["metadata"] = {
        "annotations": {"autoscaling.knative.dev/target-burst-capacity": "200"}
    }
    assert errors_of(svc) == []
    assert serving.service_warnings(svc) == [
        "spec.template.metadata.annotations.autoscaling.knative.dev/target-burst-capacity"
        " is accepted but not enforced by the embedded engine"
    ]


def test_kubernetes_engine_keeps_only_knative_rules() -> None:
    svc = service(volumes=[{"name": "v"}])
    container(svc)["envFrom"] = [{"secretRef": {"name": "s"}}]
    serving.default_service(svc)
    assert serving.validate_service(svc, None, embedded=False) == []


def test_rules_table_is_consistent_and_rendered() -> None:
    paths = [r.path for r in EMBEDDED_FIELD_RULES]
    assert len(paths) == len(set(paths))
    assert {r.rule for r in EMBEDDED_FIELD_RULES} == {"refused", "warned", "enforced"}
    md = embedded_rules_markdown()
    assert md.startswith("| field (in a revision spec) | embedded engine | why |\n| --- |")
    assert md.count("\n") == len(EMBEDDED_FIELD_RULES) + 2
    assert "| `containers[*].resources.limits.memory` | enforced |" in md
    assert "| `volumes` | refused |" in md
    assert "| `nodeSelector` | accepted with a warning |" in md


# ---------------------------------------------------------------------------------------------
# Resources and quantities
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128Mi", 128 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("500M", 500 * 10**6),
        ("1e9", 10**9),
        ("1E3", 1000),
        ("1.5Gi", 3 * 2**29),
        ("100k", 100_000),
        ("1024", 1024),
        ("0.5", 1),  # rounded up, as Quantity.Value()
        ("+2Ki", 2048),
        (".5Ki", 512),
        (1000, 1000),
    ],
)
def test_quantity_bytes(text: str | int, expected: int) -> None:
    assert quantity_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "12x", "Mi", "1.2.3", "1 Gi", "1mi", "--1", "1e", "ten"])
def test_invalid_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_quantity_exact_values() -> None:
    assert parse_quantity("500m") == Fraction(1, 2)
    assert parse_quantity("-1k") == -1000
    assert cpu_millis("250m") == 250
    assert cpu_millis("1.5") == 1500
    assert cpu_millis(2) == 2000


def test_memory_limit_validation() -> None:
    svc = service()
    container(svc)["resources"] = {"limits": {"memory": "12x"}}
    err = only(errors_of(svc))
    assert err.path == f"{TC}.resources.limits.memory"
    assert err.message.startswith(
        "invalid value: 12x; quantities must match the regular expression"
    )
    container(svc)["resources"] = {"limits": {"memory": "-1Mi"}}
    assert only(errors_of(svc)).message == (
        "invalid value: -1Mi; must be greater than or equal to 0"
    )
    container(svc)["resources"] = {"limits": {"memory": "256Mi"}}
    assert errors_of(svc) == []


def test_memory_request_above_limit() -> None:
    svc = service()
    container(svc)["resources"] = {"limits": {"memory": "128Mi"}, "requests": {"memory": "1Gi"}}
    assert has(
        errors_of(svc),
        f"{TC}.resources.requests.memory",
        "invalid value: 1Gi; must be less than or equal to memory limit of 128Mi",
    )


def test_unknown_resources_field() -> None:
    svc = service()
    container(svc)["resources"] = {"claims": [{"name": "gpu"}]}
    assert only(errors_of(svc)) == FieldError(f"{TC}.resources.claims", "must not set the field(s)")


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------


def test_name_or_generate_name_required() -> None:
    svc = service()
    del svc["metadata"]["name"]
    assert only(errors_of(svc)) == FieldError("metadata.name", "name or generateName is required")
    svc["metadata"]["generateName"] = "hello-"
    assert errors_of(svc) == []


@pytest.mark.parametrize("name", ["Hello", "1hello", "hello_world", "hello-", "h" * 64])
def test_names_are_dns1035_labels(name: str) -> None:
    svc = service()
    svc["metadata"]["name"] = name
    err = only(errors_of(svc))
    assert err.path == "metadata.name"
    assert err.message.startswith("not a DNS 1035 label: [")


def test_dns1035_message_is_kubernetes_wording() -> None:
    assert meta.is_dns1035_label("1a") == [
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with"
        " an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or"
        " 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    ]
    assert meta.is_dns1035_label("a" * 64) == ["must be no more than 63 characters"]


def test_generate_name_prefix_rule() -> None:
    svc = service()
    svc["metadata"] = {"generateName": "Hello-"}
    err = only(errors_of(svc))
    assert err.path == "metadata.generateName"
    assert err.message.startswith("not a DNS 1035 label prefix: [")


def test_namespace_must_be_a_dns1123_label() -> None:
    svc = service()
    svc["metadata"]["namespace"] = "Team_A"
    err = only(errors_of(svc))
    assert err.path == "metadata.namespace"
    assert err.message.startswith("not a DNS 1123 label: [a lowercase RFC 1123 label")


def test_label_and_annotation_keys_and_values() -> None:
    svc = service()
    svc["metadata"]["labels"] = {"bad key!": "v", "ok": "bad value!", "x": 3}
    errs = errors_of(svc)
    assert has(errs, "metadata.labels.x", "invalid value: 3; expected a string")
    svc["metadata"]["labels"] = {"bad key!": "v", "ok": "bad value!"}
    errs = errors_of(svc)
    assert any(
        e.path == "metadata.labels" and e.message.startswith('invalid key name "bad key!"')
        for e in errs
    )
    assert any(
        e.path == "metadata.labels.ok" and e.message.startswith("invalid value: bad value!")
        for e in errs
    )
    svc["metadata"]["labels"] = {}
    svc["metadata"]["annotations"] = {"a/b/c": "v"}
    err = only(errors_of(svc))
    assert err.path == "metadata.annotations"
    assert err.message.startswith('invalid key name "a/b/c"; a qualified name must consist of')


def test_annotations_size_limit() -> None:
    svc = service()
    svc["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    assert only(errors_of(svc)) == FieldError(
        "metadata.annotations", "must have at most 262144 bytes"
    )


def test_qualified_names() -> None:
    assert meta.is_qualified_name("example.com/my-key") == []
    assert meta.is_qualified_name("/x") == ["prefix part must be non-empty"]
    assert meta.is_qualified_name("x/") == ["name part must be non-empty"]
    assert meta.is_qualified_name("a" * 64)[0] == "name part must be no more than 63 characters"


@pytest.mark.parametrize(
    "label",
    [
        "serving.knative.dev/service",
        "serving.knative.dev/configuration",
        "serving.knative.dev/revision",
        "serving.knative.dev/route",
        "serving.knative.dev/anything",
    ],
)
def test_service_may_not_carry_system_labels(label: str) -> None:
    svc = service()
    svc["metadata"]["labels"] = {label: "x"}
    assert only(errors_of(svc)) == FieldError("metadata.labels", f'invalid key name "{label}"')


def test_visibility_label() -> None:
    svc = service()
    svc["metadata"]["labels"] = {"networking.knative.dev/visibility": "public"}
    assert only(errors_of(svc)) == FieldError(
        "metadata.labels.networking.knative.dev/visibility", "invalid value: public"
    )
    svc["metadata"]["labels"] = {"networking.knative.dev/visibility": "cluster-local"}
    assert errors_of(svc) == []


def configuration(**meta_extra: Any) -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Configuration",
        "metadata": {"name": "hello", **meta_extra},
        "spec": {"template": {"spec": {"containers": [{"image": "/srv/app"}]}}},
    }


def test_configuration_service_label_needs_owner() -> None:
    cfg = configuration(labels={"serving.knative.dev/service": "hello"})
    assert only(errors_of(cfg, kind="Configuration")) == FieldError(
        "metadata.labels.serving.knative.dev/service", "missing field(s)"
    )
    cfg["metadata"]["ownerReferences"] = [{"kind": "Service", "name": "hello"}]
    assert errors_of(cfg, kind="Configuration") == []
    cfg["metadata"]["labels"]["serving.knative.dev/revision"] = "x"
    assert only(errors_of(cfg, kind="Configuration")) == FieldError(
        "metadata.labels", 'invalid key name "serving.knative.dev/revision"'
    )


def test_route_labels() -> None:
    r = route({"percent": 100, "configurationName": "c"})
    r["metadata"]["labels"] = {"serving.knative.dev/route": "r"}
    assert only(errors_of(r, kind="Route")) == FieldError(
        "metadata.labels", 'invalid key name "serving.knative.dev/route"'
    )


def test_revision_may_carry_controller_labels() -> None:
    svc = service()
    serving.default_service(svc)
    svc["metadata"]["uid"] = "su"
    cfg = serving.configuration_from_service(svc)
    cfg["metadata"].update(uid="cu", generation=1)
    rev = serving.revision_from_configuration(cfg)
    assert errors_of(rev, kind="Revision") == []
    rev["metadata"]["ownerReferences"] = []
    assert has(
        errors_of(rev, kind="Revision"),
        "metadata.labels.serving.knative.dev/configuration",
        "missing field(s)",
    )


def test_autoscaling_annotations_belong_on_the_template() -> None:
    svc = service()
    svc["metadata"]["annotations"] = {"autoscaling.knative.dev/min-scale": "1"}
    assert only(errors_of(svc)) == FieldError(
        "metadata.annotations",
        'invalid key name "autoscaling.knative.dev/min-scale"; autoscaling annotations must be'
        ' put under "spec.template.metadata.annotations" to work',
    )


def test_creator_annotation_is_immutable() -> None:
    old = service()
    old["metadata"]["annotations"] = {"serving.knative.dev/creator": "alice"}
    serving.default_service(old)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["serving.knative.dev/creator"] = "mallory"
    assert only(errors_of(new, old)) == FieldError(
        "metadata.annotations.serving.knative.dev/creator", "annotation value is immutable"
    )


# ---------------------------------------------------------------------------------------------
# Revision names, template changes, immutability
# ---------------------------------------------------------------------------------------------


def named(name: str) -> Obj:
    svc = service()
    svc["spec"]["template"]["metadata"] = {"name": name}
    return svc


def test_chosen_revision_name_needs_the_service_prefix() -> None:
    assert only(errors_of(named("foo"))) == FieldError(
        "spec.template.metadata.name", 'invalid value: "foo" must have prefix "hello-"'
    )
    assert errors_of(named("hello-v1")) == []


def test_chosen_revision_name_is_a_dns1035_label() -> None:
    err = only(errors_of(named("hello-V1")))
    assert err.path == "spec.template.metadata.name"
    assert err.message.startswith("invalid value: not a DNS 1035 label: [")


def test_chosen_revision_name_with_generated_parent_name() -> None:
    svc = named("hello-v1")
    svc["metadata"] = {"generateName": "hello-"}
    assert only(errors_of(svc)) == FieldError(
        "spec.template.metadata.name", "must not set the field(s)"
    )


def test_template_changes_need_a_new_name() -> None:
    old = named("hello-v1")
    serving.default_service(old)
    new = copy.deepcopy(old)
    container(new)["image"] = "/srv/app2"
    assert only(errors_of(new, old)) == FieldError(
        "spec.template.metadata.name",
        "Saw the following changes without a name change (-old +new)",
    )
    new["spec"]["template"]["metadata"]["name"] = "hello-v2"
    assert errors_of(new, old) == []
    # Traffic and the Service's own metadata may change under the same name.
    same = copy.deepcopy(old)
    same["metadata"]["labels"] = {"team": "a"}
    assert errors_of(same, old) == []


def revision() -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": "hello-00001"},
        "spec": {"containers": [{"image": "/srv/app"}]},
    }


def test_revision_spec_is_immutable() -> None:
    old = revision()
    serving.default_revision(old)
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "a"}
    assert errors_of(new, old, kind="Revision") == []
    new["spec"]["containerConcurrency"] = 3
    assert only(errors_of(new, old, kind="Revision")) == FieldError(
        "spec", "Immutable fields changed (-old +new)"
    )


def test_revision_validation_paths() -> None:
    rev = revision()
    rev["spec"]["timeoutSeconds"] = 601
    rev["metadata"]["annotations"] = {"autoscaling.knative.dev/max-scale": "-1"}
    errs = errors_of(rev, kind="Revision")
    assert has(errs, "spec.timeoutSeconds", "expected 0 <= 601 <= 600")
    assert has(
        errs,
        "metadata.annotations.autoscaling.knative.dev/max-scale",
        "expected 0 <= -1 <= 2147483647",
    )


def test_revision_warnings_paths() -> None:
    rev = revision()
    rev["spec"]["nodeSelector"] = {"a": "b"}
    assert serving.revision_warnings(rev) == [
        "spec.nodeSelector is accepted but not enforced by the embedded engine"
    ]


def test_missing_spec_and_template() -> None:
    svc = service()
    del svc["spec"]
    assert only(serving.validate_service(svc, None)) == FieldError("spec", "missing field(s)")
    # Defaulting creates the spec, so what is missing is the container.
    assert only(errors_of(svc)) == FieldError("spec.template.spec.containers", "missing field(s)")
    svc["spec"] = {"template": {"spec": {"containers": [{"image": "a"}]}}, "extra": 1}
    assert only(errors_of(svc)) == FieldError("spec.extra", "must not set the field(s)")
    cfg = configuration()
    cfg["spec"] = {}
    cfg_errs = serving.validate_configuration(cfg, None)
    assert only(cfg_errs) == FieldError("spec.template", "missing field(s)")


# ---------------------------------------------------------------------------------------------
# Autoscaling annotations
# ---------------------------------------------------------------------------------------------

A = "spec.template.metadata.annotations"


def with_annotations(**annotations: str) -> Obj:
    svc = service()
    svc["spec"]["template"]["metadata"] = {
        "annotations": {
            f"autoscaling.knative.dev/{k.replace('_', '-')}": v for k, v in annotations.items()
        }
    }
    return svc


@pytest.mark.parametrize(
    ("annotations", "path", "message"),
    [
        ({"min_scale": "x"}, f"{A}.autoscaling.knative.dev/min-scale", "invalid value: x"),
        (
            {"min_scale": "-1"},
            f"{A}.autoscaling.knative.dev/min-scale",
            "expected 0 <= -1 <= 2147483647",
        ),
        (
            {"min_scale": "5", "max_scale": "2"},
            f"{A}.autoscaling.knative.dev/max-scale, {A}.autoscaling.knative.dev/min-scale",
            "max-scale=2 is less than min-scale=5",
        ),
        ({"initial_scale": "x"}, f"{A}.autoscaling.knative.dev/initial-scale", "invalid value: x"),
        (
            {"class": "foo.autoscaling.knative.dev"},
            f"{A}.autoscaling.knative.dev/class",
            "invalid value: foo.autoscaling.knative.dev; the class must be one of"
            " kpa.autoscaling.knative.dev, hpa.autoscaling.knative.dev",
        ),
        (
            {"metric": "cpu"},
            f"{A}.autoscaling.knative.dev/metric",
            "invalid value: cpu; the kpa.autoscaling.knative.dev class supports the metrics"
            " concurrency, rps",
        ),
        (
            {"class": "hpa.autoscaling.knative.dev", "metric": "rps"},
            f"{A}.autoscaling.knative.dev/metric",
            "invalid value: rps; the hpa.autoscaling.knative.dev class supports the metrics"
            " cpu, memory",
        ),
        (
            {"target": "0"},
            f"{A}.autoscaling.knative.dev/target",
            "target 0 should be at least 0.01",
        ),
        (
            {"target_utilization_percentage": "101"},
            f"{A}.autoscaling.knative.dev/target-utilization-percentage",
            "expected 1 <= 101 <= 100",
        ),
        ({"window": "5s"}, f"{A}.autoscaling.knative.dev/window", "expected 6s <= 5s <= 1h0m0s"),
        ({"window": "nope"}, f"{A}.autoscaling.knative.dev/window", "invalid value: nope"),
        (
            {"window": "6500ms"},
            f"{A}.autoscaling.knative.dev/window",
            "must be specified with at most second precision",
        ),
        (
            {"target_burst_capacity": "-2"},
            f"{A}.autoscaling.knative.dev/target-burst-capacity",
            "invalid value: -2",
        ),
        (
            {"activation_scale": "1"},
            f"{A}.autoscaling.knative.dev/activation-scale",
            "min-activate-scale=1 must be greater than 1",
        ),
        (
            {"scale_down_delay": "2h"},
            f"{A}.autoscaling.knative.dev/scale-down-delay",
            "expected 0s <= 2h <= 1h0m0s",
        ),
    ],
)
def test_autoscaling_annotation_errors(
    annotations: dict[str, str], path: str, message: str
) -> None:
    assert has(errors_of(with_annotations(**annotations)), path, message), errors_of(
        with_annotations(**annotations)
    )


def test_valid_autoscaling_annotations() -> None:
    svc = with_annotations(
        min_scale="1",
        max_scale="10",
        initial_scale="0",
        metric="rps",
        target="150",
        window="60s",
        scale_down_delay="15m",
        activation_scale="3",
    )
    assert errors_of(svc) == []
    legacy = service()
    legacy["spec"]["template"]["metadata"] = {
        "annotations": {
            "autoscaling.knative.dev/minScale": "3",
            "autoscaling.knative.dev/maxScale": "1",
        }
    }
    assert errors_of(legacy)[0].message == "max-scale=1 is less than min-scale=3"


def test_autoscaling_helpers() -> None:
    assert autoscaling.parse_duration("1m30s") == 90
    assert autoscaling.parse_duration("1.5h") == 5400
    assert autoscaling.parse_duration("10") is None
    assert autoscaling.class_of({}) == autoscaling.KPA
    assert autoscaling.get({"autoscaling.knative.dev/minScale": "2"}, autoscaling.MIN_SCALE) == (
        "autoscaling.knative.dev/minScale",
        "2",
    )


# ---------------------------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------------------------


def test_revision_name() -> None:
    assert naming.revision_name("hello", 1) == "hello-00001"
    assert naming.revision_name("hello", 123456) == "hello-123456"


def test_child_name_stays_within_63_chars() -> None:
    long = "a" * 60
    name = naming.child_name(long, "-00001")
    assert len(name) == 63
    assert name.endswith("-00001")
    assert name != naming.child_name("a" * 61, "-00001")
    assert naming.child_name("x", "-" + "s" * 70) == naming.child_name("x", "-" + "s" * 70)
    assert len(naming.child_name("x", "-" + "s" * 70)) <= 63


def test_hosts_and_urls() -> None:
    assert naming.route_host("hello", "default", "localhost") == "hello.default.localhost"
    assert (
        naming.tag_host("blue", "hello", "default", "localhost") == "blue-hello.default.localhost"
    )
    assert naming.url("hello.default.localhost") == "http://hello.default.localhost"
    assert naming.url("h", 80) == "http://h"
    assert naming.url("h", 8080) == "http://h:8080"
    assert naming.url("h", 443, "https") == "https://h"


# ---------------------------------------------------------------------------------------------
# Children and label propagation
# ---------------------------------------------------------------------------------------------


def defaulted_service() -> Obj:
    svc = service()
    svc["metadata"].update(
        uid="svc-uid",
        labels={"team": "a"},
        annotations={
            "note": "x",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    )
    svc["spec"]["template"]["metadata"] = {
        "labels": {"tier": "web"},
        "annotations": {"autoscaling.knative.dev/min-scale": "1"},
    }
    serving.default_service(svc)
    return svc


def test_configuration_from_service() -> None:
    svc = defaulted_service()
    cfg = serving.configuration_from_service(svc)
    assert cfg["apiVersion"] == "serving.knative.dev/v1"
    assert cfg["kind"] == "Configuration"
    assert cfg["metadata"]["name"] == "hello"
    assert cfg["metadata"]["namespace"] == "default"
    assert cfg["metadata"]["labels"] == {
        "team": "a",
        "serving.knative.dev/service": "hello",
        "serving.knative.dev/serviceUID": "svc-uid",
    }
    assert cfg["metadata"]["annotations"] == {"note": "x"}
    assert cfg["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "name": "hello",
            "uid": "svc-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert cfg["spec"] == {"template": svc["spec"]["template"]}
    assert cfg["spec"]["template"] is not svc["spec"]["template"]
    assert errors_of(cfg, kind="Configuration") == []


def test_service_metadata_changes_do_not_change_the_template() -> None:
    svc = defaulted_service()
    before = serving.configuration_from_service(svc)["spec"]
    svc["metadata"]["labels"]["team"] = "b"
    svc["metadata"]["annotations"]["note"] = "y"
    assert serving.configuration_from_service(svc)["spec"] == before
    svc["spec"]["template"]["metadata"]["labels"]["tier"] = "api"
    assert serving.configuration_from_service(svc)["spec"] != before


def test_route_from_service() -> None:
    svc = defaulted_service()
    svc["spec"]["traffic"] = [
        {"percent": 90, "revisionName": "hello-00001", "latestRevision": False},
        {"percent": 10, "latestRevision": True, "tag": "next"},
    ]
    rt = serving.route_from_service(svc)
    assert rt["kind"] == "Route"
    assert rt["metadata"]["labels"]["serving.knative.dev/service"] == "hello"
    assert rt["spec"]["traffic"] == [
        {"percent": 90, "revisionName": "hello-00001", "latestRevision": False},
        {"percent": 10, "latestRevision": True, "tag": "next", "configurationName": "hello"},
    ]
    assert "configurationName" not in svc["spec"]["traffic"][1]
    assert errors_of(rt, kind="Route") == []


def test_route_from_undefaulted_service_routes_to_latest() -> None:
    svc = service()
    assert serving.route_from_service(svc)["spec"]["traffic"] == [
        {"percent": 100, "latestRevision": True, "configurationName": "hello"}
    ]


def test_revision_from_configuration() -> None:
    cfg = serving.configuration_from_service(defaulted_service())
    cfg["metadata"].update(uid="cfg-uid", generation=3)
    rev = serving.revision_from_configuration(cfg, now="2024-01-01T00:00:00Z")
    assert rev["kind"] == "Revision"
    assert rev["metadata"]["name"] == "hello-00003"
    assert rev["metadata"]["labels"] == {
        "tier": "web",
        "serving.knative.dev/configuration": "hello",
        "serving.knative.dev/configurationGeneration": "3",
        "serving.knative.dev/configurationUID": "cfg-uid",
        "serving.knative.dev/service": "hello",
        "serving.knative.dev/serviceUID": "svc-uid",
        "serving.knative.dev/routingState": "pending",
    }
    assert rev["metadata"]["annotations"] == {
        "autoscaling.knative.dev/min-scale": "1",
        "serving.knative.dev/routingStateModified": "2024-01-01T00:00:00Z",
    }
    assert rev["metadata"]["ownerReferences"][0]["kind"] == "Configuration"
    assert rev["metadata"]["ownerReferences"][0]["uid"] == "cfg-uid"
    assert rev["spec"] == cfg["spec"]["template"]["spec"]


def test_revision_named_by_template_and_creator() -> None:
    cfg = configuration(annotations={"serving.knative.dev/lastModifier": "bob"})
    cfg["spec"]["template"]["metadata"] = {"name": "hello-v2"}
    rev = serving.revision_from_configuration(cfg)
    assert rev["metadata"]["name"] == "hello-v2"
    assert rev["metadata"]["annotations"] == {"serving.knative.dev/creator": "bob"}
    assert "serving.knative.dev/service" not in rev["metadata"]["labels"]
    cfg["spec"]["template"]["metadata"] = {"generateName": "hello-"}
    rev = serving.revision_from_configuration(cfg)
    assert "name" not in rev["metadata"]
    assert rev["metadata"]["generateName"] == "hello-"


def test_child_labels_for_routes_and_unknown_kinds() -> None:
    assert serving.child_labels("Route", route()) == {"serving.knative.dev/routingState": "active"}
    with pytest.raises(ValueError, match="Revision"):
        serving.child_labels("Revision", revision())
    with pytest.raises(ValueError, match="Route"):
        serving.child_annotations("Route", route())
    assert serving.routing_annotations(["b", "a", "b"], "t") == {
        "serving.knative.dev/routes": "a,b",
        "serving.knative.dev/routingStateModified": "t",
    }
    assert serving.routing_annotations([], "t") == {"serving.knative.dev/routingStateModified": "t"}


# ---------------------------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(spec="x"),
        lambda s: s.update(metadata="x"),
        lambda s: s["spec"].update(template="x"),
        lambda s: s["spec"].update(traffic="x"),
        lambda s: s["spec"].update(traffic=["x"]),
        lambda s: s["spec"]["template"].update(spec="x"),
        lambda s: s["spec"]["template"].update(metadata="x"),
        lambda s: s["spec"]["template"]["spec"].update(containers="x"),
        lambda s: s["spec"]["template"]["spec"].update(containers=["x"]),
        lambda s: container(s).update(env="x", ports="x", resources="x", readinessProbe="x"),
        lambda s: container(s).update(env=["x"], ports=["x"], resources={"limits": "x"}),
        lambda s: container(s).update(livenessProbe={"httpGet": "x"}),
    ],
)
def test_malformed_input_gives_errors_not_exceptions(mutate: Any) -> None:
    svc = service()
    mutate(svc)
    assert errors_of(svc) != []
