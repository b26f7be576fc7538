"""`python -m support.kubeapi [--kubeconfig PATH]` (in tests/): the fake as a server of its own, until killed.

With `--kubeconfig` it writes a kubeconfig pointing at itself, so the opt-in suite's real-cluster
path (`FLINT_KUBECONFIG=PATH pytest tests/kubernetes`) can be tried without a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from .kubeconfig import kubeconfig_text
from .server import KubeApiFake


async def _serve(kubeconfig: Path | None) -> None:
    async with KubeApiFake() as fake:
        if kubeconfig is not None:
            await asyncio.to_thread(kubeconfig.write_text, kubeconfig_text(fake.url))
        print(f"serving the Kubernetes API fake at {fake.url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the fake here")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.kubeconfig))


if __name__ == "__main__":
    main()
