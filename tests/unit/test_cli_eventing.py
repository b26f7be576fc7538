"""`flint broker|trigger|event`: flag parsing, manifests, tables, CloudEvent encoding, the gateway
rewrite, and the commands end to end against the real API server on a memory store."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from controller.apiserver import make_api_app
from controller.cli import client as client_mod
from controller.cli.client import ApiClient, CliError
from controller.cli.dead_letters_cmd import dead_letter_row, dead_letters_table, truncate
from controller.cli.event_send import EventFlags, build_event, encode, needs_gateway, parse_extensions, route
from controller.cli.eventing_cmd import (
    BROKER,
    describe_broker,
    describe_trigger,
    new_broker,
    new_trigger,
    parse_filters,
    parse_sink,
    sink_text,
    table,
    update_trigger,
)
from controller.cli.main import main
from controller.store.memory import MemoryStore
from flint_common.cloudevents.codec import Event, decode_http

Obj = dict[str, Any]
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KSVC_REF = {"apiVersion": "serving.knative.dev/v1", "kind": "Service"}
BROKER_REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker"}


def ts(seconds_ago: int) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(type_: str, status: str, reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": ts(30)}


# -- sinks and filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("ksvc:hello", {"ref": {**KSVC_REF, "name": "hello"}}),
        ("broker:other", {"ref": {**BROKER_REF, "name": "other"}}),
        ("http://example.com/hook?x=1", {"uri": "http://example.com/hook?x=1"}),
        ("https://sink.default.localhost:8443", {"uri": "https://sink.default.localhost:8443"}),
    ],
)
def test_parse_sink(flag: str, expected: Obj) -> None:
    assert parse_sink(flag) == expected


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("hello", "expected ksvc:NAME, broker:NAME or an http(s):// URL"),
        ("channel:c", "expected ksvc:NAME, broker:NAME or an http(s):// URL"),
        ("ftp://example.com/x", "expected ksvc:NAME, broker:NAME or an http(s):// URL"),
        ("ksvc:", "expected ksvc:NAME with a name"),
        ("broker:a/b", "expected broker:NAME with a name"),
        ("http://", "the URL has no host"),
        ("http://h:99999/", "not a valid URL"),
    ],
)
def test_parse_sink_refuses_other_forms(flag: str, message: str) -> None:
    with pytest.raises(CliError) as e:
        parse_sink(flag, "dl-sink")
    assert e.value.code == 2
    assert e.value.message.startswith(f"--dl-sink {flag!r}: ")
    assert message in e.value.message


def test_sink_text_is_what_the_user_typed() -> None:
    for flag in ("ksvc:hello", "broker:b", "http://x.example/y"):
        assert sink_text(parse_sink(flag)) == flag
    other = {"ref": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "c"},
             "uri": "/p"}
    assert sink_text(other) == "Channel:c (+/p)"
    assert sink_text(None) == ""


def test_parse_filters_sets_and_removes() -> None:
    assert parse_filters(["type=dev.x", "source=", "type=dev.y", "subject-"], allow_remove=True) == (
        {"type": "dev.y", "source": ""},
        ["subject"],
    )
    with pytest.raises(CliError, match="only makes sense with 'trigger update'") as e:
        parse_filters(["type-"], allow_remove=False)
    assert e.value.code == 2
    with pytest.raises(CliError, match="expected KEY=VALUE to set or KEY- to remove"):
        parse_filters(["type"], allow_remove=True)


# -- manifests -----------------------------------------------------------------------------------


def test_new_broker() -> None:
    assert new_broker("b", "ns") == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "b", "namespace": "ns"},
        "spec": {},
    }
    b = new_broker("b", "ns", "MTChannelBasedBroker", "ksvc:dead")
    assert b["metadata"]["annotations"] == {"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}
    assert b["spec"] == {"delivery": {"deadLetterSink": {"ref": {**KSVC_REF, "name": "dead"}}}}


def test_new_trigger() -> None:
    t = new_trigger("t", "ns", "b", "ksvc:hello", ["type=dev.x", "source=/s"], "http://dls.example/")
    assert t == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {
            "broker": "b",
            "filter": {"attributes": {"type": "dev.x", "source": "/s"}},
            "subscriber": {"ref": {**KSVC_REF, "name": "hello"}},
            "delivery": {"deadLetterSink": {"uri": "http://dls.example/"}},
        },
    }
    assert "filter" not in new_trigger("t", "ns", "b", "https://x.example")["spec"]
    with pytest.raises(CliError, match="--sink 'nope'"):
        new_trigger("t", "ns", "b", "nope")


def live_trigger() -> Obj:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t", "namespace": "default", "resourceVersion": "7",
                     "labels": {"eventing.knative.dev/broker": "b"}},
        "spec": {
            "broker": "b",
            "filter": {"attributes": {"type": "dev.x", "source": "/s"}},
            "subscriber": {"ref": {**KSVC_REF, "name": "hello", "namespace": "default"}},
            "delivery": {"retry": 3},
        },
        "status": {"subscriberUri": "http://hello.default.localhost:8080"},
    }


def test_update_trigger_merges_and_removes_filters() -> None:
    cur = live_trigger()
    before = copy.deepcopy(cur)
    new = update_trigger(cur, ["source-", "subject=a", "type=dev.y"])
    assert cur == before  # the input is not changed
    assert new["spec"]["filter"] == {"attributes": {"type": "dev.y", "subject": "a"}}
    assert "status" not in new
    assert new["spec"]["subscriber"] == cur["spec"]["subscriber"]
    assert new["metadata"] == cur["metadata"]
    # removing every attribute leaves the filter that matches every event
    assert update_trigger(cur, ["type-", "source-"])["spec"]["filter"] == {}
    # removing a key that is not there changes nothing
    assert update_trigger(cur, ["nothere-"])["spec"]["filter"] == cur["spec"]["filter"]


def test_update_trigger_replaces_sink_and_dead_letter_sink() -> None:
    new = update_trigger(live_trigger(), sink="broker:next", dl_sink="ksvc:dead")
    assert new["spec"]["subscriber"] == {"ref": {**BROKER_REF, "name": "next"}}
    assert new["spec"]["delivery"] == {"retry": 3, "deadLetterSink": {"ref": {**KSVC_REF, "name": "dead"}}}
    assert new["spec"]["filter"] == live_trigger()["spec"]["filter"]


# -- tables and describe -------------------------------------------------------------------------


def broker_obj(name: str = "default", ready: str = "True", ns: str = "default") -> Obj:
    return {
        "kind": "Broker",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts(125),
                     "annotations": {"eventing.knative.dev/broker.class": "Flint"}},
        "spec": {"delivery": {"deadLetterSink": {"ref": {**KSVC_REF, "name": "dead"}}}},
        "status": {
            "address": {"url": f"http://broker-ingress.localhost:8080/{ns}/{name}"},
            "deadLetterSinkUri": "http://dead.default.localhost:8080",
            "conditions": [
                cond("Addressable", "True"),
                cond("FilterReady", ready, "" if ready == "True" else "NoDispatcher", "no dispatcher"),
                cond("Ready", ready, "" if ready == "True" else "NoDispatcher", "no dispatcher"),
            ],
        },
    }


def test_broker_table() -> None:
    text = table("Broker", [broker_obj(), broker_obj("slow", "Unknown")], NOW)
    url = "http://broker-ingress.localhost:8080/default/"
    assert text.splitlines() == [
        "NAME      URL" + " " * 52 + "AGE    CONDITIONS   READY     REASON",
        f"default   {url}default   2m5s   3 OK / 3     True",
        f"slow      {url}slow      2m5s   1 OK / 3     Unknown   NoDispatcher",
    ]


def test_trigger_table_sink_from_status_else_spec_and_namespaces() -> None:
    resolved = live_trigger()
    resolved["metadata"]["creationTimestamp"] = ts(59)
    resolved["status"]["conditions"] = [cond("SubscriberResolved", "True"), cond("Ready", "True")]
    pending = copy.deepcopy(resolved)
    pending["metadata"].update(name="u", namespace="other")
    pending["status"] = {"conditions": [cond("Ready", "False", "BrokerDoesNotExist")]}
    rows = [ln.split() for ln in table("Trigger", [resolved, pending], NOW, all_namespaces=True).splitlines()]
    assert rows == [
        ["NAMESPACE", "NAME", "BROKER", "SINK", "AGE", "CONDITIONS", "READY", "REASON"],
        ["default", "t", "b", "http://hello.default.localhost:8080", "59s", "2", "OK", "/", "2", "True"],
        ["other", "u", "b", "ksvc:hello", "59s", "0", "OK", "/", "1", "False", "BrokerDoesNotExist"],
    ]


def test_describe_broker_and_trigger() -> None:
    text = describe_broker(broker_obj("slow", "Unknown"), NOW)
    assert "Name:       slow" in text
    assert "eventing.knative.dev/broker.class=Flint" in text
    assert "Address:\n  URL:        http://broker-ingress.localhost:8080/default/slow" in text
    assert (
        "Dead Letter Sink:\n  Sink:       ksvc:dead\n  URI:        http://dead.default.localhost:8080"
    ) in text
    assert re.search(r"\?\? +Ready +30s +NoDispatcher", text)
    assert "Ready: no dispatcher" in text

    t = live_trigger()
    t["status"]["conditions"] = [cond("Ready", "True")]
    text = describe_trigger(t, NOW)
    assert "Broker:     b" in text
    assert "Filter:\n  source=/s\n  type=dev.x" in text
    assert "Sink:\n  Sink:       ksvc:hello\n  URI:        http://hello.default.localhost:8080" in text
    assert "Dead Letter Sink" not in text
    assert re.search(r"\+\+ +Ready", text)


# -- events --------------------------------------------------------------------------------------


def decoded(flags: EventFlags, mode: str) -> Event:
    """What Flint's broker ingress reads from the message `event send` would post."""
    msg = encode(build_event(flags, mode), mode)
    events = decode_http(msg.headers, msg.body, max_event_bytes=1 << 20)
    assert len(events) == 1
    return events[0]


