"""The dispatcher's delivery policy as pure functions, so retry, backoff and dead-letter rules are
decided (and tested) apart from the sockets and timers that carry them out.

What a DeliverySpec means at send time, after Knative eventing: `pkg/apis/duck/v1/delivery_types.go`
(the fields), `pkg/kncloudevents/retries.go` (`RetryConfigFromDeliverySpec`, `SelectiveRetry`, the
backoff formulas), its message sender's Retry-After handling, and `attributes/knative_error.go` (the
dead-letter extensions). Nothing here does I/O or reads a clock: the caller passes `now`.

The delivery loop this module supports, for one event and one subscriber::

    policy = DeliveryPolicy.from_spec(resolve_delivery(trigger_delivery, broker_delivery), ...)
    attempt = 1                        # the first delivery is attempt 1
    while the send (bounded by policy.timeout_s) fails with `status` (None: no response):
        decision = after_failure(policy, attempt, status, retry_after_header, now)
        if isinstance(decision, GiveUp):
            send to policy.dead_letter_uri, if any, with dead_letter_extensions(...); stop
        wait until decision.at; attempt = decision.attempt

Where Flint departs from Knative, on purpose:

* Backoff defaults. Knative only backs off when both `backoffPolicy` and `backoffDelay` are set and
  otherwise retries immediately; Flint fills a missing one with the broker default (exponential,
  PT0.2S) so that `retry: 5` alone does not hammer a failing subscriber.
* Per-attempt timeout. Knative's sender sets none unless `timeout` is set; Flint always bounds an
  attempt (`DEFAULT_TIMEOUT_S`) so a hung subscriber cannot hold a delivery forever.
* Retry-After. Flint honours it on 429 and 503 without Knative's `delivery-retryafter` flag, as
  Knative plans to once that feature is GA: no `retryAfterMax` = no cap, `PT0S` = ignore it.
* Backoff numbering. `backoff_s(policy, n)` is the delay before retry n (1-based), the formula in
  Knative's API docs and `retries_test.go`; go-retryablehttp, which Knative's sender runs on, calls
  the backoff with a 0-based index, so Knative's first exponential retry in fact waits `delay`, and
  its first linear one waits nothing. Flint's first retry waits `2 × delay` (exponential) or
  `delay` (linear).
"""

from __future__ import annotations

import base64
import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal

from controller.api.duck import (
    BACKOFF_EXPONENTIAL,
    BACKOFF_LINEAR,
    BACKOFF_POLICIES,
    DELIVERY_FORMATS,
    FORMAT_BINARY,
    parse_iso8601_duration,
)
from controller.api.meta import as_int

DEFAULT_TIMEOUT_S = 60.0
"""Per-attempt timeout when `delivery.timeout` is unset. A subscriber is usually a Flint service
that may be scaled to zero: its first request waits in the activator while a replica starts (image
pull, runtime boot, readiness probe), which can take tens of seconds. A short default would turn
every cold start into a failed attempt, and the retry would then pay the wait again; a minute covers
a realistic cold start while still freeing a delivery slot held by a hung subscriber."""

