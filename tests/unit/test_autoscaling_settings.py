"""Autoscaler settings: Knative's defaults, the config loader and its validation, annotation precedence."""

from __future__ import annotations

import pytest

from controller.api.autoscaling import HPA, KPA
from controller.autoscaling.annotations import effective
from controller.autoscaling.settings import (
    AutoscalerSettings,
    SettingsError,
    default_max_replicas_per_machine,
    load_settings,
)

P = "autoscaling.knative.dev/"


def test_defaults_are_knatives() -> None:
    s = AutoscalerSettings(max_replicas_per_machine=8)
    assert s.container_concurrency_target_percentage == 70.0
    assert s.container_concurrency_target_default == 100.0
    assert s.requests_per_second_target_default == 200.0
    assert s.target_burst_capacity == 200.0
    assert s.stable_window_s == 60.0
    assert s.panic_window_percentage == 10.0
    assert s.panic_threshold_percentage == 200.0
    assert (s.max_scale_up_rate, s.max_scale_down_rate) == (1000.0, 2.0)
    assert (s.scale_to_zero_grace_period_s, s.scale_to_zero_pod_retention_period_s) == (30.0, 0.0)
    assert s.tick_interval_s == 2.0
    assert (s.initial_scale, s.allow_zero_initial_scale) == (1, False)
    assert (s.min_scale, s.max_scale, s.max_scale_limit, s.activation_scale) == (0, 0, 0, 1)
    assert s.scale_down_delay_s == 0.0
    assert s.enable_scale_to_zero is True
    assert s.pod_autoscaler_class == KPA


def test_machine_budget_default() -> None:
    # min(4 × cores, 4 × GiB): 8 cores and 16 GiB → min(32, 64) = 32; 8 cores and 2 GiB → 8.
    assert default_max_replicas_per_machine(8, 16 * 2**30) == 32
    assert default_max_replicas_per_machine(8, 2 * 2**30) == 8
    assert default_max_replicas_per_machine(1, 100 * 2**20) == 1  # never below 1
    assert default_max_replicas_per_machine() >= 1
    assert AutoscalerSettings().max_replicas_per_machine >= 1


def test_loader_parses_knative_keys() -> None:
    s = load_settings(
        {
            "container-concurrency-target-percentage": "80",
            "stable-window": "2m",
            "scale-to-zero-grace-period": "45s",
            "enable-scale-to-zero": "false",
            "max-scale": "10",
            "max-scale-limit": "20",
            "scale-down-delay": "15s",
            "max-replicas-per-machine": "6",
            "_example": "ignored, as in Knative",
            "activator-capacity": "100",
        }
    )
    assert s.container_concurrency_target_percentage == 80.0
    assert s.stable_window_s == 120.0
    assert s.scale_to_zero_grace_period_s == 45.0
    assert s.enable_scale_to_zero is False
    assert (s.max_scale, s.max_scale_limit, s.max_replicas_per_machine) == (10, 20, 6)
    assert s.scale_down_delay_s == 15.0


