"""What the local runtime runs for a revision: argv (command, args, Procfile), env, probes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from controller.reconcilers.replica_spec import (
    NotRunnable,
    argv,
    describe_argv,
    is_local_image,
    local_image_path,
    procfile_web,
    replica_spec,
)
from controller.runtime.base import Probe

Obj = dict[str, Any]


def run(command: tuple[str, ...], cwd: Path) -> str:
    """Run argv as the runtime would (no shell of our own) and return its stdout."""
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10)
    return out.stdout


# ------------------------------------------------------------------------------------------
# procfile_web
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web: python app.py\n", "python app.py"),
        ("worker: celery\nweb:   gunicorn app:app -b :$PORT  \n", "gunicorn app:app -b :$PORT"),
        ("  web  : node server.js", "node server.js"),
        ("web: python -c 'print(1)' # a: b", "python -c 'print(1)' # a: b"),
        ("worker: celery\n", None),
        ("web:\n", None),
        ("webapp: x\n", None),
        ("", None),
        ("# web: commented? no, name is '# web'\n", None),
    ],
)
def test_procfile_web(text: str, expected: str | None) -> None:
    assert procfile_web(text) == expected


def test_procfile_first_web_line_wins() -> None:
    assert procfile_web("web: one\nweb: two\n") == "one"


def test_procfile_windows_line_endings() -> None:
    assert procfile_web("release: x\r\nweb: python app.py\r\n") == "python app.py"


# ------------------------------------------------------------------------------------------
# argv
# ------------------------------------------------------------------------------------------


def test_command_and_args() -> None:
    c = {"command": ["python", "app.py"], "args": ["--port", 8080]}
    assert argv(c, None) == ("python", "app.py", "--port", "8080")


def test_command_replaces_the_procfile() -> None:
    c = {"command": ["./server"], "args": ["-v"]}
    assert argv(c, "python app.py") == ("./server", "-v")


def test_procfile_without_args(tmp_path: Path) -> None:
    cmd = argv({}, "echo hello")
    assert cmd[:2] == ("/bin/sh", "-c")
    assert run(cmd, tmp_path) == "hello\n"


def test_args_are_appended_to_the_procfile_command(tmp_path: Path) -> None:
    cmd = argv({"args": ["a b", "$HOME", "c"]}, "printf '[%s]'")
    assert run(cmd, tmp_path) == "[a b][$HOME][c]"


def test_procfile_command_sees_port_variable(tmp_path: Path) -> None:
    cmd = argv({}, "echo $PORT")
    out = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=10,
        env={"PORT": "4321", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "4321"


@pytest.mark.parametrize(
    ("procfile", "expected"),
    [
        ("echo one && echo two", "one\ntwo\n"),
        ("GREETING=hi sh -c 'echo $GREETING'", "hi\n"),
    ],
)
def test_procfile_runs_like_a_shell_command(tmp_path: Path, procfile: str, expected: str) -> None:
    assert run(argv({}, procfile), tmp_path) == expected


def test_nothing_to_run_is_not_runnable_with_a_helpful_message() -> None:
    with pytest.raises(NotRunnable) as info:
        argv({"args": ["--port", "8080"]}, None)
    message = str(info.value)
    assert "command" in message
    assert "Procfile" in message
    assert "web:" in message
    assert isinstance(info.value, ValueError)


def test_empty_command_list_falls_back_to_the_procfile() -> None:
    assert argv({"command": [], "args": []}, "python app.py")[:2] == ("/bin/sh", "-c")


def test_describe_argv_quotes() -> None:
    assert describe_argv(("python", "-c", "print('hi there')")) == (
        "python -c 'print('\"'\"'hi there'\"'\"')'"
    )


# ------------------------------------------------------------------------------------------
# replica_spec
# ------------------------------------------------------------------------------------------


def rev(container: Obj, *, ns: str | None = "prod", labels: bool = True) -> Obj:
    meta: Obj = {"name": "hello-00001"}
    if ns is not None:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = {
            "serving.knative.dev/service": "hello",
            "serving.knative.dev/configuration": "hello-cfg",
        }
    return {"metadata": meta, "spec": {"containers": [container]}}


def test_replica_spec_basics(tmp_path: Path) -> None:
    c = {
        "image": "/src/app",
        "command": ["python", "app.py"],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": 2}, {"name": "EMPTY"}],
        "workingDir": "sub",
    }
    spec = replica_spec(rev(c), tmp_path, None)
    assert spec.namespace == "prod"
    assert spec.revision == "hello-00001"
    assert spec.revision_key == "prod/hello-00001"
    assert spec.service == "hello"
    assert spec.configuration == "hello-cfg"
    assert spec.image_dir == tmp_path
    assert spec.command == ("python", "app.py")
    assert spec.env == {"A": "1", "B": "2", "EMPTY": ""}
    assert spec.working_dir == "sub"
    assert spec.memory_limit_bytes is None
    assert spec.liveness is None
    assert spec.readiness == Probe()  # a TCP probe on $PORT by default
    assert spec.readiness.kind == "tcp"


def test_replica_spec_defaults_without_labels_or_namespace(tmp_path: Path) -> None:
    spec = replica_spec(rev({"command": ["x"]}, ns=None, labels=False), tmp_path, None)
    assert (spec.namespace, spec.service, spec.configuration) == ("default", "", "")
    assert spec.working_dir is None
    assert spec.env == {}


def test_replica_spec_uses_the_procfile(tmp_path: Path) -> None:
    spec = replica_spec(rev({"args": ["--debug"]}), tmp_path, "python app.py")
    assert spec.command[:2] == ("/bin/sh", "-c")
    assert "python app.py" in spec.command[2]
    assert spec.command[-1] == "--debug"


def test_replica_spec_not_runnable(tmp_path: Path) -> None:
    with pytest.raises(NotRunnable):
        replica_spec(rev({"image": "/src/app"}), tmp_path, None)


def test_http_readiness_probe(tmp_path: Path) -> None:
    c = {
        "command": ["x"],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": 8081},
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 5,
            "initialDelaySeconds": 1.5,
        },
    }
    assert replica_spec(rev(c), tmp_path, None).readiness == Probe(
        kind="http", path="/healthz", port=8081, period_s=2.0, timeout_s=3.0,
        failure_threshold=5, initial_delay_s=1.5,
    )


def test_http_probe_defaults(tmp_path: Path) -> None:
    c = {"command": ["x"], "readinessProbe": {"httpGet": {}}}
    probe = replica_spec(rev(c), tmp_path, None).readiness
    assert (probe.kind, probe.path, probe.port) == ("http", "/", None)
    assert (probe.timeout_s, probe.failure_threshold, probe.initial_delay_s) == (1.0, 3, 0.0)
    assert probe.period_s == Probe().period_s  # fast probing while unset


def test_named_or_zero_port_means_the_replicas_port(tmp_path: Path) -> None:
    for port in ("http", 0):
        c = {"command": ["x"], "readinessProbe": {"tcpSocket": {"port": port}}}
        probe = replica_spec(rev(c), tmp_path, None).readiness
        assert (probe.kind, probe.port) == ("tcp", None)


def test_tcp_liveness_probe(tmp_path: Path) -> None:
    c = {
        "command": ["x"],
        "livenessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 10},
    }
    spec = replica_spec(rev(c), tmp_path, None)
    assert spec.liveness == Probe(kind="tcp", port=9000, period_s=10.0)
    assert spec.readiness == Probe()


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("128Mi", 128 * 1024 * 1024), ("1G", 10**9), ("1.5Gi", 3 * 512 * 1024 * 1024), (1000, 1000)],
)
def test_memory_limit(tmp_path: Path, memory: Any, expected: int) -> None:
    c = {"command": ["x"], "resources": {"limits": {"memory": memory, "cpu": "1"}}}
    assert replica_spec(rev(c), tmp_path, None).memory_limit_bytes == expected


def test_memory_request_is_not_a_limit(tmp_path: Path) -> None:
    c = {"command": ["x"], "resources": {"requests": {"memory": "64Mi"}}}
    assert replica_spec(rev(c), tmp_path, None).memory_limit_bytes is None


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "local"),
    [
        ("/srv/app", True),
        ("./app", True),
        ("../app", True),
        (".", True),
        ("..", True),
        ("file:///srv/app", True),
        ("ghcr.io/knative/helloworld-go:latest", False),
        ("gcr.io/knative-samples/helloworld-go", False),
        ("nginx", False),
        ("app", False),
        ("", False),
        (".hidden", False),
    ],
)
def test_is_local_image(image: str, local: bool) -> None:
    assert is_local_image(image) is local


def test_local_image_path() -> None:
    assert local_image_path("/srv/app") == Path("/srv/app")
    assert local_image_path("file:///srv/app") == Path("/srv/app")


@pytest.mark.parametrize("image", ["./app", "../app", ".", "file://app"])
def test_relative_local_image_is_not_runnable(image: str) -> None:
    with pytest.raises(NotRunnable, match="absolute"):
        local_image_path(image)
