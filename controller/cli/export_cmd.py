"""`flint export`: what was authored on this Flint, written for `kubectl apply` on a cluster.

Every served kind is read (discovery: sources and builds too once they are served), the objects
`controller.cli.exported` keeps are written as a YAML stream (or `-o json`, a `v1 List`), and
each is checked against the Kubernetes engine's admission, so what a cluster would refuse is said
before anything is applied there. An image that exists on this machine only (a folder, a stored
snapshot) is named on stderr: `--image OLD=NEW` writes the registry reference built from it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from controller.cli.client import ApiClient, ApiError
from controller.cli.errors import usage
from controller.cli.exported import as_list, export_objects, local_images
from controller.cli.kinds import ResourceInfo
from controller.cli.output import to_json, to_yaml

Obj = dict[str, Any]


def parse_images(pairs: list[str]) -> dict[str, str]:
    """`--image OLD=NEW` flags as a map; a pair without `=` or with an empty side is refused."""
    out: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise usage(f"--image {pair!r}: expected OLD=NEW, e.g. "
                        "/home/me/app=registry.example.com/app:1.0")
        out[old.strip()] = new.strip()
    return out


def cluster_refusals(objs: list[Obj]) -> list[str]:
    """What the Kubernetes engine's admission would refuse in `objs`, one line per field."""
    from controller.api.registry import UnknownResource, admit, registry_for
    from controller.api.types import Invalid

    registry = registry_for("kubernetes")
    lines: list[str] = []
    for obj in objs:
        if obj.get("kind") == "Namespace":
            continue
        try:
            rt = registry.for_api_version_kind(str(obj.get("apiVersion")), str(obj.get("kind")))
        except UnknownResource:
            continue  # a kind of this server only: the cluster's own admission judges it
        try:
            admit(rt, obj)
        except Invalid as e:
            name = f"{obj['kind']} {(obj.get('metadata') or {}).get('namespace', '')}/{e.name}"
            lines += [f"{name}: {err}" for err in e.errors]
    return lines


async def read_all(api: ApiClient, namespace: str | None) -> list[Obj]:
    """Every object of every served Flint kind (`namespace` None: of every namespace)."""
    objs: list[Obj] = []
    kinds: list[ResourceInfo] = [r for r in await api.resources() if r.group]
    for info in kinds:
        try:
            listed = await api.list(info, namespace)
        except ApiError as e:
            if e.code_http in (404, 405):
                continue  # discovered but not listable here
            raise
        for item in listed.get("items") or []:
            if isinstance(item, dict):
                objs.append({"apiVersion": info.api_version, "kind": info.kind, **item})
    return objs


async def run_export(api: ApiClient, args: argparse.Namespace) -> int:
    images = parse_images(args.image or [])
    namespace = None if args.all_namespaces else args.namespace
    found = await read_all(api, namespace)
    objs = export_objects(found, images, namespaces=namespace != "default")
    for img in (i for o in objs for i in local_images(o)):
        print(f"Warning: {img.kind} {img.namespace}/{img.name}: {img.path} {img.image!r} exists on "
              f"this machine only: build it into a registry and pass --image {img.image}=REF",
              file=sys.stderr, flush=True)
    for line in cluster_refusals(objs):
        print(f"Warning: a cluster would refuse {line}", file=sys.stderr, flush=True)
    text = (to_json(as_list(objs)) if args.output == "json"
            else "---\n".join(to_yaml(o) for o in objs).rstrip("\n"))
    if args.file:
        await asyncio.to_thread(Path(args.file).write_text, text + "\n", encoding="utf-8")
        print(f"wrote {len(objs)} object(s) to {args.file}", file=sys.stderr, flush=True)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="write what was authored here for `kubectl apply` on a cluster")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="every namespace (Namespace objects included for all but default)")
    p.add_argument("--image", action="append", default=[], metavar="OLD=NEW",
                   help="write container image NEW where OLD is (a folder or snapshot of this "
                   "machine → its registry image; repeatable)")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                   help="a YAML stream (default) or a v1 List in JSON")
    p.add_argument("-f", "--file", metavar="PATH", help="write to PATH instead of stdout")
    p.set_defaults(handler=run_export)
