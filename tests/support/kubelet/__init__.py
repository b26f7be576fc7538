"""A test stand-in for kube-controller-manager's Deployment and EndpointSlice controllers and the kubelet.

(Full notes below, once written.)
"""

from __future__ import annotations

from .settings import KubeletSettings
from .standin import Kubelet

__all__ = ["Kubelet", "KubeletSettings"]
