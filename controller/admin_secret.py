"""The dispatcher's admin token on a cluster: a Secret the controller makes once, the dispatcher
mounts and `flint` reads (RBAC: `get` on that one Secret), so that dead letters stay behind a
credential of Flint's own even where the API server's service proxy reaches the dispatcher pod.

Any controller replica may make it: creating is idempotent (409 AlreadyExists means another did,
and its token stands). The token never appears in logs, status or errors. The names are read by
the CLI too, so kubernetes_asyncio is imported only where the Secret is made.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from flint_common.secret import Secret, new_token

log = logging.getLogger("flint.controller")

ADMIN_SECRET = "flint-dispatcher-admin"
"""The Secret's name (in the controller's namespace), key `token`."""
ADMIN_SECRET_KEY = "token"


def admin_secret_body(namespace: str, token: str) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": ADMIN_SECRET, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "flint"}},
        "data": {ADMIN_SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


async def admin_token(api: Any, namespace: str) -> Secret:
    """The dispatcher's admin token (`api`: a kubernetes_asyncio ApiClient): the Secret's, made
    first unless it exists (409: another replica made it, and its token is read)."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    core: Any = client.CoreV1Api(api)
    where = f"the Secret {namespace}/{ADMIN_SECRET} (the dispatcher's admin token)"
    token = new_token()
    try:
        await core.create_namespaced_secret(namespace, admin_secret_body(namespace, token.reveal()))
    except ApiException as e:
        if e.status != 409:
            raise RuntimeError(f"cannot create {where}: {e.status} {e.reason}") from None
    else:
        log.info("event=admin_secret_created secret=%s/%s", namespace, ADMIN_SECRET)
        return token
    try:
        secret = await core.read_namespaced_secret(ADMIN_SECRET, namespace)
    except ApiException as e:
        raise RuntimeError(f"cannot read {where}: {e.status} {e.reason}") from None
    raw = (secret.data or {}).get(ADMIN_SECRET_KEY) or ""
    try:
        text = base64.b64decode(raw, validate=True).decode().strip()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text:
        raise RuntimeError(f"{where} has no usable key {ADMIN_SECRET_KEY!r}: delete it and a "
                           "controller replica makes it again")
    return Secret(text)