DEFAULT_BACKOFF_POLICY = BACKOFF_EXPONENTIAL
DEFAULT_BACKOFF_DELAY_S = 0.2
"""The broker default's `backoffDelay` (PT0.2S), used when a delivery gives no usable delay."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How one subscriber's deliveries are attempted, retried and dead-lettered."""

    retry: int
    """Retries after the first attempt: 0 means a single attempt, `retry + 1` attempts at most."""
    backoff_policy: str
    """`linear` or `exponential` (see `backoff_s`)."""
    backoff_delay_s: float
    """The base delay `backoff_s` multiplies, in seconds (≥ 0)."""
    timeout_s: float
    """How long one attempt may take, in seconds (> 0)."""
    retry_after_max_s: float | None
    """Cap on an honoured Retry-After, in seconds; None = no cap, 0 = Retry-After ignored."""
    format: str
    """`binary` (CloudEvents binary content mode, the default) or `json` (structured mode)."""
    dead_letter_uri: str | None
    """Where an event goes when delivery gives up; None = it is dropped."""

    def __post_init__(self) -> None:
        if self.retry < 0:
            raise ValueError(f"retry must be >= 0, got {self.retry}")
        if self.backoff_policy not in BACKOFF_POLICIES:
            raise ValueError(f"unknown backoff policy {self.backoff_policy!r}")
        if self.backoff_delay_s < 0:
            raise ValueError(f"backoff delay must be >= 0, got {self.backoff_delay_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout_s}")
        if self.retry_after_max_s is not None and self.retry_after_max_s < 0:
            raise ValueError(f"retryAfterMax must be >= 0, got {self.retry_after_max_s}")
        if self.format not in DELIVERY_FORMATS:
            raise ValueError(f"unknown delivery format {self.format!r}")

    @staticmethod
    def from_spec(
        delivery: Mapping[str, Any] | None,
        *,
        dead_letter_uri: str | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> DeliveryPolicy:
        """The policy a DeliverySpec describes. `delivery` is the spec that applies, as
        `resolve_delivery` picks it (a trigger's, else its broker's, else the broker default);
        None or `{}` is a spec with nothing set. `dead_letter_uri` is its `deadLetterSink`,
        already resolved to a URL (resolving a ref is not this module's job).

        Unset fields, as Knative reads them, except where noted:

        * `retry` → 0: a delivery without `retry` makes one attempt (`RetryConfigFromDeliverySpec`
          starts from `NoRetries`). The broker default's 10 retries come from `resolve_delivery`,
          only when neither the trigger nor the broker has a delivery at all.
        * `backoffPolicy` → exponential, `backoffDelay` → PT0.2S (Flint; see the module notes).
        * `timeout` → `default_timeout_s` (Flint; Knative has no per-attempt timeout by default).
        * `retryAfterMax` → None: Retry-After honoured without a cap.
        * `format` → binary.

        Admission (`delivery_errors`) refuses malformed values; any that get here anyway fall back
        to the default rather than stop the dispatcher. A negative `backoffDelay`, which admission
        lets through, counts as no delay."""
        spec: Mapping[str, Any] = delivery or {}
        retry = as_int(spec.get("retry"))
        policy = spec.get("backoffPolicy")
        delay = parse_iso8601_duration(spec.get("backoffDelay"))
        timeout = parse_iso8601_duration(spec.get("timeout"))
        retry_after_max = parse_iso8601_duration(spec.get("retryAfterMax"))
        if retry_after_max is not None and retry_after_max < 0:
            retry_after_max = None
        fmt = spec.get("format")
        return DeliveryPolicy(
            retry=max(retry, 0) if retry is not None else 0,
            backoff_policy=policy if policy in BACKOFF_POLICIES else DEFAULT_BACKOFF_POLICY,
            backoff_delay_s=max(delay, 0.0) if delay is not None else DEFAULT_BACKOFF_DELAY_S,
            timeout_s=timeout if timeout is not None and timeout > 0 else default_timeout_s,
            retry_after_max_s=retry_after_max,
            format=fmt if fmt in DELIVERY_FORMATS else FORMAT_BINARY,
            dead_letter_uri=dead_letter_uri or None,
        )


# ---------------------------------------------------------------------------------------------
# Which failures are retried (Knative's SelectiveRetry)
# ---------------------------------------------------------------------------------------------

RETRYABLE_STATUSES: frozenset[int] = frozenset({404, 408, 409, 429})
"""The 4xx statuses worth retrying, with Knative's reasons: 404 while a subscriber's pod is still
becoming ready, 408 (request timeout), 409 (conflict; Knative's own test receivers answer it) and
429 (too many requests: the backoff is the point). Every status ≥ 500 is retryable too."""

RETRY_AFTER_STATUSES: frozenset[int] = frozenset({429, 503})
"""The statuses whose Retry-After header lengthens the backoff."""


def is_retryable(status: int | None) -> bool:
    """Whether a failed attempt is worth another: no response at all (`None`: connection refused,
    reset or timed out), a status in `RETRYABLE_STATUSES`, or any status ≥ 500 (Knative's test,
    so a non-standard 6xx counts as a server error too). Everything else is final: 1xx and 2xx are
    not failures, other 4xx will fail the same way again, and 3xx is not retried either (Knative
    does not follow a subscriber's redirects, and sending the same request to the same URL would
    just get the same redirect)."""
    if status is None:
        return True
    return status in RETRYABLE_STATUSES or status >= 500


# ---------------------------------------------------------------------------------------------
# Backoff and Retry-After
# ---------------------------------------------------------------------------------------------


def backoff_s(policy: DeliveryPolicy, attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1-based: the first retry is 1), as
    Knative's DeliverySpec documents it: linear waits `delay × attempt`, exponential waits
    `delay × 2^attempt`. An exponent too large for a float gives infinity (a retry that never
    comes); it takes a `retry` of over a thousand to get there."""
    if attempt < 1:
        raise ValueError(f"retry numbers start at 1, got {attempt}")
    if policy.backoff_policy == BACKOFF_LINEAR:
        return policy.backoff_delay_s * attempt
    try:
        return policy.backoff_delay_s * math.ldexp(1.0, attempt)
    except OverflowError:
        return math.inf if policy.backoff_delay_s > 0 else 0.0


_DELTA_SECONDS_RE = re.compile(r"^[+-]?\d+$")


def parse_retry_after(value: str | None, now_unix: float) -> float | None:
    """Seconds a Retry-After header asks to wait (RFC 9110 §10.2.3): delta-seconds (`120`) or an
    HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, the obsolete RFC 850 and asctime forms too),
    measured from `now_unix`. A date in the past, or a negative number (which the RFC does not
    allow but Go's ParseInt, Knative's parser, accepts), means 0. None when the header is absent
    or is neither form (fractions like `1.5` included)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS_RE.match(text):
        return max(float(int(text)), 0.0)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # The asctime form and a -0000 zone give a naive datetime; an HTTP-date is always UTC.
    seconds = when.timestamp() if when.tzinfo else when.replace(tzinfo=UTC).timestamp()
    return max(seconds - now_unix, 0.0)


