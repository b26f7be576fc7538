"""Manifests for `flint apply`: multi-document YAML from files, folders or stdin."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from controller.cli.client import CliError

Obj = dict[str, Any]
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Manifest:
    """One object and where it came from; `base` is the folder its relative paths mean."""

    obj: Obj
    source: str
    base: Path


def is_local_path(image: str) -> bool:
    """`.`, `..`, `./x`, `../x` are local folders; `nginx:1.25` or `/abs` are not relative."""
    return image in (".", "..") or image.startswith(("./", "../"))


def absolute_image(image: str, base: Path) -> str:
    """A relative local image path resolved against `base`; anything else unchanged."""
    if not is_local_path(image):
        return image
    return os.path.normpath(os.path.join(os.path.abspath(base), image))


def command_line_image(image: str, cwd: Path) -> str:
    """`--image` on the command line: an existing folder (`examples/hello`, `.`) becomes an
    absolute path; anything else (`nginx:1.25`) is left for the server to judge."""
    if is_local_path(image) or (":" not in image and (cwd / image).is_dir()):
        return os.path.normpath(os.path.join(os.path.abspath(cwd), image))
    return image


def _containers(obj: Obj) -> list[Obj]:
    kind = obj.get("kind")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if spec is None:
        return []
    if kind in ("Service", "Configuration"):
        template = spec.get("template")
        pod = template.get("spec") if isinstance(template, dict) else None
    elif kind == "Revision":
        pod = spec
    else:
        return []
    containers = pod.get("containers") if isinstance(pod, dict) else None
    if not isinstance(containers, list):
        return []
    return [c for c in containers if isinstance(c, dict)]


def resolve_images(obj: Obj, base: Path) -> Obj:
    """A copy of a serving object whose relative container images are absolute paths."""
    if not str(obj.get("apiVersion", "")).startswith("serving.knative.dev/"):
        return obj
    out = copy.deepcopy(obj)
    for c in _containers(out):
        image = c.get("image")
        if isinstance(image, str):
            c["image"] = absolute_image(image, base)
    return out


def parse_documents(text: str, source: str, base: Path) -> list[Manifest]:
    """Every non-empty document of a YAML (or JSON) stream; a `List` contributes its items."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise CliError(f"error parsing {source}: {e}") from None
    out: list[Manifest] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise CliError(f"error parsing {source}: document {i + 1} is not an object")
        items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
        for item in items or []:
            if not isinstance(item, dict):
                raise CliError(f"error parsing {source}: a List item is not an object")
            for field in ("apiVersion", "kind"):
                if not item.get(field):
                    raise CliError(
                        f"error validating {source}: {field} not set in document {i + 1}"
                    )
            out.append(Manifest(resolve_images(item, base), source, base))
    return out


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    if not path.exists():
        raise CliError(f'the path "{path}" does not exist')
    return [path]


def load(filenames: Iterable[str], stdin: TextIO, cwd: Path | None = None) -> list[Manifest]:
    """The manifests named by `-f` arguments in order; `-` reads stdin (relative to the CWD)."""
    here = cwd or Path.cwd()
    out: list[Manifest] = []
    for name in filenames:
        if name == "-":
            out.extend(parse_documents(stdin.read(), "<stdin>", here))
            continue
        for f in _files(here / name):
            try:
                text = f.read_text(encoding="utf-8")
            except OSError as e:
                raise CliError(f"cannot read {f}: {e.strerror}") from None
            out.extend(parse_documents(text, str(f), f.parent))
    return out
