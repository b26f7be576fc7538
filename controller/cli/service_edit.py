"""`flint service create/update` flags as pure edits of a Service object, with kn's semantics."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.cli.errors import CliError, usage
from controller.cli.manifests import command_line_image

Obj = dict[str, Any]
AUTOSCALING_PREFIX = "autoscaling.knative.dev/"
LATEST = "@latest"


@dataclass
class ServiceFlags:
    """The parsed kn-style flags of `service create|update`; None/empty means "not given"."""

    image: str | None = None
    cmd: list[str] | None = None
    args: list[str] | None = None
    env: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    service_annotations: list[str] = field(default_factory=list)
    revision_annotations: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    concurrency_limit: int | None = None
    scale_min: int | None = None
    scale_max: int | None = None
    scale_target: int | None = None
    revision_name: str | None = None
    traffic: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    untags: list[str] = field(default_factory=list)

    def touches_traffic(self) -> bool:
        return bool(self.traffic or self.tags or self.untags)


# -- flag values ---------------------------------------------------------------------------------


def parse_key_values(items: Sequence[str], flag: str) -> tuple[dict[str, str], list[str]]:
    """`KEY=VALUE` sets, `KEY-` removes; anything else is a usage error naming the flag."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for item in items:
        if "=" in item:
            key, value = item.split("=", 1)
            if not key:
                raise usage(f"--{flag} {item!r}: the key is empty; use KEY=VALUE or KEY-")
            sets[key] = value
        elif item.endswith("-") and len(item) > 1:
            removes.append(item[:-1])
        else:
            raise usage(f"--{flag} {item!r}: expected KEY=VALUE to set or KEY- to remove")
    return sets, removes