def test_binary_json_event_with_extensions() -> None:
    flags = EventFlags(type="dev.x", source="/cli", id="e-1", data=b'{"n": [1, 2]}',
                       extensions=["myext=v 1%", "subject=s"])
    msg = encode(build_event(flags, "binary"), "binary")
    assert msg.body == b'{"n": [1, 2]}'  # byte for byte
    h = msg.headers
    assert (h["ce-type"], h["ce-source"], h["ce-id"], h["ce-specversion"]) == ("dev.x", "/cli", "e-1", "1.0")
    assert h["content-type"] == "application/json"
    assert h["ce-myext"] == "v%201%25" and h["ce-subject"] == "s"  # percent-encoded per the binding
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", h["ce-time"])
    ev = decoded(flags, "binary")
    assert ev.get("myext") == "v 1%" and ev.json() == {"n": [1, 2]}


def test_structured_event_carries_data_by_content_type() -> None:
    msg = encode(build_event(EventFlags("dev.x", "/cli", "e-2", b'{"a": 1}', None, ["myext=v"]),
                             "structured"), "structured")
    assert msg.headers == {"content-type": "application/cloudevents+json"}
    doc = json.loads(msg.body)
    assert doc["data"] == {"a": 1} and doc["datacontenttype"] == "application/json"
    assert (doc["id"], doc["type"], doc["myext"], doc["specversion"]) == ("e-2", "dev.x", "v", "1.0")

    text = decoded(EventFlags("dev.x", "/cli", data=b"hello there"), "structured")
    assert text.datacontenttype == "text/plain" and text.data == b"hello there"
    raw = json.loads(encode(build_event(EventFlags("t", "s", data=b"\x00\xff"), "structured"),
                            "structured").body)
    assert raw["datacontenttype"] == "application/octet-stream"
    assert base64.b64decode(raw["data_base64"]) == b"\x00\xff" and "data" not in raw
    with pytest.raises(CliError, match="says JSON but the data is not JSON"):
        build_event(EventFlags("t", "s", data=b"not json", content_type="application/json"), "structured")


