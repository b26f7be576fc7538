"""The cluster certificates' schedule (`controller.cluster_tls.rotation`) and their Secret form
(`controller.cluster_tls.state`), with `now` passed in."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import replace

import pytest
from cryptography import x509

from controller.cluster_tls.rotation import Step, advance, decide, initial, seconds_until_due
from controller.cluster_tls.settings import ClusterTLSSettings, RotationSettings, serving_names
from controller.cluster_tls.state import NEXT_SINCE, ROTATE_CA, ClusterCerts, from_secret, to_secret
from flint_common.tls import CA_VALIDITY, load_bundle

NOW = 1_800_000_000.0
NAMES = serving_names("flint-system")
S = RotationSettings(ca_overlap_s=60.0)


def kinds(certs: ClusterCerts, now: float) -> str | None:
    step = decide(certs, NAMES, now, S)
    return step.kind if step else None


def chains_to(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


def test_the_names_are_the_webhook_and_leader_services() -> None:
    assert serving_names("ns") == [
        "flint-webhook.ns.svc", "flint-webhook.ns.svc.cluster.local",
        "flint-controller-leader.ns.svc", "flint-controller-leader.ns.svc.cluster.local"]
    assert ClusterTLSSettings(namespace="ns", extra_names=("127.0.0.1",)).names[-1] == "127.0.0.1"


def test_fresh_certificates_need_nothing() -> None:
    certs = initial(NAMES, NOW)
    assert decide(certs, NAMES, NOW, S) is None
    assert chains_to(certs.serving, certs.ca.cert)
    assert load_bundle(certs.bundle, "bundle") == [certs.ca.cert]


def test_changed_names_renew_the_serving_certificate_from_the_same_ca() -> None:
    certs = initial(NAMES, NOW)
    names = [*NAMES, "127.0.0.1"]
    step = decide(certs, names, NOW, S)
    assert step == Step("renew", "the names it must carry changed")
    renewed = advance(certs, step, names, NOW)
    assert renewed.ca == certs.ca and renewed.serving != certs.serving
    assert decide(renewed, names, NOW, S) is None


def test_a_serving_certificate_near_its_end_is_renewed() -> None:
    certs = initial(NAMES, NOW)
    later = certs.serving.not_valid_after_utc.timestamp() - 29 * 86400
    assert kinds(certs, later) == "renew"
    assert seconds_until_due(certs, NOW, S) == pytest.approx(
        certs.serving.not_valid_after_utc.timestamp() - 30 * 86400 - NOW)


def test_a_full_ca_rotation_in_phases() -> None:
    certs = replace(initial(NAMES, NOW), rotate_requested=True)
    assert kinds(certs, NOW) == "begin"
    phase1 = advance(certs, Step("begin", ""), NAMES, NOW)
    assert phase1.next_ca is not None and not phase1.rotate_requested
    # trusted by the bundle, not signing: the serving certificate still chains to the old CA
    assert phase1.serving == certs.serving and phase1.ca == certs.ca
    assert load_bundle(phase1.bundle, "b") == [certs.ca.cert, phase1.next_ca.cert]
    assert kinds(phase1, NOW + 59) is None
    assert seconds_until_due(phase1, NOW + 10, S) == pytest.approx(50)
    assert kinds(phase1, NOW + 60) == "promote"
    phase2 = advance(phase1, Step("promote", ""), NAMES, NOW + 60)
    assert phase2.ca == phase1.next_ca and phase2.previous_ca == certs.ca.cert
    assert chains_to(phase2.serving, phase1.next_ca.cert)
    assert load_bundle(phase2.bundle, "b") == [phase1.next_ca.cert, certs.ca.cert]
    assert decide(phase2, NAMES, NOW + 60, S) is None
    # a rotation asked for meanwhile waits for this one to end
    assert kinds(replace(phase2, rotate_requested=True), NOW + 100) is None
    assert kinds(phase2, NOW + 120) == "retire"
    done = advance(phase2, Step("retire", ""), NAMES, NOW + 120)
    assert load_bundle(done.bundle, "b") == [phase1.next_ca.cert]
    assert decide(done, NAMES, NOW + 120, S) is None


def test_a_ca_near_its_end_begins_a_rotation() -> None:
    certs = initial(NAMES, NOW)
    end = NOW + CA_VALIDITY.total_seconds()
    assert kinds(certs, end - S.ca_renew_before_s - 1) in (None, "renew")
    assert kinds(certs, end - S.ca_renew_before_s + 1) == "begin"


def test_settings_refuse_a_rotation_that_cannot_end_in_time() -> None:
    with pytest.raises(ValueError, match="ca_overlap_s"):
        RotationSettings(ca_overlap_s=0)
    with pytest.raises(ValueError, match="ca_renew_before_s"):
        RotationSettings(ca_overlap_s=3600, ca_renew_before_s=30 * 86400 + 3600)
    with pytest.raises(ValueError, match="system namespace"):
        ClusterTLSSettings(namespace="")


def test_the_secret_round_trips_every_phase() -> None:
    certs = initial(NAMES, NOW)
    phase1 = advance(certs, Step("begin", ""), NAMES, NOW)
    phase2 = advance(phase1, Step("promote", ""), NAMES, NOW + 60)
    for c in (certs, phase1, phase2, replace(certs, rotate_requested=True)):
        secret = to_secret(c, "flint-system", "flint-controller-certs")
        assert secret["type"] == "Opaque"
        back = from_secret(secret)
        assert back.bundle == c.bundle and back.tls_pem == c.tls_pem
        assert back.next_since == c.next_since and back.previous_since == c.previous_since
        assert back.rotate_requested == c.rotate_requested
    assert ROTATE_CA in to_secret(replace(certs, rotate_requested=True), "n", "s")["metadata"]["annotations"]
    assert NEXT_SINCE in to_secret(phase1, "n", "s")["metadata"]["annotations"]


def test_a_bad_secret_names_the_key_never_the_content() -> None:
    secret = to_secret(initial(NAMES, NOW), "n", "s")
    key_b64 = secret["data"]["tls.key"]
    broken = {**secret, "data": {**secret["data"], "tls.key": secret["data"]["ca.key"]}}
    with pytest.raises(ValueError, match=r"data\[tls.key\]: not the key") as exc:
        from_secret(broken)
    assert key_b64 not in str(exc.value)
    with pytest.raises(ValueError, match=r"data\[ca.crt\]: missing"):
        from_secret({**secret, "data": {k: v for k, v in secret["data"].items() if k != "ca.crt"}})
    with pytest.raises(ValueError, match=r"data\[tls.crt\]: not a PEM"):
        from_secret({**secret, "data": {**secret["data"], "tls.crt": base64.b64encode(b"x").decode()}})
    phase1 = to_secret(advance(initial(NAMES, NOW), Step("begin", ""), NAMES, NOW), "n", "s")
    phase1["metadata"]["annotations"][NEXT_SINCE] = "yesterday"
    with pytest.raises(ValueError, match="ca-next-since"):
        from_secret(phase1)


def test_the_serving_certificate_is_valid_from_a_little_before_now() -> None:
    certs = initial(NAMES, NOW)
    assert certs.serving.not_valid_before_utc < dt.datetime.fromtimestamp(NOW, dt.UTC)
