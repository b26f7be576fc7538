"""A test stand-in for kube-controller-manager's Deployment and EndpointSlice controllers, the
scheduler and a kubelet, so that the Kubernetes engine's tests see Pods run and endpoints appear.

`Kubelet(api, namespace=..., settings=KubeletSettings(...))` (`async with`, or `start`/`stop`)
works through a kubernetes-asyncio ApiClient only: list + watch of Deployments, Pods, Services and
EndpointSlices (`client.Informer`), writes over HTTP; it never touches the contract fake's
internals (tests/support/kubeapi), so it could run against any API server (there, of course, the
real controllers would fight it). Modules: `deployments.py` (Deployments → Pods, status),
`pods.py` (binding, one `PodWorker` per Pod, Pod status, deletion), `containers.py` (a container
as a local process), `probes.py`, `endpointslices.py`, `standin.py` (the loops), `objects.py`
(pure readings), `addresses.py` (pod IPs), `client.py` (JSON calls and the informer),
`settings.py`.

What it copies:

- Deployments: `spec.replicas` Pods (the scale subresource writes it) named
  `<deployment>-<pod-template-hash>-<5 chars>`, labelled with the template's labels and
  `pod-template-hash`, the template's annotations, an ownerReference to the Deployment
  (controller, blockOwnerDeletion); a new template rolls with maxSurge 25% (rounded up, at least 1)
  and maxUnavailable 0: new Pods first, an old one deleted only while the ready Pods stay at least
  `spec.replicas`; `strategy.type: Recreate` deletes every old Pod first; terminating and terminal
  Pods are not counted (controller.IsPodActive); scale-down deletes unscheduled, then not running,
  then not ready, then the newest Pods first; status `observedGeneration`, `replicas`,
  `updatedReplicas`, `readyReplicas`, `availableReplicas`, `unavailableReplicas`, conditions
  Available (MinimumReplicasAvailable / MinimumReplicasUnavailable) and Progressing
  (ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded after
  `progressDeadlineSeconds` without a change in the counts), worded as the controller words them;
- the scheduler: every unbound Pod is bound to the one node through `pods/binding`;
- the kubelet: a Pod IP of its own per Pod (127.0.1.N, the lowest free; hostIP 127.0.0.1); each
  container runs as a process in its own process group: image `flint.test/apps/<name>` is the
  folder tests/apps/<name>, its entrypoint the Procfile's `web:` line run by `/bin/sh -c exec …`,
  `command` replaces it and `args` are passed (Kubernetes' rule), cwd the folder; env: PATH and
  HOME, the container's `env` (values, and `valueFrom.fieldRef` for metadata.name / namespace /
  uid, status.podIP / hostIP, spec.nodeName), `PORT` (the first containerPort, 8080 without one),
  `POD_IP`, `POD_NAME`, `POD_NAMESPACE`; an image that is not an app folder waits in
  `ErrImagePull` (`failed to pull and unpack image "…": … not found`) then `ImagePullBackOff`
  (`Back-off pulling image "…"`), retried; a process that exits is restarted by `restartPolicy`
  (Always, OnFailure, Never) after an exponential back-off, waiting in `CrashLoopBackOff`
  (`back-off 10s restarting failed container=… pod=…_…(uid)`) with `lastState.terminated`
  (exitCode, reason Error or Completed, 128 + n for signal n) and `restartCount` growing; Pod
  status `phase` (Pending, Running, Succeeded, Failed), podIP(s), hostIP(s), startTime, conditions
  PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled (reason
  ContainersNotReady when not ready), containerStatuses (ready, started, restartCount, state,
  lastState, image, imageID, containerID); readiness and liveness probes (httpGet with a port
  number or name and httpHeaders, tcpSocket, exec; initialDelaySeconds, periodSeconds,
  timeoutSeconds, failureThreshold, successThreshold); without a readinessProbe a container is
  ready once its process runs (before it may listen, as with a real kubelet); a failed liveness
  probe restarts the container; a deleted Pod (deletionTimestamp) runs each container's
  `lifecycle.preStop` (exec, `sleep` action, httpGet) within its grace
  (deletionGracePeriodSeconds), then SIGTERMs the process group and SIGKILLs it at the end of the
  grace, writes the terminal phase and deletes the Pod with gracePeriodSeconds=0 and a uid
  precondition; a Pod gone from the API without that (force-deleted) has its containers stopped;
- EndpointSlices (discovery.k8s.io/v1): for every Service with a `spec.selector`, a slice
  (generateName `<service>-`) labelled with the Service's labels, `kubernetes.io/service-name`
  and `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, an
  ownerReference to the Service, addressType IPv4, ports from the Service's (name, targetPort
  resolved, by name against the Pods' containerPorts, protocol, appProtocol), an endpoint per
  selected non-terminal Pod with a podIP: conditions ready (Pod Ready and not terminating),
  serving (Pod Ready, terminating or not), terminating, targetRef, nodeName; a Service that
  loses its selector loses its managed slices (the garbage collector takes a deleted Service's).

What it simplifies:

- no ReplicaSets: Pods are owned by their Deployment directly (the Deployment's garbage
  collection then deletes them) and found by that ownerReference, not by `spec.selector` (no
  adoption or release of Pods); the template hash is a SHA-256 in the API machinery's safe
  alphabet, not FNV-32a with collisionCount; no revisionHistoryLimit, rollback, `paused`,
  `minReadySeconds` (available = ready), and `maxSurge`/`maxUnavailable` are always 25% / 0,
  whatever the spec says; old Pods that are not ready are deleted at once, beyond maxUnavailable;
  the progress deadline's clock is kept in memory (a restarted stand-in starts it again);
- one node and no Node object; nodeSelector, affinity, taints, resources and priorities are
  ignored (qosClass is always BestEffort);
- containers are local processes of this machine: no image pull (imageID is a fixed fake
  digest), no network namespace (a Pod's containers share its IP but so could anyone; ports
  collide as in a Pod), no volumes, init or sidecar containers, startupProbe, grpc probes
  (counted a success), resource limits or securityContext; logs go to files in a temp dir
  (`Kubelet.logs(pod)`), not `pods/log`; the crash back-off never resets; ErrImagePull and
  ImagePullBackOff alternate every `image_backoff_s`; pod IPs are shared by every test run on
  the machine: each run holds an flock on `$TMPDIR/flint-kubelet-pod-ips/<ip>` for each IP it
  gives out, and takes an IP only if the Pod's containerPorts are also free on it;
- EndpointSlices: one slice per Service (no split at 100 endpoints or by differing named-port
  mappings: a named targetPort is resolved against the first selected Pod that has it), IPv4
  only, no topology hints or zones, no v1 Endpoints objects, publishNotReadyAddresses ignored;
- the informers compare resourceVersions as integers (etcd's revisions; a client should not)
  and every loop is level-triggered: any change, or `resync_s`, re-syncs everything (cheap for a
  test's few objects); API errors are logged and retried on the next pass;
- `KubeletSettings` replaces probe periods and timeouts and caps grace periods and back-offs,
  so tests run in seconds.

Every process it starts is in its own process group, gets `die_with_parent` (SIGTERM if the test
process dies) and is gone, reaped, when `stop()` returns (SIGTERM, SIGKILL after
`shutdown_grace_s`, 2 s; no preStop then).
"""

from __future__ import annotations

from .settings import KubeletSettings
from .standin import Kubelet

__all__ = ["Kubelet", "KubeletSettings"]