def test_event_defaults_and_no_data() -> None:
    a, b = (build_event(EventFlags("t", "s"), "binary") for _ in range(2))
    assert a.get_id() != b.get_id() and len(a.get_id()) == 36  # a fresh uuid4 each time
    msg = encode(a, "binary")
    assert msg.body == b"" and "content-type" not in msg.headers
    plain = decoded(EventFlags("t", "s", data=b"[1]", content_type="text/csv"), "binary")
    assert plain.datacontenttype == "text/csv" and plain.data == b"[1]"


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ("My-Ext=x", "lowercase letters and digits only"),
        ("novalue", "expected NAME=VALUE"),
        ("type=x", "set type with --type"),
        ("datacontenttype=x", "set datacontenttype with --content-type"),
        ("time=yesterday", "expected an RFC 3339 time"),
        ("time=2024-05-01T10:00:00", "expected an RFC 3339 time"),
    ],
)
def test_bad_extensions_are_usage_errors(ext: str, message: str) -> None:
    with pytest.raises(CliError, match=re.escape(message)) as e:
        build_event(EventFlags("t", "s", extensions=[ext]), "binary")
    assert e.value.code == 2


def test_time_extension_is_parsed() -> None:
    assert parse_extensions(["time=2024-05-01T10:00:00Z"]) == {
        "time": datetime(2024, 5, 1, 10, tzinfo=UTC)
    }
    msg = encode(build_event(EventFlags("t", "s", extensions=["time=2024-05-01T10:00:00Z"]), "binary"),
                 "binary")
    assert msg.headers["ce-time"] == "2024-05-01T10:00:00Z"


