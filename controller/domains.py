"""Which domain a Route's hosts are under: Knative's `config-domain` (pure).

The setting maps domains to label selectors, as Knative's ConfigMap does: a Route gets the domain
whose selector its labels match with the most labels (ties: the domain that sorts first), and
the default domain (`--domain`, or the entry with no selector) when none matches:

    domain:
      example.com: ""                 # the default
      internal.example.com: |
        selector:
          app: secret
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["DomainRule", "DomainSettings", "parse_config_domain"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class DomainRule:
    """Routes whose labels hold every pair of `selector` are under `domain`."""

    domain: str
    selector: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DomainSettings:
    """Knative's `config-domain`: the default domain, and the domains chosen by labels."""

    default: str = "localhost"
    """The domain of a Route no rule selects (`--domain`)."""
    rules: tuple[DomainRule, ...] = ()
    """The domains with a selector."""

    def domain_for(self, labels: Mapping[str, str]) -> str:
        """The domain of a Route with `labels`."""
        best: tuple[int, str] | None = None
        for rule in self.rules:
            if all(labels.get(k) == v for k, v in rule.selector):
                key = (-len(rule.selector), rule.domain)
                if best is None or key < best:
                    best = key
        return self.default if best is None else best[1]

    def of_route(self, route: Obj) -> str:
        """The domain of `route` (by its labels)."""
        return self.domain_for((route.get("metadata") or {}).get("labels") or {})

    @property
    def domains(self) -> tuple[str, ...]:
        """Every domain a Route may be under, the default first."""
        return (self.default, *dict.fromkeys(r.domain for r in self.rules if r.domain != self.default))


def parse_config_domain(data: Mapping[str, Any], default: str) -> DomainSettings:
    """The `domain:` section (Knative's ConfigMap data: domain → "" or a `selector:` YAML map);
    an entry without a selector is the default, else `default`. ValueError names the entry."""
    rules: list[DomainRule] = []
    defaults: list[str] = []
    for domain, value in data.items():
        name = str(domain).strip().lower().rstrip(".")
        if not name or any(not part for part in name.split(".")):
            raise ValueError(f"domain {domain!r}: not a domain name")
        parsed = yaml.safe_load(value) if isinstance(value, str) and value.strip() else value
        selector = (parsed or {}).get("selector") if isinstance(parsed, Mapping) else None
        if parsed and not isinstance(selector, Mapping):
            raise ValueError(f"domain {name}: the value must be empty or a `selector:` map of labels")
        if not selector:
            defaults.append(name)
            continue
        rules.append(DomainRule(name, tuple(sorted((str(k), str(v)) for k, v in selector.items()))))
    if len(defaults) > 1:
        raise ValueError(f"domains {', '.join(defaults)}: only one may have no selector (the default)")
    return DomainSettings(defaults[0] if defaults else default, tuple(rules))
