"""The contract fake of the Kubernetes API: what Flint's Kubernetes engine uses, over real HTTP.

`KubeApiFake` serves, on 127.0.0.1 and an ephemeral port (aiohttp), the subset of the API that
Flint's Kubernetes engine drives through kubernetes-asyncio. It shares no code with Flint's own
API server or stores (`controller.apiserver*`, `controller.store*`): it exists to catch where
those diverge from a real API server. `tests/kubernetes/test_kubeapi_contract.py` runs the same
checks against it and, with `FLINT_KUBECONFIG` set, against a real cluster (`session.py` holds
the switch; `python -m support.kubeapi --kubeconfig PATH`, run in tests/, serves the fake alone
with a kubeconfig for it, to try that path without a cluster).

What it copies from a real API server:

- discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}` (with the
  `status` and `scale` subresources and shortNames), `/version`;
- one global resourceVersion (etcd's revision), strings on the wire; lists carry it in their
  metadata; a no-op update writes nothing (same resourceVersion, no event);
- watch (`watch=true`, `resourceVersion`, `timeoutSeconds`, `allowWatchBookmarks`): without a
  resourceVersion (or "0") synthetic ADDEDs of what exists, then the changes; from a
  resourceVersion every later change once, in order; BOOKMARKs (every `bookmark_interval`, 0.5 s,
  where a real server sends one a minute and one ~2 s before `timeoutSeconds` ends); a
  selector-filtered watch sees an object leave its selector as DELETED and enter it as ADDED; a
  resourceVersion older than the last compaction (`KubeApiFake.compact()`) is answered 200 with
  one ERROR event carrying a `Status` 410 `Expired` ("too old resource version"); for tests,
  `drop_watches()` cuts every open watch's connection mid-stream, `hang_watches()` makes every
  open watch go silent (connected, sending nothing, not even BOOKMARKs), and `open_watches` /
  `watch_requests` count the watches open now / served so far;
- create answers 201 (kubernetes-asyncio's create methods return None on a 200), with
  `generateName`, uid, creationTimestamp, generation 1 on kinds that keep it (custom resources,
  CRDs, Deployments, Pods); the namespace must exist (404) and not be terminating (403); a
  create carrying a resourceVersion is etcd's 500 "resourceVersion should not be set on objects
  to be created";
- update: 409 `Conflict` for a stale resourceVersion; custom resources and CRDs refuse a PUT
  without one (422), built-in kinds take it unconditionally; uid, creationTimestamp, generation,
  deletionTimestamp cannot be changed by a write; `generation` + 1 when anything outside
  metadata (and status, for kinds with the status subresource) changes;
- `Status` errors as the API server words them: 404 NotFound (`configmaps "x" not found`,
  details name/group/kind=resource), 409 AlreadyExists / Conflict, 422 Invalid (details with
  kind, causes with reason/message/field), 400 BadRequest, 415 UnsupportedMediaType;
- the status subresource (`/status` writes only status, main writes keep the old status, create
  drops it) and the scale subresource (autoscaling/v1 Scale of Deployments and of CRDs declaring
  one: get, PUT, patch; spec.replicas bumps generation);
- patch types: `application/merge-patch+json` (RFC 7386), `application/json-patch+json`
  (RFC 6902, all six ops; a failed `test` is 422), `application/strategic-merge-patch+json` on
  built-in kinds only (a custom resource answers 415, as a real server does), and
  `application/apply-patch+yaml` (needs `fieldManager`, 400 without; creates a missing object);
- label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
  (`metadata.name`, `metadata.namespace`; any other field is a 400);
- deletion: finalizers hold an object (deletionTimestamp set, generation + 1, 200 with the
  object), the write removing the last finalizer deletes it, no finalizer may be added meanwhile
  (422); delete preconditions (uid, resourceVersion: 409); a fully deleted custom resource or Pod
  is answered with the object, other kinds with a `Status` Success; owner-reference garbage
  collection: background (dependents of a deleted owner go once no owner of theirs is left; a
  dangling reference next to a live owner is removed; the same holds for an object created
  referring to owners already gone), orphan (the references are removed) and foreground (the
  owner keeps a `foregroundDeletion` finalizer until its dependents are gone);
  a namespace terminates (phase Terminating), deletes its objects and goes when they are gone;
  Pods: one bound to a node (`spec.nodeName`, set through the `pods/binding` subresource, 409 when
  already bound) and not terminal is deleted gracefully: it stays with deletionTimestamp = now +
  grace and deletionGracePeriodSeconds (the DELETE's gracePeriodSeconds, else the Pod's
  terminationGracePeriodSeconds, 30; a later DELETE may only shorten it) until a DELETE with
  gracePeriodSeconds=0, which its kubelet sends once the containers stopped; an unbound or
  terminal Pod goes at once;
- CRDs (apiextensions.k8s.io/v1): creating one serves each served version of its kind at once
  (status Established and NamesAccepted), with its shortNames, scope, status and scale
  subresources; deleting it stops serving and drops its objects; the openAPIV3Schema is applied
  on every write: `type` (a 422 `FieldValueTypeInvalid` worded like the real one), `required`,
  `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`, `minItems`/`maxItems`,
  `nullable` (null values of non-nullable fields are pruned), `default`, `additionalProperties`,
  `x-kubernetes-int-or-string`, and pruning of unknown fields unless
  `x-kubernetes-preserve-unknown-fields: true`; `fieldValidation=Strict` refuses an unknown
  field (400 "strict decoding error"), the default (Warn) prunes it with a `Warning` header;
- Leases, Deployments, Pods, Services, EndpointSlices, HorizontalPodAutoscalers (autoscaling/v2),
  ConfigMaps, Secrets, ServiceAccounts, Namespaces and admissionregistration.k8s.io/v1
  Mutating- and ValidatingWebhookConfigurations as generic objects;
- admission webhooks (`admission.py`): on a create or update of a main resource their rules
  match, the mutating webhooks are called over HTTPS with an `admission.k8s.io/v1`
  AdmissionReview and their JSONPatch applied, then the store's checks run (schema, names), then
  the validating webhooks see the object as it would be stored; `caBundle` and the Service's name
  `<svc>.<ns>.svc` are verified (`clientConfig.service` is reached at the address the test maps
  it to: `KubeApiFake(webhook_addresses={"flint-system/flint-webhook": "127.0.0.1:PORT"})`, or
  `clientConfig.url`); failurePolicy Fail (500 `Internal error occurred: failed calling webhook
  ...`) or Ignore; a denial is `admission webhook "<name>" denied the request: ...` with the
  webhook's code and details; warnings become `Warning` headers;
- service-account tokens (`tokens.py`): TokenRequest (`POST .../serviceaccounts/{name}/token`,
  201; `spec.audiences`, default the API server's audience `https://kubernetes.default.svc.cluster.local`;
  `spec.expirationSeconds`, default 3600, under 600 a 422; the ServiceAccount must exist) answers
  `status.token` and `status.expirationTimestamp`; TokenReview (`POST
  /apis/authentication.k8s.io/v1/tokenreviews`, 201) authenticates a token the fake issued, not
  expired by the fake's clock (`advance_clock`), whose ServiceAccount still exists with the same
  uid and whose audiences meet the review's: `status.user` (`system:serviceaccount:<ns>:<name>`,
  the account's uid, its groups), `status.audiences` the intersection; else no `authenticated`
  (false is omitted on the wire) and `status.error`.

What it does not (simplified or missing):

- no controllers: no Pods from a Deployment, no status written, no EndpointSlices, no kubelet
  (tests/support/kubelet is a stand-in for those, a client of the fake like any other);
  built-in kinds are not validated (a Deployment without a selector is accepted; only
  `spec.replicas` defaults to 1); Secrets' `stringData` is not folded into `data`;
- server-side apply keeps no managedFields and no field ownership: the applied configuration is
  merged into the live object (maps by key, lists of maps by `name`, other lists replaced), so
  there are no apply conflicts (`force` is ignored) and a field a manager stops applying stays;
  strategic merge patch is a JSON merge patch (no `$patch` directives, no list merge keys);
- watches have no random 30–60 min server timeout, no `sendInitialEvents` / watch-list, and a
  resourceVersion newer than the store is not refused; lists ignore `limit`/`continue` and
  always return the latest state (`resourceVersionMatch=NotOlderThan` only refuses a version
  newer than the store: 504 `Timeout`, cause `ResourceVersionTooLarge`, at once where a real
  server first waits ~3 s; `Exact` is not honoured); items keep apiVersion and kind;
- CRDs: no conversion between versions (every version shows the same stored object), no CEL
  (`x-kubernetes-validations`), `format`, `multipleOf`, `uniqueItems`, list-type or
  embedded-resource rules, no metadata validation, no structural-schema check of the CRD itself;
  Cluster-scoped custom resources are served but untested;
- foreground deletion waits for every dependent, not only those with `blockOwnerDeletion`, and
  adds its `foregroundDeletion` finalizer only when there are dependents (a real server adds it
  always and its garbage collector removes it);
  garbage collection runs on the next loop iteration, not in a separate controller;
- no authentication of its own clients, no authorization, no built-in admission plugins (webhooks
  without namespace/object selectors, matchConditions or reinvocation), no dryRun, Tables or
  protobuf; tokens are HS256 with the fake's key (a real server's are RS256, verifiable by its
  OIDC discovery), not bound to Pods or Secrets (`boundObjectRef` is ignored), and there is no
  maximum expiration (`--service-account-max-token-expiration`) nor legacy Secret-based tokens;
  `gracePeriodSeconds` matters only for Pods (other kinds go at once, as most do).
"""

from __future__ import annotations

from .server import KubeApiFake

__all__ = ["KubeApiFake"]