# -- the gateway rewrite -------------------------------------------------------------------------


def test_flint_hosts_go_through_the_gateway_with_their_host_header() -> None:
    gw = "http://127.0.0.1:9999/"
    assert route("http://broker-ingress.localhost:8080/default/b", gw) == (
        "http://127.0.0.1:9999/default/b",
        {"Host": "broker-ingress.localhost:8080"},
    )
    assert route("http://hello.default.localhost/path?q=1", gw) == (
        "http://127.0.0.1:9999/path?q=1",
        {"Host": "hello.default.localhost"},
    )
    assert route("http://broker-ingress.example.com/ns/b", gw)[1] == {"Host": "broker-ingress.example.com"}
    assert route("https://example.com/hook", gw) == ("https://example.com/hook", {})
    assert route("http://127.0.0.1:8080/x", gw) == ("http://127.0.0.1:8080/x", {})
    assert needs_gateway("Hello.Default.LOCALHOST.") and not needs_gateway("localhost")
    with pytest.raises(CliError, match="expected broker:NAME or an http"):
        route("hello.default.localhost", gw)
    with pytest.raises(CliError, match="--gateway 'nope'"):
        route("http://a.localhost/", "nope")


# -- end to end ----------------------------------------------------------------------------------


@dataclass
class Gateway:
    """Stands in for Flint's gateway: records what it receives, 202 for broker default/b."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.path_qs, request.host, dict(request.headers), body))
        if request.path == "/default/b":
            return web.Response(status=202)
        return web.Response(status=404, text="broker default/zzz not found")


@dataclass
class Platform:
    api: str
    gateway: str
    seen: list[tuple[str, str, dict[str, str], bytes]]
    loop: asyncio.AbstractEventLoop


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The real API app on a memory store and a fake gateway, on a loop in a thread (`main()`
    calls asyncio.run)."""
    client_mod._discovery.clear()
    loop = asyncio.new_event_loop()
    gw = Gateway()
    gw_app = web.Application()
    gw_app.router.add_route("*", "/{tail:.*}", gw.handle)

    async def start() -> tuple[list[web.AppRunner], MemoryStore]:
        store = MemoryStore()
        await store.open()
        runners = [web.AppRunner(make_api_app(store)), web.AppRunner(gw_app)]
        for r in runners:
            await r.setup()
            await web.TCPSite(r, "127.0.0.1", 0).start()
        return runners, store

    runners, store = loop.run_until_complete(start())
    api_port, gw_port = (r.addresses[0][1] for r in runners)
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    monkeypatch.setenv("FLINT_API", f"http://127.0.0.1:{api_port}")
    monkeypatch.setenv("FLINT_GATEWAY", f"http://127.0.0.1:{gw_port}")
    yield Platform(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gw_port}", gw.seen, loop)

    async def stop() -> None:
        for r in runners:
            await r.cleanup()
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


