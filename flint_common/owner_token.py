"""`python -m flint_common.owner_token STATE_DIR [--from FILE]`: put the owner's token into a state
dir before a component starts (a Kubernetes init container), so the controller's replicas, the
gateways and the dispatcher share the one from a mounted Secret, or, without one, the pod has its
own. The token is never printed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flint_common.private import ensure_private_dir, private_umask, write_private
from flint_common.secret import load_or_create_token, read_token


def token_path(state_dir: Path) -> Path:
    """Where every component reads the owner's token (`<state-dir>/auth/token`)."""
    return state_dir / "auth" / "token"


def install(state_dir: Path, source: Path | None) -> str:
    """The token file in `state_dir` (made private: 0700 dirs, a 0600 file): `source`'s token when
    that file exists (it replaces the one there), else the one there, else a new one. Says which."""
    ensure_private_dir(state_dir)
    dest = token_path(state_dir)
    if source is not None and source.exists():
        token = read_token(source)  # ValueError when empty
        write_private(dest, token.reveal().encode() + b"\n")
        return f"the owner's token from {source}"
    existed = dest.exists()
    load_or_create_token(dest)
    return "the owner's token kept in the state dir" if existed else "a new owner's token"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flint_common.owner_token", description=__doc__)
    p.add_argument("state_dir", type=Path, help="the component's --state-dir")
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="FILE",
                   help="a file holding the token to use (e.g. a mounted Secret's key); when it "
                   "does not exist, the state dir's own token is kept or made")
    a = p.parse_args(argv)
    private_umask()
    try:
        what = install(a.state_dir, a.source)
    except (OSError, ValueError) as exc:
        print(f"owner_token: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"owner_token: {token_path(a.state_dir)} holds {what}", flush=True)
    return 0


__all__ = ["install", "main", "token_path"]

if __name__ == "__main__":
    raise SystemExit(main())
