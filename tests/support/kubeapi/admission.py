"""Admission webhooks as kube-apiserver calls them: the Mutating- and ValidatingWebhookConfigurations
the fake holds, called over HTTPS with `admission.k8s.io/v1` AdmissionReviews on create and update.

A write of a main resource (not `status` or `scale`) whose group, version, resource and operation
a webhook's `rules` match goes: mutating webhooks (configurations by name, webhooks in order; each
returned JSONPatch applied with the `jsonpatch` library), the store's own checks (schema,
pruning, names: a dry run), validating webhooks shown the object as it would be stored, then the
write. A webhook is reached at `clientConfig.url`, or for `clientConfig.service` at the address
the test maps `<namespace>/<name>` to (`KubeApiFake.webhook_addresses`, "127.0.0.1:PORT"; unmapped,
the call fails with `service "<name>" not found`, or `no endpoints available for service "<name>"`
when that Service object exists), with its certificate verified against `caBundle` (the system's
CAs without one) for the host name `<name>.<namespace>.svc`. An unreachable or misbehaving
webhook fails the request (`failurePolicy: Fail`, the default: 500 `Internal error occurred:
failed calling webhook ...`) or is skipped (`Ignore`); a denial is its `status` with
kube-apiserver's prefix (`admission webhook "<name>" denied the request: ...`, code 400 at
least); warnings become `Warning` headers.

Not copied: `namespaceSelector`, `objectSelector`, `matchConditions`, `matchPolicy: Equivalent`
(versions must match exactly), reinvocation, parallel validating calls, CRD schema defaulting
before the mutating webhooks (it runs after them), and any check of the configurations themselves.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonpatch
import orjson

from .errors import ApiError
from .resources import Resource
from .store import Store

JSON = dict[str, Any]
GROUP = "admissionregistration.k8s.io"
MUTATING = "mutatingwebhookconfigurations"
VALIDATING = "validatingwebhookconfigurations"


class WebhookFailed(Exception):
    """A webhook could not be called or answered nonsense (what `failurePolicy` decides about)."""


@dataclass(frozen=True)
class Write:
    """One write as admission sees it."""

    res: Resource
    operation: str  # CREATE, UPDATE
    namespace: str
    name: str
    obj: JSON
    old: JSON | None = None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def rule_matches(rule: JSON, write: Write) -> bool:
    """A RuleWithOperations: `*` wildcards; resource `*` is every main resource (not subresources)."""
    res = write.res

    def has(key: str, value: str) -> bool:
        listed = _listed(rule.get(key))
        return "*" in listed or value in listed

    scope = rule.get("scope") or "*"
    return (
        has("operations", write.operation)
        and has("apiGroups", res.group)
        and has("apiVersions", res.version)
        and (has("resources", res.plural) or "*/*" in _listed(rule.get("resources")))
        and (scope == "*" or scope == ("Namespaced" if res.namespaced else "Cluster"))
    )


class Admission:
    """The webhooks of the configurations in `store`, called on the writes the server hands it."""

    def __init__(self, store: Store, addresses: dict[str, str]) -> None:
        self.store = store
        self.addresses = addresses
        """`<namespace>/<service>` → `host:port` where that Service's webhook listens."""
        self.calls = 0
        """Webhook calls made so far (answered or not)."""

    def _webhooks(self, plural: str, write: Write) -> list[JSON]:
        if write.res.group == GROUP:  # kube-apiserver never calls webhooks about their own configurations
            return []
        res = self.store.resource_of(GROUP, plural)
        if res is None:
            return []
        configurations, _ = self.store.list_objects(res, None, lambda _: True)
        out: list[JSON] = []
        for configuration in sorted(configurations, key=lambda c: c["metadata"]["name"]):
            for webhook in _listed(configuration.get("webhooks")):
                if isinstance(webhook, dict) and any(
                        rule_matches(r, write) for r in _listed(webhook.get("rules")) if isinstance(r, dict)):
                    out.append(webhook)
        return out

    def wanted(self, write: Write) -> bool:
        """Whether any webhook is interested (else the write goes to the store as it is)."""
        return bool(self._webhooks(MUTATING, write) or self._webhooks(VALIDATING, write))

    async def mutate(self, write: Write) -> tuple[JSON, list[str]]:
        """The object once every matching mutating webhook patched it, and their warnings."""
        obj, warnings = write.obj, []
        for webhook in self._webhooks(MUTATING, write):
            response = await self._call(webhook, Write(write.res, write.operation, write.namespace,
                                                       write.name, obj, write.old))
            if response is None:
                continue
            warnings += _warnings(response)
            if response.get("patch"):
                obj = self._patched(webhook, obj, response)
        return obj, warnings

    async def validate(self, write: Write) -> list[str]:
        """The warnings of every matching validating webhook; a denial raises it."""
        warnings: list[str] = []
        for webhook in self._webhooks(VALIDATING, write):
            response = await self._call(webhook, write)
            if response is not None:
                warnings += _warnings(response)
        return warnings

    # -- one call ------------------------------------------------------------------------------

    async def _call(self, webhook: JSON, write: Write) -> JSON | None:
        """The webhook's AdmissionResponse when it allowed the write; None when it failed and its
        failurePolicy is Ignore; raises the denial, or the failure under Fail."""
        name = str(webhook.get("name") or "")
        try:
            response = await self._post(webhook, write)
        except WebhookFailed as e:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return None
            message = f'failed calling webhook "{name}": {e}'
            raise ApiError(500, "InternalError", f"Internal error occurred: {message}",
                           {"causes": [{"message": message}]}) from None
        if response.get("allowed") is not True:
            raise _denied(name, response.get("status"))
        return response

    async def _post(self, webhook: JSON, write: Write) -> JSON:
        self.calls += 1
        config = webhook.get("clientConfig") or {}
        timeout = float(webhook.get("timeoutSeconds") or 10)
        query = f"?timeout={timeout:g}s"
        shown, target, hostname = self._endpoint(config)
        if target is None:
            raise WebhookFailed(f'failed to call webhook: Post "{shown}{query}": {self._unserved(config)}')
        uid = str(uuid.uuid4())
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": _request(uid, write)}
        try:
            context = await asyncio.to_thread(_context, config.get("caBundle"))  # system CAs: files
        except (ValueError, ssl.SSLError) as e:
            raise WebhookFailed(f"could not get REST client: unable to load root certificates: {e}") from None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if hostname is not None:
            headers["Host"] = shown.split("/")[2]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                    http.post(target + query, data=orjson.dumps(review), ssl=context,
                              server_hostname=hostname, headers=headers) as r:
                raw, status = await r.read(), r.status
        except TimeoutError:
            raise WebhookFailed(
                f'failed to call webhook: Post "{shown}{query}": context deadline exceeded') from None
        except (aiohttp.ClientError, OSError) as e:
            raise WebhookFailed(f'failed to call webhook: Post "{shown}{query}": {e}') from None
        if status != 200:
            body = raw[:200].decode(errors="replace").strip()
            raise WebhookFailed(f'failed to call webhook: an error on the server ("{body}") has prevented '
                                f"the request from succeeding (status {status})")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise WebhookFailed(f"received invalid webhook response: {e}") from None
        response = answer.get("response") if isinstance(answer, dict) else None
        if not isinstance(response, dict):
            raise WebhookFailed("received invalid webhook response: the AdmissionReview has no response")
        if response.get("uid") != uid:
            raise WebhookFailed(f'expected response.uid="{uid}", got "{response.get("uid")}"')
        return response

    def _unserved(self, config: JSON) -> str:
        """Why a `clientConfig.service` without a mapped address cannot be called: kube-apiserver's
        service resolver finds no Service by that name, or (the Service exists) nothing behind it
        (the endpoint resolver's words; the fake assigns no cluster IPs to dial)."""
        service = config.get("service") or {}
        namespace, name = str(service.get("namespace", "")), str(service.get("name", ""))
        res = self.store.resource_of("", "services")
        if res is not None and namespace and name:
            try:
                self.store.get(res, namespace, name)
                return f'no endpoints available for service "{name}"'
            except ApiError as e:
                if e.code != 404:
                    raise
        return f'service "{name}" not found'

    def _endpoint(self, config: JSON) -> tuple[str, str | None, str | None]:
        """(the URL as messages show it, the URL posted to (None: the Service has no address),
        the host name the certificate must carry: None for the URL's own)."""
        if config.get("url"):
            return str(config["url"]), str(config["url"]), None
        service = config.get("service") or {}
        namespace, name = service.get("namespace", ""), service.get("name", "")
        port = int(service.get("port") or 443)
        host = f"{name}.{namespace}.svc"
        path = service.get("path") or ""
        shown = f"https://{host}:{port}{path}"
        address = self.addresses.get(f"{namespace}/{name}")
        return shown, None if address is None else f"https://{address}{path}", host

    @staticmethod
    def _patched(webhook: JSON, obj: JSON, response: JSON) -> JSON:
        name = webhook.get("name")
        if response.get("patchType") != "JSONPatch":
            raise ApiError(500, "InternalError", f'Internal error occurred: failed calling webhook "{name}": '
                                                 f'unsupported patch type "{response.get("patchType")}"')
        try:
            ops = orjson.loads(base64.b64decode(response["patch"], validate=True))
            out = jsonpatch.apply_patch(obj, ops)
        except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise ApiError(500, "InternalError",
                           f'Internal error occurred: failed calling webhook "{name}": {e}') from None
        if not isinstance(out, dict):
            raise ApiError(500, "InternalError",
                           f'Internal error occurred: webhook "{name}" patched the object into a non-object')
        return out


