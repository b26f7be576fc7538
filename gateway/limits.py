"""Raise the open-file limit at start: a busy gateway holds two sockets per proxied request."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("flint.gateway.limits")


def raise_nofile_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (clamped to the hard limit).

    Never lowers the current soft limit. Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. a container forbidding it
            log.warning("event=nofile_raise_failed wanted=%d soft=%d hard=%d error=%r",
                        wanted, soft, hard, exc)
            return soft
        soft = target
    return soft
