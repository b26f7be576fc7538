"""Several gateways and dispatchers on one `flint up`, as several machines would run them: context
managers that start a joined process, wait until it is ready and stop it at the end, failing the
test when it had to be killed or left a process behind (`loadtests.flint_process` starts them;
`Flint.start_gateway` / `start_dispatcher` for the flags they get).

    with joined_gateway(f, gateway_id="gw-b") as gw, joined_dispatcher(f) as d:
        ...               # gw.port is the second gateway's proxy, d.admin its admin port
        d.kill()          # SIGKILL (and its process group): a crash; not a failure at the end

Both get `flint up`'s Redis settings (`--redis URL`, `--redis-password-file`) as the `FLINT_REDIS_*`
variables `flint up` gives its own processes, never a password in argv.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from loadtests.flint_process import Flint, FlintError, Joined, stop_joined

__all__ = ["joined_dispatcher", "joined_gateway", "stop_one"]


def stop_one(f: Flint, j: Joined, timeout_s: float = 20) -> None:
    """Stop `j` (SIGTERM; SIGKILL after `timeout_s`) and fail if it had to be killed or left a
    process mentioning its state dir behind. One that `j.kill()` ended is only reaped."""
    problems = stop_joined(f, j, timeout_s)
    if problems:
        raise FlintError(f"stopping the {j.kind} {j.name} was not clean:\n" + "\n".join(problems))


@contextlib.contextmanager
def joined_gateway(f: Flint, *, gateway_id: str = "gw-b", workers: int = 1, name: str | None = None,
                   timeout_s: float = 30) -> Iterator[Joined]:
    """A second gateway process (`python -m gateway --controller … --gateway-id <gateway_id>
    --state-dir <its own> --port <free>`), ready (its /readyz: every worker holds a routing
    snapshot) before the block runs, stopped after it."""
    j = f.start_gateway(workers=workers, name=name, gateway_id=gateway_id, timeout_s=timeout_s)
    try:
        yield j
    finally:
        stop_one(f, j)


@contextlib.contextmanager
def joined_dispatcher(f: Flint, *, gateway: Joined | None = None, name: str | None = None,
                      timeout_s: float = 30) -> Iterator[Joined]:
    """A second dispatcher process (`python -m controller.eventing`, its own state dir and admin
    port; posting through `gateway`, default `flint up`'s), answering /healthz before the block
    runs, stopped after it. Its id (`j.dispatcher_id`) differs from the embedded one's."""
    j = f.start_dispatcher(gateway=gateway, name=name, timeout_s=timeout_s)
    try:
        yield j
    finally:
        stop_one(f, j)
