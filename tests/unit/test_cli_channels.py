"""`flint channel|subscription`: `--type`, `--channel` and sink flags, manifests, tables, describe
text, and the commands end to end against the real API server on a memory store."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from controller.apiserver import make_api_app
from controller.cli import client as client_mod
from controller.cli.channel_cmd import (
    CHANNEL,
    SUBSCRIPTION,
    channel_ref_text,
    describe_channel,
    describe_subscription,
    new_channel,
    new_subscription,
    parse_channel_ref,
    parse_channel_type,
    parse_sink,
    sink_text,
    table,
    update_subscription,
)
from controller.cli.client import ApiClient, CliError
from controller.cli.main import main
from controller.store.memory import MemoryStore

Obj = dict[str, Any]
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
MSG = "messaging.knative.dev/v1"
IMC = {"apiVersion": MSG, "kind": "InMemoryChannel"}
CH = {"apiVersion": MSG, "kind": "Channel"}
KSVC_REF = {"apiVersion": "serving.knative.dev/v1", "kind": "Service"}
BROKER_REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker"}
URL = "http://channel-ingress.localhost:8080/default/"


def ts(seconds_ago: int) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(type_: str, status: str, reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": ts(30)}


def usage_error(fn: Any, *args: Any) -> str:
    with pytest.raises(CliError) as e:
        fn(*args)
    assert e.value.code == 2
    return e.value.message


# -- flag values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("messaging.knative.dev:v1:InMemoryChannel", IMC),
        ("imcv1", IMC),
        ("IMC", IMC),
        ("messaging.knative.dev:v1beta1:KafkaChannel", {"apiVersion": "messaging.knative.dev/v1beta1",
                                                        "kind": "KafkaChannel"}),
    ],
)
def test_parse_channel_type(flag: str, expected: Obj) -> None:
    assert parse_channel_type(flag) == expected


@pytest.mark.parametrize(
    "flag", ["InMemoryChannel", "messaging.knative.dev/v1:InMemoryChannel", "a:b:c:d", "a::c", ":v1:K",
             "a/b:v1:K"],
)
def test_parse_channel_type_refuses_other_forms(flag: str) -> None:
    message = usage_error(parse_channel_type, flag)
    assert message == (f"--type {flag!r}: expected GROUP:VERSION:KIND "
                       "(e.g. messaging.knative.dev:v1:InMemoryChannel), imcv1 or redis")


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("pipe", {**CH, "name": "pipe"}),
        ("channel:pipe", {**CH, "name": "pipe"}),
        ("Channel:pipe", {**CH, "name": "pipe"}),
        ("imc:pipe", {**IMC, "name": "pipe"}),
        ("inmemorychannel:pipe", {**IMC, "name": "pipe"}),
        ("InMemoryChannel:pipe", {**IMC, "name": "pipe"}),
        ("messaging.knative.dev:v1beta1:KafkaChannel:k",
         {"apiVersion": "messaging.knative.dev/v1beta1", "kind": "KafkaChannel", "name": "k"}),
    ],
)
def test_parse_channel_ref(flag: str, expected: Obj) -> None:
    assert parse_channel_ref(flag) == expected
    assert parse_channel_ref(channel_ref_text(expected)) == expected  # what list prints, typed back


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("", "expected NAME, channel:NAME, imc:NAME, rch:NAME or GROUP:VERSION:KIND:NAME"),
        ("a/b", "expected NAME, channel:NAME, imc:NAME, rch:NAME or GROUP:VERSION:KIND:NAME"),
        ("ksvc:pipe", "expected NAME, channel:NAME, imc:NAME, rch:NAME or GROUP:VERSION:KIND:NAME"),
        ("g:v:pipe", "expected NAME, channel:NAME, imc:NAME, rch:NAME or GROUP:VERSION:KIND:NAME"),
        ("g:v::pipe", "expected NAME, channel:NAME, imc:NAME, rch:NAME or GROUP:VERSION:KIND:NAME"),
        ("channel:", "expected channel:NAME with a name"),
        ("imc:a/b", "expected imc:NAME with a name"),
    ],
)
def test_parse_channel_ref_refuses_other_forms(flag: str, message: str) -> None:
    assert usage_error(parse_channel_ref, flag) == f"--channel {flag!r}: {message}"


def test_channel_ref_text() -> None:
    assert channel_ref_text({**CH, "name": "c", "namespace": "default"}) == "Channel:c"
    assert channel_ref_text({**IMC, "name": "i"}) == "InMemoryChannel:i"
    assert channel_ref_text({"apiVersion": "x.dev/v2", "kind": "K", "name": "k"}) == "x.dev:v2:K:k"
    assert channel_ref_text(None) == ""


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("channel:next", {"ref": {**CH, "name": "next"}}),
        ("ksvc:hello", {"ref": {**KSVC_REF, "name": "hello"}}),
        ("broker:b", {"ref": {**BROKER_REF, "name": "b"}}),
        ("https://hook.example/x", {"uri": "https://hook.example/x"}),
    ],
)
def test_parse_sink_adds_channel_to_the_eventing_forms(flag: str, expected: Obj) -> None:
    assert parse_sink(flag) == expected
    assert sink_text(expected) == flag


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("hello", "expected ksvc:NAME, broker:NAME, channel:NAME or an http(s):// URL"),
        ("imc:c", "expected ksvc:NAME, broker:NAME, channel:NAME or an http(s):// URL"),
        ("channel:", "expected channel:NAME with a name"),
        ("channel:a:b", "expected channel:NAME with a name"),
        ("ksvc:", "expected ksvc:NAME with a name"),  # eventing_cmd's checks stand
        ("http://", "the URL has no host"),
    ],
)
def test_parse_sink_refuses_other_forms(flag: str, message: str) -> None:
    assert usage_error(parse_sink, flag, "sink-reply") == f"--sink-reply {flag!r}: {message}"


def test_sink_text_of_a_channel_with_a_path_and_of_nothing() -> None:
    assert sink_text({"ref": {**CH, "name": "c"}, "uri": "/p"}) == "channel:c (+/p)"
    assert sink_text({"ref": {**IMC, "name": "i"}}) == "InMemoryChannel:i"
    assert sink_text(None) == ""


# -- manifests -----------------------------------------------------------------------------------


def test_new_channel() -> None:
    assert new_channel("c", "ns") == {
        "apiVersion": MSG,
        "kind": "Channel",
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": {},  # the server defaults the template
    }
    assert new_channel("c", "ns", "messaging.knative.dev:v1:InMemoryChannel")["spec"] == {
        "channelTemplate": IMC}
    with pytest.raises(CliError, match="--type 'imcv9'"):
        new_channel("c", "ns", "imcv9")


def test_new_subscription() -> None:
    s = new_subscription("s", "ns", "imc:pipe", "ksvc:hello", "channel:next", "http://dls.example/")
    assert s == {
        "apiVersion": MSG,
        "kind": "Subscription",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {
            "channel": {**IMC, "name": "pipe"},
            "subscriber": {"ref": {**KSVC_REF, "name": "hello"}},
            "reply": {"ref": {**CH, "name": "next"}},
            "delivery": {"deadLetterSink": {"uri": "http://dls.example/"}},
        },
    }
    # neither subscriber nor reply is the server's to refuse (its 422 names both fields)
    assert new_subscription("s", "ns", "pipe")["spec"] == {"channel": {**CH, "name": "pipe"}}
    with pytest.raises(CliError, match="--sink-dead-letter 'dead'"):
        new_subscription("s", "ns", "pipe", "ksvc:a", None, "dead")
    with pytest.raises(CliError, match="--channel 'ksvc:x'"):
        new_subscription("s", "ns", "ksvc:x", "ksvc:a")


def live_subscription() -> Obj:
    return {
        "apiVersion": MSG,
        "kind": "Subscription",
        "metadata": {"name": "s", "namespace": "default", "resourceVersion": "7",
                     "creationTimestamp": ts(65)},
        "spec": {
            "channel": {**CH, "name": "pipe"},
            "subscriber": {"ref": {**KSVC_REF, "name": "hello", "namespace": "default"}},
            "delivery": {"retry": 3},
        },
        "status": {"physicalSubscription": {"subscriberUri": "http://hello.default.localhost:8080"}},
    }


def test_update_subscription_replaces_only_what_is_given() -> None:
    cur = live_subscription()
    before = copy.deepcopy(cur)
    new = update_subscription(cur, reply="broker:b")
    assert cur == before  # the input is not changed
    assert "status" not in new
    assert new["metadata"] == cur["metadata"]
    assert new["spec"] == {**cur["spec"], "reply": {"ref": {**BROKER_REF, "name": "b"}}}
    new = update_subscription(cur, sink="https://x.example", dead_letter="ksvc:dead")
    assert new["spec"]["subscriber"] == {"uri": "https://x.example"}
    assert new["spec"]["delivery"] == {"retry": 3, "deadLetterSink": {"ref": {**KSVC_REF, "name": "dead"}}}
    assert "reply" not in new["spec"]
    with pytest.raises(CliError, match="--sink 'x'"):
        update_subscription(cur, sink="x")


# -- tables and describe -------------------------------------------------------------------------


def channel_obj(name: str = "pipe", ready: str = "True", ns: str = "default", backed: bool = True) -> Obj:
    st: Obj = {"conditions": [cond("Ready", ready, "" if ready == "True" else "NoDispatcher",
                                   "the dispatcher is not connected")]}
    if backed:
        st["channel"] = {**IMC, "name": name, "namespace": ns}
        st["address"] = {"url": f"http://channel-ingress.localhost:8080/{ns}/{name}"}
    return {
        "kind": "Channel",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts(125)},
        "spec": {"channelTemplate": {"apiVersion": "x.dev/v1", "kind": "Templated"}},
        "status": st,
    }


def test_channel_table_type_from_status_else_template() -> None:
    text = table("Channel", [channel_obj(), channel_obj("slow", "Unknown", backed=False)], NOW)
    assert text.splitlines() == [
        "NAME   TYPE              URL" + " " * 50 + "AGE    READY     REASON",
        f"pipe   InMemoryChannel   {URL}pipe   2m5s   True",
        "slow   Templated" + " " * 62 + "2m5s   Unknown   NoDispatcher",
    ]
    rows = [ln.split() for ln in table("Channel", [channel_obj(ns="team")], NOW, True).splitlines()]
    assert rows == [["NAMESPACE", "NAME", "TYPE", "URL", "AGE", "READY", "REASON"],
                    ["team", "pipe", "InMemoryChannel", "http://channel-ingress.localhost:8080/team/pipe",
                     "2m5s", "True"]]


def test_subscription_table_uris_from_status_else_spec() -> None:
    resolved = live_subscription()
    resolved["spec"]["reply"] = {"ref": {**CH, "name": "next"}}
    resolved["spec"]["delivery"] = {"deadLetterSink": {"uri": "http://dls.example/"}}
    resolved["status"]["conditions"] = [cond("Ready", "True")]
    pending = copy.deepcopy(resolved)
    pending["metadata"].update(name="u", namespace="other")
    pending["spec"]["channel"] = {**IMC, "name": "raw"}
    pending["status"] = {"conditions": [cond("Ready", "False", "ChannelNotFound")]}
    rows = [ln.split() for ln in table("Subscription", [resolved, pending], NOW, all_namespaces=True)
            .splitlines()]
    assert rows == [
        ["NAMESPACE", "NAME", "CHANNEL", "SUBSCRIBER", "REPLY", "DEAD", "LETTER", "SINK", "READY", "REASON"],
        ["default", "s", "Channel:pipe", "http://hello.default.localhost:8080", "channel:next",
         "http://dls.example/", "True"],
        ["other", "u", "InMemoryChannel:raw", "ksvc:hello", "channel:next", "http://dls.example/", "False",
         "ChannelNotFound"],
    ]


def test_describe_channel() -> None:
    ch = channel_obj("slow", "Unknown")
    ch["status"]["subscribers"] = [{"uid": "u-1", "ready": "True"}, {"uid": "u-2", "ready": "Unknown"}]
    text = describe_channel(ch, NOW)
    assert text.startswith("Name:       slow\nNamespace:  default\nAge:        2m5s\n")
    assert "Type:       InMemoryChannel (messaging.knative.dev/v1)\n" in text
    assert f"URL:        {URL}slow\n" in text
    assert "Subscribers:\n  u-1  Ready: True\n  u-2  Ready: Unknown\n" in text
    assert "Dead Letter Sink" not in text
    assert re.search(r"\?\? +Ready +30s +NoDispatcher", text)
    assert "Ready: the dispatcher is not connected" in text

    bare = channel_obj(backed=False)
    bare["spec"]["delivery"] = {"deadLetterSink": {"ref": {**KSVC_REF, "name": "dead"}}}
    bare["status"]["deadLetterSinkUri"] = "http://dead.default.localhost:8080"
    text = describe_channel(bare, NOW)
    assert "Type:       Templated (x.dev/v1)\nURL:\n" in text  # no address yet
    assert "Subscribers" not in text
    assert ("Dead Letter Sink:\n  Sink:       ksvc:dead\n"
            "  URI:        http://dead.default.localhost:8080") in text


def test_describe_subscription() -> None:
    sub = live_subscription()
    sub["spec"]["reply"] = {"ref": {**BROKER_REF, "name": "b"}}
    sub["status"]["physicalSubscription"]["replyUri"] = f"{URL}b"
    sub["status"]["conditions"] = [cond("ReferencesResolved", "True"), cond("Ready", "True")]
    text = describe_subscription(sub, NOW)
    assert text.startswith("Name:       s\nNamespace:  default\nAge:        65s\nChannel:    Channel:pipe\n")
    assert ("Subscriber:\n  Sink:       ksvc:hello\n  URI:        http://hello.default.localhost:8080"
            in text)
    assert f"Reply:\n  Sink:       broker:b\n  URI:        {URL}b" in text
    assert "Dead Letter Sink" not in text  # none in spec, none resolved
    assert re.search(r"\+\+ +ReferencesResolved", text) and re.search(r"\+\+ +Ready", text)

    sub["status"]["physicalSubscription"]["deadLetterSinkUri"] = "http://from-the-channel.example/"
    text = describe_subscription(sub, NOW)
    assert "Dead Letter Sink:\n  URI:        http://from-the-channel.example/" in text  # the channel's


# -- end to end ----------------------------------------------------------------------------------


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real API app on a memory store, on a loop in a thread (`main()` calls asyncio.run)."""
    client_mod._discovery.clear()
    loop = asyncio.new_event_loop()

    async def start() -> tuple[web.AppRunner, MemoryStore]:
        store = MemoryStore()
        await store.open()
        runner = web.AppRunner(make_api_app(store))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, store

    runner, store = loop.run_until_complete(start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setenv("FLINT_API", url)
    yield url

    async def stop() -> None:
        await runner.cleanup()
        await store.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()
    client_mod._discovery.clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def api_get(url: str, plural: str, name: str, ns: str = "default") -> Obj:
    async def get() -> Obj:
        async with ApiClient(url) as api:
            return await api.request("GET", f"/apis/{MSG}/namespaces/{ns}/{plural}/{name}")

    return asyncio.run(get())


def put_status(url: str, info: Any, name: str, status: Obj) -> None:
    """What the channel and subscription reconcilers would write."""

    async def put() -> None:
        async with ApiClient(url) as api:
            obj = await api.get(info, "default", name)
            obj["status"] = status
            await api.request("PUT", ApiClient.path(info, "default", name) + "/status", obj)

    asyncio.run(put())


def test_channel_commands_end_to_end(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "channel", "list") == (0, "", "No channels found.\n")
    code, out, err = run(capsys, "channel", "create", "pipe")
    assert (code, out, err) == (0, "Channel 'pipe' successfully created in namespace 'default'.\n", "")
    stored = api_get(api, "channels", "pipe")
    assert stored["spec"]["channelTemplate"] == IMC  # the server's default
    assert stored["metadata"]["annotations"]["messaging.knative.dev/subscribable"] == "v1"

    code, out, err = run(capsys, "channel", "create", "k", "-n", "team",
                         "--type", "messaging.knative.dev:v1beta1:KafkaChannel")
    assert code == 0 and "KafkaChannel is not a channel kind Flint provides" in err  # the server's warning
    assert api_get(api, "channels", "k", "team")["spec"]["channelTemplate"] == {
        "apiVersion": "messaging.knative.dev/v1beta1", "kind": "KafkaChannel"}
    code, _, err = run(capsys, "channel", "create", "bad", "--type", "InMemoryChannel")
    assert code == 2 and "--type 'InMemoryChannel': expected GROUP:VERSION:KIND" in err
    code, _, err = run(capsys, "channel", "create", "Bad_Name")
    assert code == 1 and err.startswith("Error from server (Invalid): ") and "\n  metadata.name: " in err

    code, out, _ = run(capsys, "channel", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "URL", "AGE", "READY", "REASON"]
    assert len(lines) == 2 and re.fullmatch(r"pipe +InMemoryChannel +\d+s", lines[1])  # no status: no URL
    put_status(api, CHANNEL, "pipe", {
        "address": {"url": f"{URL}pipe"},
        "channel": {**IMC, "name": "pipe", "namespace": "default"},
        "conditions": [cond("Ready", "False", "NoDispatcher", "the dispatcher is not connected")],
    })
    code, out, _ = run(capsys, "channels", "ls")
    assert re.fullmatch(rf"pipe +InMemoryChannel +{re.escape(URL)}pipe +\d+s +False +NoDispatcher",
                        out.splitlines()[1])
    code, out, _ = run(capsys, "channel", "list", "-A", "-o", "json")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in json.loads(out)["items"]] == [
        ("default", "pipe"), ("team", "k")]
    code, out, _ = run(capsys, "channel", "list", "-o", "name")
    assert out == "channel.messaging.knative.dev/pipe\n"

    code, out, _ = run(capsys, "channel", "describe", "pipe")
    assert code == 0 and out.startswith("Name:       pipe\nNamespace:  default\n")
    assert "Type:       InMemoryChannel (messaging.knative.dev/v1)" in out
    assert f"URL:        {URL}pipe" in out and "Ready: the dispatcher is not connected" in out
    code, out, _ = run(capsys, "channel", "describe", "pipe", "-o", "yaml")
    assert "kind: Channel" in out and "channelTemplate:" in out

    code, _, err = run(capsys, "channel", "create", "pipe")
    assert code == 1 and err.startswith("Error from server (AlreadyExists)")
    code, out, _ = run(capsys, "channel", "delete", "pipe")
    assert out == "Channel 'pipe' successfully deleted in namespace 'default'.\n"
    code, _, err = run(capsys, "channel", "describe", "pipe")
    assert code == 1 and err.startswith("Error from server (NotFound)")
    code, _, err = run(capsys, "channel", "delete", "pipe")
    assert code == 1 and err.startswith("Error from server (NotFound)")


