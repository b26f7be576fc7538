"""The stand-in's knobs: the kubelet's and controllers' timings, shortened by tests for speed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KubeletSettings:
    """Every duration in seconds. Defaults are the kubelet's / kube-controller-manager's unless
    noted; tests shorten them (the objects keep their own values, these override them)."""

    node_name: str = "flint-kubelet"
    """The Node the kubelet binds Pods to (there is no Node object; nothing checks it)."""
    host_ip: str = "127.0.0.1"
    """status.hostIP of every Pod."""
    pod_ip_prefix: str = "127.0.1."
    """Pod IPs are this prefix + 1..254 (linux routes all of 127.0.0.0/8 to lo)."""
    probe_period_s: float | None = None
    """Replaces every probe's periodSeconds (None: the probe's own, default 10)."""
    probe_timeout_s: float | None = None
    """Replaces every probe's timeoutSeconds (None: the probe's own, default 1)."""
    grace_period_s: float | None = None
    """Caps a Pod's termination grace (None: its deletionGracePeriodSeconds, else its
    terminationGracePeriodSeconds, default 30)."""
    shutdown_grace_s: float = 2.0
    """When the stand-in stops: SIGTERM every container, SIGKILL what is left after this (no preStop)."""
    crash_backoff_s: float = 10.0
    """The first restart back-off of a container that exited; doubles up to `crash_backoff_max_s`."""
    crash_backoff_max_s: float = 300.0
    image_backoff_s: float = 5.0
    """How long ErrImagePull shows before ImagePullBackOff (and between pull retries)."""
    resync_s: float = 0.5
    """The controllers look at everything at least this often (progress deadlines, back-offs)."""
    progress_deadline_s: float | None = None
    """Replaces a Deployment's spec.progressDeadlineSeconds (None: its own, default 600)."""