# ---------------------------------------------------------------------------------------------
# The decision after a failed attempt
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again at `at` (the caller's clock, seconds). `attempt` is the 1-based number of that
    next attempt, the first delivery being attempt 1; it is what to pass to `after_failure` if
    that attempt fails too. It is retry number `attempt - 1`."""

    at: float
    attempt: int


GiveUpReason = Literal["not-retryable", "retries-exhausted"]


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop retrying: dead-letter the event if the policy has a sink, else drop it. `reason` is
    `not-retryable` (the failure would repeat) or `retries-exhausted` (`policy.retry` retries
    made and all failed)."""

    reason: GiveUpReason


def after_failure(
    policy: DeliveryPolicy, attempt: int, status: int | None, retry_after: str | None, now: float
) -> Retry | GiveUp:
    """What to do after attempt number `attempt` (1-based; also how many attempts have failed)
    failed with `status` (None: no response). A failure that is not retryable gives up at once,
    whatever retries are left. Otherwise, if all `policy.retry` retries are spent (`attempt >
    policy.retry`), give up; so `retry: 0` gives up after the first failure and `retry: 2` after
    the third. Else retry number `attempt` waits `backoff_s(policy, attempt)`, lengthened for a
    429 or 503 to the Retry-After the subscriber asked for, capped at `policy.retry_after_max_s`
    (Knative takes the larger of backoff and capped Retry-After; it never shortens the backoff)."""
    if attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {attempt}")
    if not is_retryable(status):
        return GiveUp("not-retryable")
    if attempt > policy.retry:
        return GiveUp("retries-exhausted")
    delay = backoff_s(policy, attempt)
    if status in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            if policy.retry_after_max_s is not None:
                asked = min(asked, policy.retry_after_max_s)
            delay = max(delay, asked)
    return Retry(at=now + delay, attempt=attempt + 1)


# ---------------------------------------------------------------------------------------------
# The dead-letter sink's own attempts
# ---------------------------------------------------------------------------------------------

DEAD_LETTER_ATTEMPTS = 3
"""Attempts to hand an event to the dead-letter sink before it is kept as a dead letter instead."""


def dead_letter_retry_s(policy: DeliveryPolicy, attempt: int) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (1-based) to reach the dead-letter
    sink before the next, or None when `DEAD_LETTER_ATTEMPTS` are spent (the event is then kept
    as a dead letter). The sink has no DeliverySpec of its own: its waits double from the
    subscriber's `backoff_delay_s` (× 1, × 2, ...), whatever its backoff policy."""
    if attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {attempt}")
    if attempt >= DEAD_LETTER_ATTEMPTS:
        return None
    return float(policy.backoff_delay_s * 2 ** (attempt - 1))


# ---------------------------------------------------------------------------------------------
# Dead-letter extensions (Knative's knative_error.go)
# ---------------------------------------------------------------------------------------------

ERROR_DEST_EXTENSION = "knativeerrordest"
ERROR_CODE_EXTENSION = "knativeerrorcode"
ERROR_DATA_EXTENSION = "knativeerrordata"
ERROR_DATA_MAX_BYTES = 1024
"""The longest `knativeerrordata` value: Knative truncates the base64 text (not the body) to 1024
characters. As 1024 is a multiple of 4 that is the whole encoding of the body's first 768 bytes."""

_ERROR_DATA_MAX_RAW = ERROR_DATA_MAX_BYTES // 4 * 3


def dead_letter_extensions(destination: str, status: int | None, body: bytes | None) -> dict[str, str]:
    """CloudEvent extensions that tell a dead-letter sink why the event is there:
    `knativeerrordest` is the subscriber URL that failed; `knativeerrorcode` its last status as a
    string, left out when there was no response (Knative always sets it, to whatever code its
    dispatcher recorded);
    `knativeerrordata` the last response body, base64 (standard alphabet, padded), at most
    `ERROR_DATA_MAX_BYTES` characters, left out when the body is empty. Knative also strips
    bytes outside printable ASCII from the body before encoding; Flint does not, since base64 is
    header-safe already and stripping would corrupt a UTF-8 body."""
    ext = {ERROR_DEST_EXTENSION: destination}
    if status is not None:
        ext[ERROR_CODE_EXTENSION] = str(status)
    if body:
        ext[ERROR_DATA_EXTENSION] = base64.b64encode(body[:_ERROR_DATA_MAX_RAW]).decode("ascii")
    return ext


__all__ = [
    "DEAD_LETTER_ATTEMPTS",
    "DEFAULT_BACKOFF_DELAY_S",
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_TIMEOUT_S",
    "ERROR_CODE_EXTENSION",
    "ERROR_DATA_EXTENSION",
    "ERROR_DATA_MAX_BYTES",
    "ERROR_DEST_EXTENSION",
    "RETRYABLE_STATUSES",
    "RETRY_AFTER_STATUSES",
    "DeliveryPolicy",
    "GiveUp",
    "GiveUpReason",
    "Retry",
    "after_failure",
    "backoff_s",
    "dead_letter_extensions",
    "dead_letter_retry_s",
    "is_retryable",
    "parse_retry_after",
]