def _request(uid: str, write: Write) -> JSON:
    res = write.res
    kind = {"group": res.group, "version": res.version, "kind": res.kind}
    resource = {"group": res.group, "version": res.version, "resource": res.plural}
    obj = copy.deepcopy(write.obj)
    obj["apiVersion"], obj["kind"] = res.api_version, res.kind
    options = "CreateOptions" if write.operation == "CREATE" else "UpdateOptions"
    return {
        "uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "name": write.name, **({"namespace": write.namespace} if res.namespaced else {}),
        "operation": write.operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": obj, "oldObject": write.old, "dryRun": False,
        "options": {"kind": options, "apiVersion": "meta.k8s.io/v1"},
    }


def _context(ca_bundle: Any) -> ssl.SSLContext:
    if not ca_bundle:
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=base64.b64decode(ca_bundle, validate=True).decode("ascii"))


def _warnings(response: JSON) -> list[str]:
    return [str(w) for w in _listed(response.get("warnings"))]


def _denied(name: str, status: Any) -> ApiError:
    """kube-apiserver's `ToStatusErr`: the webhook's Status, prefixed, code 400 at least."""
    result: JSON = dict(status) if isinstance(status, dict) else {}
    denied_by = f'admission webhook "{name}" denied the request'
    if result.get("message"):
        message = f"{denied_by}: {result['message']}"
    elif result.get("reason"):
        message = f"{denied_by}: {result['reason']}"
    else:
        message = f"{denied_by} without explanation"
    code = result.get("code")
    code = code if isinstance(code, int) and code >= 400 else 400
    details = result.get("details") if isinstance(result.get("details"), dict) else None
    return ApiError(code, str(result.get("reason") or ""), message, details)