def api_get(p: Platform, plural: str, name: str, ns: str = "default") -> Obj:
    async def get() -> Obj:
        async with ApiClient(p.api) as api:
            return await api.request("GET", f"/apis/eventing.knative.dev/v1/namespaces/{ns}/{plural}/{name}")

    return asyncio.run(get())


def test_broker_commands_end_to_end(platform: Platform, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "broker", "list")
    assert (code, err) == (0, "No brokers found.\n")
    code, out, err = run(capsys, "broker", "create", "b", "--dl-sink", "ksvc:dead")
    assert (code, out, err) == (0, "Broker 'b' successfully created in namespace 'default'.\n", "")
    stored = api_get(platform, "brokers", "b")
    assert stored["metadata"]["annotations"] == {"eventing.knative.dev/broker.class": "Flint"}  # defaulted
    assert stored["spec"]["delivery"]["deadLetterSink"]["ref"] == {**KSVC_REF, "name": "dead",
                                                                   "namespace": "default"}

    code, out, err = run(capsys, "broker", "create", "other", "-n", "team", "--class", "Kafka")
    assert code == 0 and 'broker class "Kafka" is not reconciled by Flint' in err  # the server's warning

    code, out, _ = run(capsys, "broker", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "URL", "AGE", "CONDITIONS", "READY", "REASON"]
    assert len(lines) == 2 and re.fullmatch(r"b +\d+s +0 OK / 0", lines[1])  # no status yet: no URL
    code, out, _ = run(capsys, "broker", "list", "-A", "-o", "json")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in json.loads(out)["items"]] == [
        ("default", "b"), ("team", "other")]

    code, out, _ = run(capsys, "broker", "describe", "b")
    assert code == 0 and out.startswith("Name:       b\nNamespace:  default\n")
    assert "Sink:       ksvc:dead" in out
    code, out, _ = run(capsys, "broker", "describe", "b", "-o", "yaml")
    assert "kind: Broker" in out

    code, _, err = run(capsys, "broker", "create", "b")
    assert code == 1 and err.startswith("Error from server (AlreadyExists)")
    code, out, _ = run(capsys, "broker", "delete", "b")
    assert out == "Broker 'b' successfully deleted in namespace 'default'.\n"
    code, _, err = run(capsys, "broker", "describe", "b")
    assert code == 1 and err.startswith("Error from server (NotFound)")


