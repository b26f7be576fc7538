"""Knative's config-domain (`controller.domains`): a Route's domain by its labels, the default
for the rest; parsed from the ConfigMap's format; carried into the Route's URLs and hosts."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

import pytest
from support.caches import ObjectCache

from controller.domains import DomainRule, DomainSettings, parse_config_domain
from controller.eventing.sender import Sender
from controller.reconcilers.route import reconcile_route
from controller.routing import plan_hosts
from controller.settings import ControllerSettings
from controller.snapshot_builder import HostPlanner

CONFIG = {
    "example.com": "",
    "internal.example.com": "selector:\n  app: secret\n",
    "team.example.com": "selector:\n  app: secret\n  team: a\n",
}


def test_the_most_specific_selector_wins_and_the_rest_get_the_default() -> None:
    d = parse_config_domain(CONFIG, default="localhost")
    assert d.default == "example.com"  # the entry without a selector
    assert d.domain_for({}) == "example.com"
    assert d.domain_for({"app": "secret"}) == "internal.example.com"
    assert d.domain_for({"app": "secret", "team": "a", "x": "y"}) == "team.example.com"
    assert d.domain_for({"app": "other"}) == "example.com"
    assert d.domains == ("example.com", "internal.example.com", "team.example.com")


def test_without_a_default_entry_the_flag_is_the_default() -> None:
    d = parse_config_domain({"b.example": {"selector": {"k": "v"}}}, default="localhost")
    assert d == DomainSettings("localhost", (DomainRule("b.example", (("k", "v"),)),))


@pytest.mark.parametrize(("data", "why"), [
    ({"a..b": ""}, "not a domain name"),
    ({"a.example": "", "b.example": ""}, "only one may have no selector"),
    ({"a.example": "labels:\n  x: y\n"}, "a `selector:` map"),
])
def test_a_bad_section_is_refused_naming_the_entry(data: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_config_domain(data, default="localhost")


def test_hosts_and_collisions_are_planned_per_route_domain() -> None:
    d = parse_config_domain(CONFIG, default="localhost")
    public = {"metadata": {"name": "hello", "namespace": "ns"}, "spec": {"traffic": []}}
    secret = {"metadata": {"name": "vault", "namespace": "ns", "labels": {"app": "secret"}},
              "spec": {"traffic": [{"tag": "blue", "percent": 0}]}}
    plan = plan_hosts([public, secret], d.of_route)
    assert set(plan.owners) == {"hello.ns.example.com", "vault.ns.internal.example.com",
                                "blue-vault.ns.internal.example.com"}


async def test_a_routes_url_and_tag_urls_are_under_its_domain(tmp_path: Path) -> None:
    route = {"apiVersion": "serving.knative.dev/v1", "kind": "Route",
             "metadata": {"name": "vault", "namespace": "ns", "uid": "u", "generation": 1,
                          "labels": {"app": "secret"}},
             "spec": {"traffic": [{"revisionName": "vault-00001", "percent": 100, "tag": "blue"}]}}
    rev = {"metadata": {"name": "vault-00001", "namespace": "ns"},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    written: list[dict[str, Any]] = []

    async def update_status(_kind: object, obj: dict[str, Any]) -> dict[str, Any]:
        written.append(obj)
        return obj

    d = parse_config_domain(CONFIG, default="localhost")
    settings = dataclasses.replace(ControllerSettings(state_dir=tmp_path, gateway_port=80),
                                   domain=d.default, domain_rules=d.rules)
    hub = types.SimpleNamespace(snapshot=types.SimpleNamespace(routes=[]), acked_by_all=lambda _v: False,
                                version=1, connected=lambda: 1)
    ctx: Any = types.SimpleNamespace(
        routes=ObjectCache([route]), revisions=ObjectCache([rev]), configurations=ObjectCache([]),
        settings=settings, clock=lambda: 0.0, hub=hub, snapshot_dirty=lambda: None,
        store=types.SimpleNamespace(update_status=update_status), route_services=None,
        hosts=HostPlanner())
    await reconcile_route(ctx, ("ns", "vault"))
    status = written[-1]["status"]
    assert status["url"] == "http://vault.ns.internal.example.com"
    assert status["traffic"][0]["url"] == "http://blue-vault.ns.internal.example.com"


def test_the_dispatcher_sends_every_route_domain_through_the_gateway() -> None:
    sender = Sender(domain="example.com,internal.example.com", gateway="http://127.0.0.1:8080")
    assert sender.target("http://vault.ns.internal.example.com/x") == (
        "http://127.0.0.1:8080/x", "vault.ns.internal.example.com")
    assert sender.target("http://hello.ns.example.com/") == ("http://127.0.0.1:8080/", "hello.ns.example.com")
    assert sender.target("http://elsewhere.org/") == ("http://elsewhere.org/", None)


def test_the_controllers_config_file_carries_the_domain_section(tmp_path: Path) -> None:
    from controller.__main__ import settings_from_argv

    config = tmp_path / "flint.yaml"
    config.write_text("domain:\n  example.com: ''\n  internal.example.com: |\n    selector:\n"
                      "      app: secret\n")
    settings, _ = settings_from_argv(["--config", str(config), "--state-dir", str(tmp_path / "s")])
    assert settings.domain == "example.com"
    assert settings.domains.domain_for({"app": "secret"}) == "internal.example.com"
    config.write_text("domain:\n  a..b: ''\n")
    with pytest.raises(SystemExit):
        settings_from_argv(["--config", str(config), "--state-dir", str(tmp_path / "s")])


def test_flint_up_gives_the_dispatcher_every_route_domain(tmp_path: Path) -> None:
    import argparse

    from controller.cli.up import route_domains

    config = tmp_path / "flint.yaml"
    config.write_text("domain:\n  internal.example.com: |\n    selector:\n      app: secret\n")
    a = argparse.Namespace(config=str(config), domain="localhost")
    assert route_domains(a) == ("localhost", "internal.example.com")
    assert route_domains(argparse.Namespace(config=None, domain="apps.example.com")) == ("apps.example.com",)
