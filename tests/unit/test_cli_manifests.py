"""Manifest loading for `flint apply`; local image paths resolved against the manifest folder."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from controller.cli.apply import LAST_APPLIED, canonical, contains, desired, unchanged
from controller.cli.client import CliError
from controller.cli.manifests import absolute_image, is_local_path, load, parse_documents

SERVICE = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: {image}
"""


@pytest.mark.parametrize(
    ("image", "local"),
    [
        (".", True),
        ("..", True),
        ("./app", True),
        ("../apps/hello", True),
        ("nginx:1.25", False),
        ("ghcr.io/x/y@sha256:abc", False),
        ("/srv/app", False),
        ("app", False),
        (".hidden", False),
    ],
)
def test_is_local_path(image: str, local: bool) -> None:
    assert is_local_path(image) is local


def test_absolute_image_resolves_relative_to_base(tmp_path: Path) -> None:
    assert absolute_image("./app", tmp_path) == str(tmp_path / "app")
    assert absolute_image(".", tmp_path) == str(tmp_path)
    assert absolute_image("../x", tmp_path / "sub") == str(tmp_path / "x")
    assert absolute_image("nginx:1.25", tmp_path) == "nginx:1.25"
    assert absolute_image("/abs/app", tmp_path) == "/abs/app"


def test_file_images_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    folder = tmp_path / "examples" / "hello"
    folder.mkdir(parents=True)
    (folder / "service.yaml").write_text(SERVICE.format(image="./app"))
    (m,) = load([str(folder / "service.yaml")], io.StringIO(), cwd=tmp_path / "elsewhere")
    image = m.obj["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == str(folder / "app")
    assert m.base == folder


def test_relative_filename_is_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(SERVICE.format(image="."))
    (m,) = load(["svc.yaml"], io.StringIO(), cwd=tmp_path)
    assert m.obj["spec"]["template"]["spec"]["containers"][0]["image"] == str(tmp_path)


def test_stdin_resolves_against_cwd(tmp_path: Path) -> None:
    (m,) = load(["-"], io.StringIO(SERVICE.format(image="../up")), cwd=tmp_path / "here")
    image = m.obj["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == os.path.normpath(str(tmp_path / "up"))
    assert m.source == "<stdin>"


def test_registry_image_left_alone(tmp_path: Path) -> None:
    (m,) = parse_documents(SERVICE.format(image="nginx:1.25"), "x", tmp_path)
    assert m.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"


def test_revision_and_configuration_images(tmp_path: Path) -> None:
    text = """
apiVersion: serving.knative.dev/v1
kind: Revision
metadata: {name: r}
spec:
  containers: [{image: ./a}, {image: ./b}]
---
apiVersion: serving.knative.dev/v1
kind: Configuration
metadata: {name: c}
spec:
  template:
    spec:
      containers: [{image: ./c}]
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: b}
spec:
  image: ./not-touched
"""
    rev, cfg, broker = parse_documents(text, "x", tmp_path)
    assert [c["image"] for c in rev.obj["spec"]["containers"]] == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]
    assert cfg.obj["spec"]["template"]["spec"]["containers"][0]["image"] == str(tmp_path / "c")
    assert broker.obj["spec"]["image"] == "./not-touched"


def test_multi_document_skips_empty_and_expands_lists(tmp_path: Path) -> None:
    text = (
        "---\n"
        + SERVICE.format(image="x:1")
        + "---\n---\n"
        + "apiVersion: v1\nkind: List\nitems:\n"
        + "  - {apiVersion: serving.knative.dev/v1, kind: Route, metadata: {name: r}}\n"
    )
    docs = parse_documents(text, "x", tmp_path)
    assert [d.obj["kind"] for d in docs] == ["Service", "Route"]


def test_directory_applies_its_yaml_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(SERVICE.format(image="x:1").replace("hello", "b"))
    (tmp_path / "a.yml").write_text(SERVICE.format(image="x:1").replace("hello", "a"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    docs = load([str(tmp_path)], io.StringIO())
    assert [d.obj["metadata"]["name"] for d in docs] == ["a", "b"]


def test_repeated_filenames_keep_order(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(SERVICE.format(image="x:1").replace("hello", "one"))
    (tmp_path / "two.yaml").write_text(SERVICE.format(image="x:1").replace("hello", "two"))
    docs = load(["two.yaml", "one.yaml"], io.StringIO(), cwd=tmp_path)
    assert [d.obj["metadata"]["name"] for d in docs] == ["two", "one"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "error parsing"),
        ("- 1\n- 2\n", "is not an object"),
        ("kind: Service\nmetadata: {name: x}\n", "apiVersion not set"),
    ],
)
def test_bad_manifests_are_cli_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        parse_documents(text, "bad.yaml", tmp_path)


def test_missing_file_is_a_cli_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="does not exist"):
        load(["nope.yaml"], io.StringIO(), cwd=tmp_path)


# -- the apply decision ------------------------------------------------------------------------


def _manifest() -> dict[str, object]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello", "annotations": {"a": "1"}},
        "spec": {"template": {"spec": {"containers": [{"image": "/x"}]}}},
    }


def test_desired_records_itself_as_last_applied() -> None:
    want = desired(_manifest(), "ns1")
    assert want["metadata"]["namespace"] == "ns1"
    assert want["metadata"]["annotations"]["a"] == "1"
    recorded = want["metadata"]["annotations"][LAST_APPLIED]
    assert recorded == canonical(want)
    assert LAST_APPLIED not in recorded


def test_contains_allows_server_defaults_but_not_differences() -> None:
    live = {"spec": {"a": 1, "b": [{"x": 1, "y": 2}], "defaulted": True}}
    assert contains(live, {"spec": {"a": 1, "b": [{"x": 1}]}})
    assert not contains(live, {"spec": {"a": 2}})
    assert not contains(live, {"spec": {"b": [{"x": 1}, {"x": 2}]}})
    assert not contains(live, {"spec": {"missing": 1}})


def test_unchanged_needs_same_manifest_and_matching_live_object() -> None:
    want = desired(_manifest(), "default")
    live = {
        **want,
        "metadata": {**want["metadata"], "resourceVersion": "7", "generation": 1},
        "spec": {
            "template": {"spec": {"containers": [{"image": "/x"}], "containerConcurrency": 0}},
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
        "status": {"observedGeneration": 1},
    }
    assert unchanged(live, want)
    # someone edited the live object behind apply's back
    edited = {**live, "spec": {"template": {"spec": {"containers": [{"image": "/y"}]}}}}
    assert not unchanged(edited, want)
    # the manifest changed (an annotation removed: the live object still "contains" it)
    smaller = _manifest()
    smaller["metadata"] = {"name": "hello"}
    assert not unchanged(live, desired(smaller, "default"))


def test_command_line_image_takes_existing_folders_as_paths(tmp_path: Path) -> None:
    from controller.cli.manifests import command_line_image

    (tmp_path / "examples" / "hello").mkdir(parents=True)
    assert command_line_image("examples/hello", tmp_path) == str(tmp_path / "examples" / "hello")
    assert command_line_image(".", tmp_path) == str(tmp_path)
    assert command_line_image("nginx:1.25", tmp_path) == "nginx:1.25"
    assert command_line_image("missing/dir", tmp_path) == "missing/dir"