def test_trigger_commands_end_to_end(platform: Platform, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "trigger", "create", "t", "--broker", "b", "--filter", "Type=x",
                       "--sink", "ksvc:hello")
    assert code == 1
    assert err.startswith("Error from server (Invalid): ")
    assert "\n  spec.filter.attributes[Type]: " in err  # the API's field path, as other commands print it

    code, _, err = run(capsys, "trigger", "create", "t", "--sink", "hello")
    assert code == 2 and "--sink 'hello': expected ksvc:NAME, broker:NAME or an http(s):// URL" in err

    code, out, err = run(capsys, "trigger", "create", "t", "--broker", "b", "--filter", "type=dev.x",
                         "--filter", "source=/s", "--sink", "ksvc:hello")
    assert (code, out) == (0, "Trigger 't' successfully created in namespace 'default'.\n"), err
    stored = api_get(platform, "triggers", "t")
    assert stored["spec"]["filter"] == {"attributes": {"type": "dev.x", "source": "/s"}}
    assert stored["metadata"]["labels"] == {"eventing.knative.dev/broker": "b"}

    code, out, _ = run(capsys, "trigger", "list")
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[0] == ["NAME", "BROKER", "SINK", "AGE", "CONDITIONS", "READY", "REASON"]
    assert rows[1][:3] == ["t", "b", "ksvc:hello"]

    code, out, _ = run(capsys, "trigger", "update", "t", "--filter", "source-", "--filter", "subject=a",
                       "--sink", "https://hook.example/x")
    assert (code, out) == (0, "Trigger 't' successfully updated in namespace 'default'.\n")
    stored = api_get(platform, "triggers", "t")
    assert stored["spec"]["filter"] == {"attributes": {"type": "dev.x", "subject": "a"}}
    assert stored["spec"]["subscriber"] == {"uri": "https://hook.example/x"}
    assert stored["metadata"]["generation"] == 2

    code, _, err = run(capsys, "trigger", "update", "t")
    assert code == 2 and "nothing to update" in err
    with pytest.raises(SystemExit) as exited:  # update has no --broker: Knative makes it immutable
        run(capsys, "trigger", "update", "t", "--broker", "c")
    assert exited.value.code == 2 and "unrecognized arguments: --broker c" in capsys.readouterr().err

    code, out, _ = run(capsys, "trigger", "describe", "t")
    assert "Broker:     b" in out and "Filter:\n  subject=a\n  type=dev.x" in out
    assert "Sink:       https://hook.example/x" in out
    code, out, _ = run(capsys, "trigger", "delete", "t")
    assert out == "Trigger 't' successfully deleted in namespace 'default'.\n"
    code, _, err = run(capsys, "trigger", "list")
    assert err == "No triggers found.\n"


def test_event_send_to_a_broker_through_the_gateway(
    platform: Platform, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "broker", "create", "b")[0] == 0
    code, _, err = run(capsys, "event", "send", "--to", "broker:b", "--type", "t", "--source", "s")
    assert code == 1 and "broker 'b' in namespace 'default' has no address yet" in err
    assert platform.seen == []

    async def give_address() -> None:  # what the broker reconciler would write
        async with ApiClient(platform.api) as api:
            b = await api.get(BROKER, "default", "b")
            b["status"] = {"address": {"url": "http://broker-ingress.localhost:8080/default/b"}}
            await api.request("PUT", ApiClient.path(BROKER, "default", "b") + "/status", b)

    asyncio.run(give_address())
    data = tmp_path / "event.json"
    data.write_bytes(b'{"msg": "hi"}\n')
    code, out, err = run(capsys, "event", "send", "--to", "broker:b", "--type", "dev.x", "--source", "/cli",
                         "--id", "e-9", "--data-file", str(data), "--ext", "myext=1")
    assert (code, out) == (0, "202 Accepted\n"), err
    assert err == (f"Sending event to http://broker-ingress.localhost:8080/default/b via "
                   f"{platform.gateway}/default/b\n")
    path, host, headers, body = platform.seen[-1]
    assert (path, host, body) == ("/default/b", "broker-ingress.localhost:8080", b'{"msg": "hi"}\n')
    assert headers["ce-id"] == "e-9" and headers["ce-myext"] == "1"
    assert headers["Content-Type"] == "application/json"

    code, out, _ = run(capsys, "event", "send", "--to", "http://broker-ingress.localhost:8080/default/zzz",
                       "--type", "t", "--source", "s", "--data", "plain", "--mode", "structured")
    assert (code, out) == (1, "404 Not Found\nbroker default/zzz not found\n")
    _, _, headers, body = platform.seen[-1]
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert json.loads(body)["data"] == "plain"

    code, _, err = run(capsys, "event", "send", "--to", "b", "--type", "t", "--source", "s")
    assert code == 2 and "expected broker:NAME or an http(s):// URL" in err


