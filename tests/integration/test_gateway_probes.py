"""The gateway's probe listener (`--probe-listen`): the kubelet's /readyz and /healthz on the pod
IP, while the admin port, with its /metrics, stays on loopback."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from flint_common.secret import Secret
from gateway.admin import AdminServer
from gateway.server import build_parser, settings_from_args


async def test_probe_listener_serves_only_the_probes_without_a_token(tmp_path: Path) -> None:
    admin = AdminServer("127.0.0.1", 0, tmp_path, workers=1, token=Secret("owner-token"),
                        probe=("127.0.0.1", 0))
    await admin.start()
    try:
        assert admin.probe_port not in (None, admin.port)
        probe = f"http://127.0.0.1:{admin.probe_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(probe + "/healthz") as r:
                assert (r.status, await r.text()) == (200, "ok\n")
            async with http.get(probe + "/readyz") as r:  # no worker answers: not ready, and why
                assert r.status == 503
                assert "worker 0 not answering" in await r.text()
            async with http.get(probe + "/metrics") as r:
                assert r.status == 404
            async with http.get(f"http://127.0.0.1:{admin.port}/readyz") as r:
                assert r.status == 503  # the same answer as the admin port's
            async with http.get(f"http://127.0.0.1:{admin.port}/metrics") as r:
                assert r.status == 200
    finally:
        await admin.stop()


async def test_without_probe_listen_there_is_none(tmp_path: Path) -> None:
    admin = AdminServer("127.0.0.1", 0, tmp_path, workers=1, token=Secret("owner-token"))
    await admin.start()
    try:
        assert admin.probe_port is None
    finally:
        await admin.stop()


def test_probe_listen_flag() -> None:
    parse = build_parser().parse_args
    assert settings_from_args(parse(["--probe-listen", "10.1.2.3:8081"])).probe_address == ("10.1.2.3", 8081)
    assert settings_from_args(parse([])).probe_address is None
    with pytest.raises(ValueError, match=r"--probe-listen '10\.1\.2\.3'"):
        settings_from_args(parse(["--probe-listen", "10.1.2.3"]))