def test_subscription_commands_end_to_end(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "subscription", "list") == (0, "", "No subscriptions found.\n")
    code, out, err = run(capsys, "subscription", "create", "s", "--channel", "pipe")
    assert (code, out) == (1, "")
    assert err.startswith("Error from server (Invalid): ")
    assert "\n  spec.reply, spec.subscriber: missing field(s)" in err  # the API's field paths
    code, _, err = run(capsys, "subscription", "create", "s", "--channel", "pipe", "--sink", "hello")
    assert code == 2 and "--sink 'hello': expected ksvc:NAME, broker:NAME, channel:NAME or an http" in err
    code, _, err = run(capsys, "subscription", "create", "s", "--channel", "ksvc:x", "--sink", "ksvc:a")
    assert code == 2 and "--channel 'ksvc:x': expected NAME, channel:NAME, imc:NAME" in err
    with pytest.raises(SystemExit) as exited:
        run(capsys, "subscription", "create", "s", "--sink", "ksvc:hello")
    assert exited.value.code == 2 and "the following arguments are required: --channel" in (
        capsys.readouterr().err)

    code, out, err = run(capsys, "subscription", "create", "s", "--channel", "pipe", "--sink", "ksvc:hello",
                         "--sink-reply", "channel:next", "--sink-dead-letter", "http://dls.example/")
    assert (code, out) == (0, "Subscription 's' successfully created in namespace 'default'.\n"), err
    stored = api_get(api, "subscriptions", "s")
    assert stored["spec"] == {
        "channel": {**CH, "name": "pipe"},
        "subscriber": {"ref": {**KSVC_REF, "name": "hello", "namespace": "default"}},  # defaulted
        "reply": {"ref": {**CH, "name": "next", "namespace": "default"}},
        "delivery": {"deadLetterSink": {"uri": "http://dls.example/"}},
    }
    code, out, err = run(capsys, "sub", "create", "raw", "--channel", "imc:pipe", "-s", "https://h.example/")
    assert code == 0, err
    assert api_get(api, "subscriptions", "raw")["spec"]["channel"] == {**IMC, "name": "pipe"}

    code, out, _ = run(capsys, "subscription", "list")
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[0] == ["NAME", "CHANNEL", "SUBSCRIBER", "REPLY", "DEAD", "LETTER", "SINK", "READY", "REASON"]
    assert rows[1:] == [["raw", "InMemoryChannel:pipe", "https://h.example/"],
                        ["s", "Channel:pipe", "ksvc:hello", "channel:next", "http://dls.example/"]]
    put_status(api, SUBSCRIPTION, "s", {
        "physicalSubscription": {"subscriberUri": "http://hello.default.localhost:8080",
                                 "replyUri": f"{URL}next", "deadLetterSinkUri": "http://dls.example/"},
        "conditions": [cond("ReferencesResolved", "True"), cond("AddedToChannel", "True"),
                       cond("ChannelReady", "True"), cond("Ready", "True")],
    })
    code, out, _ = run(capsys, "sub", "ls")
    assert out.splitlines()[2].split() == ["s", "Channel:pipe", "http://hello.default.localhost:8080",
                                           f"{URL}next", "http://dls.example/", "True"]

    code, out, _ = run(capsys, "subscription", "update", "s", "--sink", "broker:b")
    assert (code, out) == (0, "Subscription 's' successfully updated in namespace 'default'.\n")
    stored = api_get(api, "subscriptions", "s")
    assert stored["spec"]["subscriber"] == {"ref": {**BROKER_REF, "name": "b", "namespace": "default"}}
    assert stored["spec"]["reply"]["ref"]["name"] == "next"  # untouched
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["physicalSubscription"]["replyUri"] == f"{URL}next"  # update keeps status

    code, _, err = run(capsys, "subscription", "update", "s", "--sink-dead-letter", "ksvc:dead")
    assert code == 1 and err.startswith("Error from server (Invalid): ")  # only sink and reply may change
    assert "\n  spec: Immutable fields changed" in err
    code, _, err = run(capsys, "subscription", "update", "s")
    assert code == 2 and "nothing to update" in err
    with pytest.raises(SystemExit) as exited:  # update has no --channel: Knative makes it immutable
        run(capsys, "subscription", "update", "s", "--channel", "other")
    assert exited.value.code == 2 and "unrecognized arguments: --channel other" in capsys.readouterr().err
    code, _, err = run(capsys, "subscription", "update", "nope", "--sink", "ksvc:a")
    assert code == 1 and err.startswith("Error from server (NotFound)")

    code, out, _ = run(capsys, "subscription", "describe", "s")
    assert out.startswith("Name:       s\nNamespace:  default\n")
    assert "Channel:    Channel:pipe\n" in out
    assert "Subscriber:\n  Sink:       broker:b\n  URI:        http://hello.default.localhost:8080" in out
    assert f"Reply:\n  Sink:       channel:next\n  URI:        {URL}next" in out
    assert "Dead Letter Sink:\n  Sink:       http://dls.example/\n" in out
    code, out, _ = run(capsys, "subscription", "describe", "s", "-o", "json")
    assert json.loads(out)["kind"] == "Subscription"

    code, out, _ = run(capsys, "subscriptions", "delete", "s", "raw")
    assert out == ("Subscription 's' successfully deleted in namespace 'default'.\n"
                   "Subscription 'raw' successfully deleted in namespace 'default'.\n")
    code, _, err = run(capsys, "subscription", "describe", "s")
    assert code == 1 and err.startswith("Error from server (NotFound)")
    assert run(capsys, "subscription", "list", "-A") == (0, "", "No subscriptions found.\n")