def test_event_send_says_when_the_gateway_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    gateway = f"http://127.0.0.1:{port}"
    code, out, err = run(capsys, "event", "send", "--to", "http://hello.default.localhost/", "--type", "t",
                         "--source", "s", "--gateway", gateway)
    assert (code, out) == (1, "")
    assert err.endswith(f"Error: cannot reach the Flint gateway at {gateway}: is 'flint up' running?\n")


# -- dead letters ----------------------------------------------------------------------------------


def letter(id_: int, at: float, **over: Any) -> Obj:
    """A dead letter as the dispatcher's `GET /dead-letters/{ns}/{trigger}` lists it."""
    return {
        "id": id_,
        "offset": 40 + id_,
        "reason": "exhausted",
        "status": 503,
        "detail": "HTTP 503 after 4 attempts",
        "at": at,
        "event": {"specversion": "1.0", "id": f"e-{id_}", "type": "dev.x", "source": "/cli",
                  "data": {"n": id_}},
        **over,
    }


def test_dead_letter_rows() -> None:
    now = NOW.timestamp()
    long_detail = "connection reset\n  by peer " + "x" * 80
    rows = [
        dead_letter_row(letter(1, now - 125), now),
        dead_letter_row(letter(12, now - 3 * 86400, status=None, reason="refused", detail=long_detail,
                               event={"id": "only-id"}), now),
        dead_letter_row({"id": 3, "at": "yesterday", "event": "not an object"}, now),
    ]
    assert rows[0] == ["1", "e-1", "dev.x", "/cli", "exhausted", "503", "2m5s", "HTTP 503 after 4 attempts"]
    assert rows[1][:7] == ["12", "only-id", "", "", "refused", "", "3d"]
    assert rows[1][7] == truncate(long_detail) and len(rows[1][7]) == 60
    assert rows[1][7].startswith("connection reset by peer xxx") and rows[1][7].endswith("x...")
    assert rows[2] == ["3", "", "", "", "", "", "", ""]
    assert truncate("a\tb  c") == "a b c" and truncate("abcdef", 5) == "ab..."
    text = dead_letters_table([letter(1, now - 125), letter(12, now - 59, detail="")], now)
    assert text.splitlines() == [
        "ID   EVENT ID   TYPE    SOURCE   REASON      STATUS   AGE    DETAIL",
        "1    e-1        dev.x   /cli     exhausted   503      2m5s   HTTP 503 after 4 attempts",
        "12   e-12       dev.x   /cli     exhausted   503      59s",
    ]


@dataclass
class FakeDispatcher:
    """Stands in for the dispatcher's admin port: the dead letters of the triggers it runs, and
    every request it received as (method, path with query)."""

    url: str
    letters: dict[tuple[str, str], list[Obj]]
    seen: list[tuple[str, str]]


