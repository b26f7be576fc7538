"""`resolve_traffic`: a Route's spec.traffic turned into concrete revisions (pure)."""

from __future__ import annotations

from typing import Any

from controller.reconcilers.route import Resolution, resolve_traffic

Obj = dict[str, Any]


def ready(status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"type": "Ready", "status": status}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return {"conditions": [c]}


def cfg(name: str, latest_ready: str | None = None, cond: dict[str, Any] | None = None,
        ns: str = "default") -> Obj:
    status: Obj = dict(cond or {})
    if latest_ready:
        status["latestReadyRevisionName"] = latest_ready
    return {"kind": "Configuration", "metadata": {"name": name, "namespace": ns}, "status": status}


def rev(name: str, status: str | None = "True", message: str = "", ns: str = "default") -> Obj:
    return {
        "metadata": {"name": name, "namespace": ns},
        "status": ready(status, message=message) if status else {},
    }


def route(*traffic: Obj, ns: str | None = "default") -> Obj:
    meta: Obj = {"name": "r"}
    if ns is not None:
        meta["namespace"] = ns
    return {"metadata": meta, "spec": {"traffic": list(traffic)}}


class World:
    def __init__(self, *objs: Obj) -> None:
        self.configs: dict[tuple[str, str], Obj] = {}
        self.revs: dict[tuple[str, str], Obj] = {}
        self.calls: list[tuple[str, str, str]] = []
        for o in objs:
            key = (o["metadata"]["namespace"], o["metadata"]["name"])
            if o.get("kind") == "Configuration":
                self.configs[key] = o
            else:
                self.revs[key] = o

    def configuration(self, ns: str, name: str) -> Obj | None:
        self.calls.append(("cfg", ns, name))
        return self.configs.get((ns, name))

    def revision(self, ns: str, name: str) -> Obj | None:
        self.calls.append(("rev", ns, name))
        return self.revs.get((ns, name))

    def resolve(self, r: Obj) -> Resolution:
        return resolve_traffic(r, self.configuration, self.revision)


def test_latest_revision_follows_latest_ready() -> None:
    w = World(cfg("cfg", "cfg-00002"), rev("cfg-00003", "Unknown"))
    res = w.resolve(route({"configurationName": "cfg", "latestRevision": True, "percent": 100}))
    assert res.status == "True"
    assert res.traffic == [{"revisionName": "cfg-00002", "latestRevision": True, "percent": 100}]


def test_configuration_without_revision_name_is_latest_by_default() -> None:
    w = World(cfg("cfg", "cfg-00001"))
    res = w.resolve(route({"configurationName": "cfg", "percent": 100}))
    assert res.traffic == [{"revisionName": "cfg-00001", "latestRevision": True, "percent": 100}]


def test_latest_ready_is_used_even_when_the_newest_revision_failed() -> None:
    w = World(cfg("cfg", "cfg-00001", ready("False", "RevisionFailed", "boom")))
    res = w.resolve(route({"configurationName": "cfg", "latestRevision": True, "percent": 100}))
    assert res.status == "True"
    assert res.traffic is not None
    assert res.traffic[0]["revisionName"] == "cfg-00001"


def test_configuration_missing() -> None:
    w = World()
    res = w.resolve(route({"configurationName": "cfg", "latestRevision": True, "percent": 100}))
    assert res.traffic is None
    assert (res.status, res.reason) == ("False", "ConfigurationMissing")
    assert '"cfg"' in res.message


def test_no_ready_revision_yet_is_unknown() -> None:
    w = World(cfg("cfg", None, ready("Unknown", "Deploying")))
    res = w.resolve(route({"configurationName": "cfg", "latestRevision": True, "percent": 100}))
    assert res.traffic is None
    assert (res.status, res.reason) == ("Unknown", "RevisionMissing")
    assert '"cfg"' in res.message


def test_no_ready_revision_and_no_condition_is_unknown() -> None:
    w = World(cfg("cfg"))
    res = w.resolve(route({"configurationName": "cfg", "percent": 100}))
    assert (res.traffic, res.status) == (None, "Unknown")


def test_failed_configuration_without_ready_revision_is_false() -> None:
    w = World(cfg("cfg", None, ready("False", "RevisionFailed", "exit code 3")))
    res = w.resolve(route({"configurationName": "cfg", "latestRevision": True, "percent": 100}))
    assert res.traffic is None
    assert (res.status, res.reason) == ("False", "RevisionMissing")
    assert '"cfg"' in res.message
    assert "exit code 3" in res.message