def test_legacy_fraction_percentage() -> None:
    assert load_settings(
        {"container-concurrency-target-percentage": "0.7"}
    ).container_concurrency_target_percentage == (pytest.approx(70.0))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stable-window": "5s"}, "stable-window = 5s, must be in [6s; 3600s] range"),
        ({"stable-window": "2h"}, "stable-window"),
        (
            {"stable-window": "6500ms"},
            "stable-window = 6.5s, must be specified with at most second precision",
        ),
        ({"scale-to-zero-grace-period": "1s"}, "scale-to-zero-grace-period must be at least 6s"),
        ({"max-scale-up-rate": "1"}, "max-scale-up-rate = 1, must be greater than 1.0"),
        ({"max-scale-down-rate": "0.5"}, "max-scale-down-rate"),
        ({"container-concurrency-target-percentage": "120"}, "container-concurrency-target-percentage = 120"),
        ({"panic-window-percentage": "0.5"}, "panic-window-percentage = 0.5, must be in [1, 100]"),
        ({"panic-threshold-percentage": "100"}, "panic-threshold-percentage = 100"),
        ({"initial-scale": "0"}, "initial-scale = 0"),
        ({"max-scale": "30", "max-scale-limit": "20"}, "max-scale = 30, must be in [1, max-scale-limit(20)]"),
        ({"target-burst-capacity": "-2"}, "target-burst-capacity"),
        ({"scale-down-delay": "-1s"}, "scale-down-delay cannot be negative"),
        ({"requests-per-second-target-default": "0"}, "requests-per-second-target-default"),
        ({"stable-window": "soon"}, "stable-window: 'soon' is not a duration"),
        ({"max-scale": "many"}, "max-scale: 'many' is not an integer"),
        ({"enable-scale-to-zero": "maybe"}, "enable-scale-to-zero: 'maybe' is not a boolean"),
        ({"stabel-window": "60s"}, "stabel-window: unknown autoscaler setting"),
        ({"activation-scale": "0"}, "activation-scale = 0"),
        ({"min-scale": "5", "max-scale": "3"}, "min-scale = 5 is greater than max-scale = 3"),
    ],
)
def test_loader_refuses_naming_the_key(data: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as e:
        load_settings(data)
    assert any(needle in err for err in e.value.errors), e.value.errors


def test_loader_reports_every_problem() -> None:
    with pytest.raises(SettingsError) as e:
        load_settings({"stable-window": "1s", "scale-to-zero-grace-period": "0s"})
    assert len(e.value.errors) == 2


def test_allow_below_minimums_for_test_profiles() -> None:
    s = load_settings({"stable-window": "2s", "scale-to-zero-grace-period": "0s"}, allow_below_minimums=True)
    assert (s.stable_window_s, s.scale_to_zero_grace_period_s) == (2.0, 0.0)
    with pytest.raises(SettingsError, match=r"stable-window = 0.5s, must be in \[1s; 3600s\]"):
        load_settings({"stable-window": "500ms"}, allow_below_minimums=True)


def test_initial_scale_zero_when_allowed() -> None:
    s = load_settings({"initial-scale": "0", "allow-zero-initial-scale": "true"})
    assert s.initial_scale == 0


# --- effective settings of a revision: annotation > global --------------------------------------

S = AutoscalerSettings(max_replicas_per_machine=64)


def test_concurrency_target_from_container_concurrency() -> None:
    # T = containerConcurrency 10 × 70 / 100 = 7.
    r = effective(S, {}, 10)
    assert (r.cls, r.metric, r.total_target, r.target) == (KPA, "concurrency", 10.0, 7.0)


def test_concurrency_target_default_when_unlimited() -> None:
    # containerConcurrency 0 → container-concurrency-target-default 100 × 70 % = 70.
    assert effective(S, {}, 0).target == 70.0


def test_target_annotation_capped_at_container_concurrency() -> None:
    # Knative: min(target annotation, containerConcurrency) when cc > 0: min(50, 10) × 0.7 = 7.
    assert effective(S, {P + "target": "50"}, 10).target == 7.0
    # A smaller annotation wins: 5 × 0.7 = 3.5.
    assert effective(S, {P + "target": "5"}, 10).target == 3.5
    # Unlimited containers take the annotation: 50 × 0.7 = 35.
    assert effective(S, {P + "target": "50"}, 0).target == 35.0


def test_utilization_annotation_overrides_global() -> None:
    # 100 × 50 / 100 = 50.
    r = effective(S, {P + "target-utilization-percentage": "50"}, 0)
    assert (r.target_utilization_percentage, r.target) == (50.0, 50.0)


def test_rps_metric_target() -> None:
    # requests-per-second-target-default 200 × 70 % = 140; the annotation target is not capped by cc.
    assert effective(S, {P + "metric": "rps"}, 10).target == 140.0
    assert effective(S, {P + "metric": "rps", P + "target": "50"}, 10).target == 35.0


def test_windows_and_thresholds() -> None:
    r = effective(S, {}, 0)
    assert (r.stable_window_s, r.panic_window_s, r.panic_threshold) == (60.0, 6.0, 2.0)
    r = effective(
        S,
        {P + "window": "20s", P + "panic-window-percentage": "20", P + "panic-threshold-percentage": "300"},
        0,
    )
    assert (r.stable_window_s, r.panic_window_s, r.panic_threshold) == (20.0, 4.0, 3.0)
    # The panic window is never shorter than one 1 s bucket: 6 s × 1 % → 1 s.
    r = effective(S, {P + "window": "6s", P + "panic-window-percentage": "1"}, 0)
    assert r.panic_window_s == 1.0


def test_scale_bounds_precedence() -> None:
    g = AutoscalerSettings(
        min_scale=1, max_scale=10, max_scale_limit=20, initial_scale=2, max_replicas_per_machine=8
    )
    r = effective(g, {}, 0)
    assert (r.min_scale, r.max_scale, r.initial_scale, r.scale_cap) == (1, 10, 2, 8)
    r = effective(
        g,
        {
            P + "min-scale": "3",
            P + "maxScale": "5",
            P + "initial-scale": "4",
            P + "activation-scale": "3",
            P + "scale-down-delay": "30s",
            P + "scale-to-zero-pod-retention-period": "1m",
        },
        0,
    )
    assert (r.min_scale, r.max_scale, r.initial_scale, r.activation_scale) == (3, 5, 4, 3)
    assert (r.scale_down_delay_s, r.scale_to_zero_pod_retention_period_s, r.scale_cap) == (30.0, 60.0, 5)
    assert r.warnings == ()


def test_hpa_class() -> None:
    r = effective(S, {P + "class": HPA}, 0)
    assert (r.cls, r.metric, r.target) == (HPA, "cpu", 80.0)
    assert effective(S, {P + "class": HPA, P + "metric": "memory", P + "target": "60"}, 0).target == 60.0


def test_invalid_annotations_fall_back_with_warnings() -> None:
    r = effective(S, {P + "min-scale": "-1", P + "window": "2s", P + "metric": "cpu", P + "target": "0"}, 10)
    assert (r.min_scale, r.stable_window_s, r.metric, r.target) == (0, 60.0, "concurrency", 7.0)
    assert len(r.warnings) == 4
    assert any("autoscaling.knative.dev/window" in w for w in r.warnings)
