"""Runs a LocalRuntime in its own process, so tests can SIGKILL a runtime and re-adopt."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from controller.runtime.base import ReplicaSpec
from controller.runtime.local import LocalRuntime
from controller.runtime.local_settings import LocalRuntimeSettings


async def main(state_dir: Path, image_dir: Path, argv: list[str]) -> None:
    rt = LocalRuntime(state_dir, settings=LocalRuntimeSettings(backoff_initial_s=0.05))
    await rt.start()
    spec = ReplicaSpec(
        namespace="default",
        revision="hello-00001",
        service="hello",
        configuration="hello",
        image_dir=image_dir,
        command=tuple(argv),
    )
    status = await rt.start_replica(spec)
    ready = asyncio.Event()
    rt.subscribe(lambda st: ready.set() if st.state == "ready" else None)
    if rt.replicas()[0].state != "ready":
        await ready.wait()
    print(json.dumps({"id": status.id, "pid": rt.replicas()[0].pid}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