def test_failure_wins_over_an_earlier_pending_target() -> None:
    w = World(cfg("cfg", None, ready("Unknown")), rev("bad", "False", "crashed"))
    res = w.resolve(
        route(
            {"configurationName": "cfg", "latestRevision": True, "percent": 50},
            {"revisionName": "bad", "percent": 50},
        )
    )
    assert (res.status, res.reason) == ("False", "RevisionFailed")


def test_revision_by_name() -> None:
    w = World(rev("r-1"), rev("r-2"))
    res = w.resolve(
        route(
            {"revisionName": "r-1", "percent": 70},
            {"revisionName": "r-2", "percent": 30, "latestRevision": False},
        )
    )
    assert res.status == "True"
    assert res.traffic == [
        {"revisionName": "r-1", "latestRevision": False, "percent": 70},
        {"revisionName": "r-2", "latestRevision": False, "percent": 30},
    ]


def test_revision_missing() -> None:
    w = World()
    res = w.resolve(route({"revisionName": "nope", "percent": 100}))
    assert res.traffic is None
    assert (res.status, res.reason) == ("False", "RevisionMissing")
    assert '"nope"' in res.message


def test_revision_failed_carries_its_message() -> None:
    w = World(rev("r-1", "False", "exit code 1: ImportError"))
    res = w.resolve(route({"revisionName": "r-1", "percent": 100}))
    assert res.traffic is None
    assert (res.status, res.reason) == ("False", "RevisionFailed")
    assert '"r-1"' in res.message
    assert "ImportError" in res.message


def test_revision_not_ready_is_unknown() -> None:
    for status in ("Unknown", None):
        w = World(rev("r-1", status))
        res = w.resolve(route({"revisionName": "r-1", "percent": 100}))
        assert res.traffic is None
        assert (res.status, res.reason) == ("Unknown", "RevisionMissing")
        assert '"r-1"' in res.message


def test_target_with_neither_name_is_false() -> None:
    w = World()
    res = w.resolve(route({"percent": 100}))
    assert (res.traffic, res.status, res.reason) == (None, "False", "RevisionMissing")


def test_all_targets_must_resolve() -> None:
    w = World(rev("ok"), rev("starting", "Unknown"))
    res = w.resolve(
        route({"revisionName": "ok", "percent": 50}, {"revisionName": "starting", "percent": 50})
    )
    assert res.traffic is None
    assert res.status == "Unknown"
    assert '"starting"' in res.message


def test_first_pending_target_names_the_message() -> None:
    w = World(rev("a", "Unknown"), rev("b", "Unknown"))
    res = w.resolve(
        route({"revisionName": "a", "percent": 50}, {"revisionName": "b", "percent": 50})
    )
    assert '"a"' in res.message


def test_zero_percent_tags_are_kept() -> None:
    w = World(cfg("cfg", "cfg-00002"), rev("cfg-00001"))
    res = w.resolve(
        route(
            {"configurationName": "cfg", "latestRevision": True, "percent": 100},
            {"revisionName": "cfg-00001", "tag": "old", "percent": 0},
            {"configurationName": "cfg", "tag": "latest"},
        )
    )
    assert res.status == "True"
    assert res.traffic == [
        {"revisionName": "cfg-00002", "latestRevision": True, "percent": 100},
        {"tag": "old", "revisionName": "cfg-00001", "latestRevision": False, "percent": 0},
        {"tag": "latest", "revisionName": "cfg-00002", "latestRevision": True, "percent": 0},
    ]


def test_lookups_use_the_route_namespace() -> None:
    w = World(cfg("cfg", "cfg-00001", ns="prod"), rev("r", ns="prod"))
    res = w.resolve(
        route({"configurationName": "cfg", "percent": 50}, {"revisionName": "r", "percent": 50},
              ns="prod")
    )
    assert res.status == "True"
    assert {(ns, name) for _, ns, name in w.calls} == {("prod", "cfg"), ("prod", "r")}
    # a revision of the same name in another namespace does not count
    res = w.resolve(route({"revisionName": "r", "percent": 100}))
    assert res.status == "False"


def test_route_without_namespace_is_in_default() -> None:
    w = World(rev("r"))
    assert w.resolve(route({"revisionName": "r", "percent": 100}, ns=None)).status == "True"


def test_no_traffic_resolves_to_empty() -> None:
    res = World().resolve({"metadata": {"name": "r"}, "spec": {}})
    assert (res.traffic, res.status) == ([], "True")