def parse_pairs(items: Sequence[str], flag: str, what: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise usage(f"--{flag} {item!r}: expected {what}")
        out.append((key, value))
    return out


def parse_traffic(items: Sequence[str]) -> list[tuple[str, int]]:
    """`REV=PCT`, `TAG=PCT` or `@latest=PCT` with PCT a whole number from 0 to 100."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for key, value in parse_pairs(
        items, "traffic", "REVISION=PERCENT, TAG=PERCENT or @latest=PERCENT"
    ):
        pct = value.rstrip("%")
        if not pct.isdigit() or int(pct) > 100:
            raise usage(
                f"--traffic {key}={value}: the percent must be a whole number from 0 to 100"
            )
        if key in seen:
            raise usage(
                f"repetition of identifier {key} is not allowed, use only once with --traffic flag"
            )
        seen.add(key)
        out.append((key, int(pct)))
    return out


def validate(flags: ServiceFlags) -> None:
    """Every flag value's syntax, checked before anything is read from the server."""
    for items, name in (
        (flags.env, "env"),
        (flags.annotations, "annotation"),
        (flags.service_annotations, "annotation-service"),
        (flags.revision_annotations, "annotation-revision"),
        (flags.labels, "label"),
    ):
        parse_key_values(items, name)
    parse_traffic(flags.traffic)
    parse_pairs(flags.tags, "tag", "REVISION=TAG or @latest=TAG")
    if flags.concurrency_limit is not None and flags.concurrency_limit < 0:
        raise usage("--concurrency-limit must be 0 (unlimited) or more")
    for value, name in (
        (flags.scale_min, "scale-min"),
        (flags.scale_max, "scale-max"),
        (flags.scale_target, "scale-target"),
    ):
        if value is not None and value < 0:
            raise usage(f"--{name} must be 0 or more")


# -- revision names ------------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{\s*\.(Service|Generation|Random)\s*(\d*)\s*\}\}")


def revision_name(
    template: str, service: str, generation: int, random: Callable[[int], str]
) -> str:
    """kn's `--revision-name`: `{{.Service}}`, `{{.Generation}}`, `{{.Random N}}` expanded, and
    the `{service}-` prefix Knative requires added when missing."""

    def expand(m: re.Match[str]) -> str:
        if m.group(1) == "Service":
            return service
        if m.group(1) == "Generation":
            return str(generation)
        return random(int(m.group(2) or "5"))

    name = _TEMPLATE.sub(expand, template)
    if "{{" in name:
        raise usage(
            f"--revision-name {template!r}: only {{{{.Service}}}}, {{{{.Generation}}}} and "
            "{{.Random N}} can be used in the template"
        )
    if name and not name.startswith(f"{service}-"):
        name = f"{service}-{name}"
    return name


# -- the revision template -----------------------------------------------------------------------


def _container(svc: Obj) -> Obj:
    pod = svc.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    containers = pod.setdefault("containers", [])
    if not containers:
        containers.append({})
    first: Obj = containers[0]
    return first


def edit_env(env: list[Obj], sets: dict[str, str], removes: Sequence[str]) -> list[Obj]:
    """Existing variables keep their place and take new values; new ones are appended."""
    out = [copy.deepcopy(e) for e in env if e.get("name") not in removes]
    for key, value in sets.items():
        for e in out:
            if e.get("name") == key:
                e.pop("valueFrom", None)
                e["value"] = value
                break
        else:
            out.append({"name": key, "value": value})
    return out


def _edit_map(obj: Obj, key: str, sets: dict[str, str], removes: Sequence[str]) -> None:
    if not sets and not removes:
        return
    md = obj.setdefault("metadata", {})
    current = dict(md.get(key) or {})
    for k in removes:
        current.pop(k, None)
    current.update(sets)
    if current:
        md[key] = current
    else:
        md.pop(key, None)


def edit_annotations(svc: Obj, flags: ServiceFlags) -> None:
    """`--annotation` on the service and its template (autoscaling ones only on the template),
    `--annotation-service` and `--annotation-revision` on one each."""
    both, both_rm = parse_key_values(flags.annotations, "annotation")
    svc_only, svc_rm = parse_key_values(flags.service_annotations, "annotation-service")
    rev_only, rev_rm = parse_key_values(flags.revision_annotations, "annotation-revision")
    scale = {
        f"{AUTOSCALING_PREFIX}min-scale": flags.scale_min,
        f"{AUTOSCALING_PREFIX}max-scale": flags.scale_max,
        f"{AUTOSCALING_PREFIX}target": flags.scale_target,
    }
    rev_only.update({k: str(v) for k, v in scale.items() if v is not None})
    on_service = {k: v for k, v in both.items() if not k.startswith(AUTOSCALING_PREFIX)}
    _edit_map(svc, "annotations", on_service | svc_only, both_rm + svc_rm)
    template = svc.setdefault("spec", {}).setdefault("template", {})
    _edit_map(template, "annotations", both | rev_only, both_rm + rev_rm)


def edit_template(svc: Obj, flags: ServiceFlags, cwd: Path | None) -> None:
    """Image, command, args, env, concurrency, annotations and labels, in place.

    A local --image is resolved against `cwd`; `cwd=None`: `flags.image` is resolved already
    (the commands do it before their loop starts: it may stat a folder)."""
    c = _container(svc)
    if flags.image is not None:
        c["image"] = flags.image if cwd is None else command_line_image(flags.image, cwd)
    if flags.cmd is not None:
        c["command"] = list(flags.cmd)
    if flags.args is not None:
        c["args"] = list(flags.args)
    if flags.env:
        sets, removes = parse_key_values(flags.env, "env")
        env = edit_env(c.get("env") or [], sets, removes)
        if env:
            c["env"] = env
        else:
            c.pop("env", None)
    if flags.concurrency_limit is not None:
        if flags.concurrency_limit < 0:
            raise usage("--concurrency-limit must be 0 (unlimited) or more")
        svc["spec"]["template"].setdefault("spec", {})["containerConcurrency"] = (
            flags.concurrency_limit
        )
    edit_annotations(svc, flags)
    if flags.labels:
        sets, removes = parse_key_values(flags.labels, "label")
        _edit_map(svc, "labels", sets, removes)
        _edit_map(svc["spec"]["template"], "labels", sets, removes)


# -- traffic -------------------------------------------------------------------------------------


def _find(targets: list[Obj], match: Callable[[Obj], bool]) -> Obj | None:
    return next((t for t in targets if match(t)), None)


def _tagged(targets: list[Obj], tag: str) -> Obj | None:
    return _find(targets, lambda t: t.get("tag") == tag)


def _of_revision(targets: list[Obj], ref: str) -> Obj | None:
    """Any target of a revision (tagged or not); `@latest` means the latest-revision ones."""
    if ref == LATEST:
        return _find(targets, lambda t: bool(t.get("latestRevision")))
    return _find(targets, lambda t: t.get("revisionName") == ref)


def _untagged_target(targets: list[Obj], ref: str) -> Obj | None:
    if ref == LATEST:
        return _find(targets, lambda t: bool(t.get("latestRevision")) and not t.get("tag"))
    return _find(
        targets,
        lambda t: t.get("revisionName") == ref and not t.get("latestRevision") and not t.get("tag"),
    )


def _new_target(ref: str, percent: int) -> Obj:
    if ref == LATEST:
        return {"latestRevision": True, "percent": percent}
    return {"revisionName": ref, "latestRevision": False, "percent": percent}


def edit_traffic(
    current: list[Obj],
    traffic: Sequence[tuple[str, int]] = (),
    tags: Sequence[tuple[str, str]] = (),
    untags: Sequence[str] = (),
) -> list[Obj]:
    """kn's traffic edit: untag, then tag, then split.

    `--untag TAG` removes the tag and drops the target if it carried 0 %; `--tag REV=TAG` tags the
    untagged target of REV or adds a 0 % one; `--traffic` sets the named targets' percents (a key
    is a tag first, then a revision, `@latest` the latest revision), zeroes the rest and drops
    untagged 0 % targets; the percents must then sum to 100.
    """
    targets = [copy.deepcopy(t) for t in current] or [{"latestRevision": True, "percent": 100}]
    for tag in untags:
        if _tagged(targets, tag) is None:
            raise CliError(f"tag(s) {tag} not present for any revisions")
        kept: list[Obj] = []
        for t in targets:
            if t.get("tag") == tag:
                if not t.get("percent"):
                    continue
                del t["tag"]
            kept.append(t)
        targets = kept
    seen_tags: set[str] = set()
    for ref, tag in tags:
        if tag in seen_tags:
            raise usage(
                f"repetition of identifier {tag} is not allowed, use only once with --tag flag"
            )
        seen_tags.add(tag)
        if _tagged(targets, tag) is not None:
            raise CliError(
                f"refusing to overwrite existing tag in service, add flag '--untag {tag}' in "
                "command to untag it"
            )
        target = _untagged_target(targets, ref)
        if target is None:
            target = _new_target(ref, 0)
            targets.append(target)
        target["tag"] = tag
    if traffic:
        for t in targets:
            t["percent"] = 0
        for key, pct in traffic:
            target = (
                _tagged(targets, key)
                or _untagged_target(targets, key)
                or _of_revision(targets, key)
            )
            if target is None:
                target = _new_target(key, pct)
                targets.append(target)
            target["percent"] = pct
        targets = [t for t in targets if t.get("percent") or t.get("tag")]
        total = sum(int(t.get("percent") or 0) for t in targets)
        if total != 100:
            raise CliError(f"given traffic percents sum to {total}, want 100")
    return targets


# -- whole objects -------------------------------------------------------------------------------


def _apply_flags(
    svc: Obj, flags: ServiceFlags, cwd: Path | None, random: Callable[[int], str], generation: int
) -> Obj:
    validate(flags)
    edit_template(svc, flags, cwd)
    if flags.revision_name:
        name = revision_name(flags.revision_name, svc["metadata"]["name"], generation, random)
        svc["spec"]["template"].setdefault("metadata", {})["name"] = name
    if flags.touches_traffic():
        svc["spec"]["traffic"] = edit_traffic(
            svc["spec"].get("traffic") or [],
            parse_traffic(flags.traffic),
            parse_pairs(flags.tags, "tag", "REVISION=TAG or @latest=TAG"),
            flags.untags,
        )
    return svc


def new_service(
    name: str, namespace: str, flags: ServiceFlags, cwd: Path | None, random: Callable[[int], str]
) -> Obj:
    """The Service `flint service create NAME` sends."""
    if not flags.image:
        raise usage(
            "'service create' requires the image name to run provided with the --image option"
        )
    svc: Obj = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{}]}}},
    }
    return _apply_flags(svc, flags, cwd, random, generation=1)


def update_service(
    current: Obj, flags: ServiceFlags, cwd: Path | None, random: Callable[[int], str]
) -> Obj:
    """The Service `flint service update` sends for the `current` one (status dropped).

    Without `--revision-name`, a template that changed loses its old explicit name, so the
    server generates one for the new revision (a revision name cannot be reused).
    """
    svc = copy.deepcopy(current)
    svc.pop("status", None)
    before = _template_without_name(svc)
    generation = int((svc.get("metadata") or {}).get("generation") or 0) + 1
    _apply_flags(svc, flags, cwd, random, generation)
    if not flags.revision_name and _template_without_name(svc) != before:
        tmd = svc["spec"]["template"].get("metadata") or {}
        tmd.pop("name", None)
    return svc


def _template_without_name(svc: Obj) -> Obj:
    template = copy.deepcopy((svc.get("spec") or {}).get("template") or {})
    (template.get("metadata") or {}).pop("name", None)
    return template