class AdmittedWrites:
    """The store's create and update with the webhooks in between (server.py calls these)."""

    def __init__(self, store: Store, admission: Admission) -> None:
        self.store = store
        self.admission = admission

    async def create(self, res: Resource, namespace: str, body: JSON,
                     field_validation: str | None) -> tuple[JSON, list[str]]:
        body = copy.deepcopy(body)
        if not isinstance(body.get("metadata"), dict):
            body["metadata"] = {}
        if res.namespaced and not body["metadata"].get("namespace"):
            body["metadata"]["namespace"] = namespace  # the API server's, before admission
        write = Write(res, "CREATE", namespace, str(body["metadata"].get("name") or ""), body)
        if not self.admission.wanted(write):
            return self.store.create(res, namespace, body, field_validation)
        mutated, warnings = await self.admission.mutate(write)
        would_be, _ = self.store.create(res, namespace, mutated, field_validation, dry_run=True)
        name = would_be["metadata"]["name"]  # generateName's pick, kept for the real write
        warnings += await self.admission.validate(Write(res, "CREATE", namespace, name, would_be))
        if not isinstance(mutated.get("metadata"), dict):
            mutated["metadata"] = {}
        mutated["metadata"]["name"] = name
        obj, more = self.store.create(res, namespace, mutated, field_validation)
        return obj, warnings + more

    async def update(self, res: Resource, namespace: str, name: str, body: JSON, subresource: str | None,
                     field_validation: str | None, require_rv: bool = True) -> tuple[JSON, list[str]]:
        if subresource is not None:  # webhooks are asked about `status` only by rules naming it
            return self.store.update(res, namespace, name, body, subresource, field_validation, require_rv)
        current = self.store.get(res, namespace, name)
        body = copy.deepcopy(body)
        meta = body.get("metadata")
        if res.namespaced and isinstance(meta, dict) and not meta.get("namespace"):
            meta["namespace"] = namespace
        write = Write(res, "UPDATE", namespace, name, body, current)
        if not self.admission.wanted(write):
            return self.store.update(res, namespace, name, body, None, field_validation, require_rv)
        mutated, warnings = await self.admission.mutate(write)
        would_be, _ = self.store.update(res, namespace, name, mutated, None, field_validation, require_rv,
                                        dry_run=True)
        warnings += await self.admission.validate(Write(res, "UPDATE", namespace, name, would_be, current))
        obj, more = self.store.update(res, namespace, name, mutated, None, field_validation, require_rv)
        return obj, warnings + more
