"""What the leader does next with the cluster certificates, from them and `now` (pure).

One step at a time, the first that applies:

1. `promote` (phase 1 → 2): the next CA has been trusted for `ca_overlap_s`: it becomes the CA,
   the serving certificate is issued from it, the old CA stays trusted as the previous one;
2. `retire` (phase 2 → done): the previous CA has been kept for `ca_overlap_s`: it leaves the bundle;
3. `begin` (→ phase 1): no rotation under way and the CA nears its end (`ca_renew_before_s`) or a
   rotation was asked for (`flint.dev/rotate-ca`): a new CA joins the bundle, not signing yet;
4. `renew`: the serving certificate must be re-issued from the CA (`flint_common.tls.reissue_reason`:
   its names changed, it nears expiry, another CA signed it).

The new CA enters every client's trust before any certificate it signed is served, and the old
one leaves only after every certificate it signed has been replaced for a whole overlap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal

from controller.cluster_tls.settings import RotationSettings
from controller.cluster_tls.state import ClusterCerts
from flint_common.tls import RENEW_BEFORE, issue_server_cert, new_authority, reissue_reason

__all__ = ["Step", "advance", "decide", "initial", "seconds_until_due"]

CA_NAME = "flint-controller-ca"
"""The common name of the cluster's CAs."""


@dataclass(frozen=True)
class Step:
    """One thing to do, and why (for the log)."""

    kind: Literal["renew", "begin", "promote", "retire"]
    reason: str


def _at(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def initial(names: list[str], now: float) -> ClusterCerts:
    """New certificates: a CA and the serving certificate for `names` it signed."""
    ca = new_authority(CA_NAME, _at(now))
    cert, key = issue_server_cert(ca, names, _at(now))
    return ClusterCerts(ca, cert, key)


def decide(certs: ClusterCerts, names: list[str], now: float, s: RotationSettings) -> Step | None:
    """The next step (module docstring), or None when there is nothing to do now."""
    if certs.next_ca is not None and certs.next_since is not None:
        if now - certs.next_since >= s.ca_overlap_s:
            return Step("promote", f"the new CA has been trusted for {s.ca_overlap_s:g} s")
    elif certs.previous_ca is not None and certs.previous_since is not None:
        if now - certs.previous_since >= s.ca_overlap_s:
            return Step("retire", f"the new CA has signed the serving certificate for {s.ca_overlap_s:g} s")
    else:
        left = certs.ca.cert.not_valid_after_utc.timestamp() - now
        if left < s.ca_renew_before_s:
            return Step("begin", f"the CA expires in {left / 86400:.1f} days")
        if certs.rotate_requested:
            return Step("begin", "a rotation was asked for (annotation flint.dev/rotate-ca)")
    reason = reissue_reason(certs.serving, certs.ca, names, _at(now))
    return Step("renew", reason) if reason is not None else None


def advance(certs: ClusterCerts, step: Step, names: list[str], now: float) -> ClusterCerts:
    """The certificates after `step` (new keys are random; everything else follows from `now`)."""
    if step.kind == "renew":
        cert, key = issue_server_cert(certs.ca, names, _at(now))
        return replace(certs, serving=cert, serving_key=key)
    if step.kind == "begin":
        return replace(certs, next_ca=new_authority(CA_NAME, _at(now)), next_since=now,
                       rotate_requested=False)
    if step.kind == "promote":
        assert certs.next_ca is not None
        cert, key = issue_server_cert(certs.next_ca, names, _at(now))
        return ClusterCerts(certs.next_ca, cert, key, previous_ca=certs.ca.cert, previous_since=now,
                            rotate_requested=certs.rotate_requested)
    return replace(certs, previous_ca=None, previous_since=None)


def seconds_until_due(certs: ClusterCerts, now: float, s: RotationSettings) -> float:
    """Seconds from `now` until `decide` may next have something to do (0: now); the Secret
    changing or the names changing are not foreseen here (the keeper looks again then)."""
    due = [certs.serving.not_valid_after_utc.timestamp() - RENEW_BEFORE.total_seconds(),
           certs.ca.cert.not_valid_after_utc.timestamp() - s.ca_renew_before_s]
    if certs.next_since is not None:
        due.append(certs.next_since + s.ca_overlap_s)
    if certs.previous_since is not None:
        due.append(certs.previous_since + s.ca_overlap_s)
    return max(0.0, min(due) - now)
