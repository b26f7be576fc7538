"""The link token file is read again for every connection (gateway) and every poll (dispatcher):
the kubelet rotates projected tokens; without one, the owner's token is the bearer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from support.kubeapi.session import eventually

from controller.eventing.dispatcher import Dispatcher, DispatcherSettings
from flint_common.secret import Secret
from gateway.config import GatewaySettings
from gateway.link import ControllerLink, LinkTokenUnreadable
from gateway.router import Router

OWNER = Secret("the-owners-token-0123456789")


async def write(path: Path, text: str) -> None:
    await asyncio.to_thread(path.write_text, text)


async def test_the_gateway_link_reads_its_token_file_at_each_connection(tmp_path: Path) -> None:
    path = tmp_path / "token"
    link = ControllerLink(GatewaySettings(state_dir=tmp_path, link_token_file=path), Router(), "gw/0",
                          token=OWNER)
    with pytest.raises(LinkTokenUnreadable, match="FileNotFoundError") as missing:
        await link._credential()
    assert str(path) in str(missing.value)
    await write(path, "first\n")
    assert (await link._credential()) == Secret("first")
    await write(path, "rotated\n")
    assert (await link._credential()) == Secret("rotated")
    owners = ControllerLink(GatewaySettings(state_dir=tmp_path), Router(), "gw/1", token=OWNER)
    assert (await owners._credential()) is OWNER


async def test_the_dispatcher_reads_its_token_file_at_each_poll(tmp_path: Path) -> None:
    path = tmp_path / "token"
    dispatcher = Dispatcher(DispatcherSettings(state_dir=tmp_path, token=OWNER, link_token_file=path))
    await write(path, "")
    with pytest.raises(OSError, match="cannot read"):  # retried with the poll's backoff
        await dispatcher._plan_credential()
    await write(path, "first\n")
    assert (await dispatcher._plan_credential()) == Secret("first")
    await write(path, "rotated")
    assert (await dispatcher._plan_credential()) == Secret("rotated")
    owners = Dispatcher(DispatcherSettings(state_dir=tmp_path / "other", token=OWNER))
    assert (await owners._plan_credential()) is OWNER


async def test_a_link_whose_token_file_is_missing_keeps_retrying_until_it_appears(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flint.gateway.link")
    path = tmp_path / "token"
    settings = GatewaySettings(state_dir=tmp_path, link_token_file=path,
                               controller_url="http://127.0.0.1:9")  # nothing listens there
    link = ControllerLink(settings, Router(), "gw/0", token=OWNER, rnd=lambda: 0.0)
    task = asyncio.create_task(link.run(load_persisted=False))
    try:
        async def logged(event: str) -> bool:
            return f"event={event}" in caplog.text

        await eventually(lambda: logged("link_token_unreadable"), bool, 5.0, "the missing file said")
        await write(path, "now-there\n")  # the kubelet mounted it: the next attempt connects
        await eventually(lambda: logged("link_down"), bool, 5.0, "a connection tried")
        assert not task.done()  # still retrying, never crashed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
