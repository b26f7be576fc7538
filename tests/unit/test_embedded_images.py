"""The embedded engine refuses a relative image at admission: only `flint apply` can resolve it."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import serving
from controller.api.serving_embedded import is_relative_image
from controller.api.types import FieldError

Obj = dict[str, Any]


def _pod(image: str) -> Obj:
    return {"containers": [{"image": image}]}


def _errors(kind: str, image: str, *, embedded: bool = True) -> list[FieldError]:
    if kind == "Revision":
        obj: Obj = {"metadata": {"name": "hello-00001"}, "spec": _pod(image)}
        serving.default_revision(obj)
        return serving.validate_revision(obj, None, embedded=embedded)
    obj = {"metadata": {"name": "hello"}, "spec": {"template": {"spec": _pod(image)}}}
    if kind == "Service":
        serving.default_service(obj)
        return serving.validate_service(obj, None, embedded=embedded)
    serving.default_configuration(obj)
    return serving.validate_configuration(obj, None, embedded=embedded)


@pytest.mark.parametrize("image", [".", "..", "./", "./app", "../app", "file://./app"])
@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("Service", "spec.template.spec.containers[0].image"),
        ("Configuration", "spec.template.spec.containers[0].image"),
        ("Revision", "spec.containers[0].image"),
    ],
)
def test_a_relative_image_is_refused_naming_flint_apply(kind: str, path: str, image: str) -> None:
    [error] = _errors(kind, image)
    assert error.path == path
    assert error.message.startswith("not supported by the embedded engine: a relative path")
    assert "flint apply" in error.message


@pytest.mark.parametrize("image", ["/srv/app", "file:///srv/app", "nginx:1.25", "app", ".app"])
def test_absolute_paths_and_registry_images_pass(image: str) -> None:
    assert _errors("Service", image) == []


def test_the_kubernetes_engine_leaves_images_to_the_cluster() -> None:
    assert _errors("Service", "./", embedded=False) == []


@pytest.mark.parametrize(
    ("image", "relative"),
    [(".", True), ("../x", True), ("file://../x", True), ("/x", False), ("x/y", False),
     ("...", False), ("file:///x", False)],
)
def test_is_relative_image(image: str, relative: bool) -> None:
    assert is_relative_image(image) is relative