@pytest.fixture
def dispatcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDispatcher]:
    letters: dict[tuple[str, str], list[Obj]] = {}
    seen: list[tuple[str, str]] = []

    def runs(request: web.Request) -> list[Obj]:
        seen.append((request.method, request.path_qs))
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in letters:  # the real dispatcher's answer
            raise web.HTTPNotFound(text=f"the dispatcher runs no trigger {key[0]}/{key[1]}")
        return letters[key]

    async def dead_letters(request: web.Request) -> web.Response:
        return web.json_response(runs(request))

    async def redeliver(request: web.Request) -> web.Response:
        found = runs(request)
        raw = request.query.get("ids")
        ids = {int(x) for x in raw.split(",")} if raw else {d["id"] for d in found}
        return web.json_response({"requeued": sum(1 for d in found if d["id"] in ids)})

    app = web.Application()
    app.router.add_get("/dead-letters/{namespace}/{name}", dead_letters)
    app.router.add_post("/redeliver/{namespace}/{name}", redeliver)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()

    loop.run_until_complete(start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setenv("FLINT_DISPATCHER", url)
    yield FakeDispatcher(url, letters, seen)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def test_trigger_dead_letters_table(dispatcher: FakeDispatcher, capsys: pytest.CaptureFixture[str]) -> None:
    at = time.time() - (3 * 3600 + 20 * 60 + 5)  # 3h20m ago: the same AGE for the next minute
    dispatcher.letters[("team", "t")] = [
        letter(4, at, detail="Service Unavailable: " + "the upstream is overloaded, " * 5),
        letter(7, at, status=None, reason="refused", detail="not a CloudEvent",
               event={"id": "x-9", "type": "dev.y", "source": "urn:s"}),
    ]
    code, out, err = run(capsys, "trigger", "dead-letters", "t", "-n", "team")
    assert (code, err) == (0, "")
    assert dispatcher.seen == [("GET", "/dead-letters/team/t")]
    lines = out.splitlines()
    assert lines[0] == "ID   EVENT ID   TYPE    SOURCE   REASON      STATUS   AGE     DETAIL"
    assert lines[1] == ("4    e-4        dev.x   /cli     exhausted   503      3h20m   "
                        "Service Unavailable: the upstream is overloaded, the upst...")
    assert lines[2] == "7    x-9        dev.y   urn:s    refused              3h20m   not a CloudEvent"
    assert len(lines) == 3


def test_trigger_dead_letters_json_yaml_and_empty(
    dispatcher: FakeDispatcher, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = [letter(1, 1714564800.25), letter(2, 1714564801.0, detail="x" * 100)]
    dispatcher.letters[("default", "t")] = letters
    code, out, err = run(capsys, "trigger", "dead-letters", "t", "-o", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == letters  # the dispatcher's documents, whole
    code, out, _ = run(capsys, "trigger", "dead-letters", "t", "-o", "yaml")
    assert code == 0 and out.startswith("- id: 1\n  offset: 41\n") and "x" * 100 in out

    dispatcher.letters[("default", "t")] = []
    assert run(capsys, "trigger", "dead-letters", "t") == (0, "", "No dead letters.\n")
    assert run(capsys, "trigger", "dead-letters", "t", "-o", "json") == (0, "[]\n", "")


def test_trigger_redeliver(dispatcher: FakeDispatcher, capsys: pytest.CaptureFixture[str]) -> None:
    dispatcher.letters[("default", "t")] = [letter(i, 0.0) for i in (1, 2, 5)]
    code, out, err = run(capsys, "trigger", "redeliver", "t", "--id", "2", "--id", "5", "--id", "9")
    assert (code, out, err) == (0, "2 dead letter(s) queued for redelivery\n", "")
    assert dispatcher.seen[-1] == ("POST", "/redeliver/default/t?ids=2,5,9")
    code, out, _ = run(capsys, "trigger", "redeliver", "t", "--dispatcher", dispatcher.url + "/")
    assert (code, out) == (0, "3 dead letter(s) queued for redelivery\n")
    assert dispatcher.seen[-1] == ("POST", "/redeliver/default/t")  # no ids: all of them
    with pytest.raises(SystemExit) as exited:
        run(capsys, "trigger", "redeliver", "t", "--id", "two")
    assert exited.value.code == 2 and "invalid int value: 'two'" in capsys.readouterr().err


def test_dead_letters_of_a_trigger_the_dispatcher_does_not_run(
    dispatcher: FakeDispatcher, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb in ("dead-letters", "redeliver"):
        assert run(capsys, "trigger", verb, "nope", "-n", "team") == (
            1, "", "Error: the dispatcher runs no trigger team/nope\n")
    assert [path for _, path in dispatcher.seen] == ["/dead-letters/team/nope", "/redeliver/team/nope"]


def test_dead_letters_when_the_dispatcher_is_down(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("FLINT_DISPATCHER", "http://127.0.0.1:1")  # the flag wins over the env
    for verb in ("dead-letters", "redeliver"):
        assert run(capsys, "trigger", verb, "t", "--dispatcher", url) == (
            1, "", f"Error: cannot reach the Flint dispatcher at {url}: is 'flint up' running?\n")
    code, _, err = run(capsys, "trigger", "dead-letters", "t", "--dispatcher", "127.0.0.1:8083")
    assert code == 2 and "--dispatcher '127.0.0.1:8083': expected an http(s):// URL" in err
