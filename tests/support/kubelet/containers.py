"""One container of a Pod as a local process: image to app folder, start, restart with back-off,
probes, preStop and the SIGTERM/SIGKILL stop; its containerStatuses entry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flint_common.lifetime import die_with_parent

from .objects import now_rfc3339, wait_event
from .probes import Prober, http_get
from .settings import KubeletSettings

JSON = dict[str, Any]
IMAGE_PREFIX = "flint.test/apps/"
APPS = Path(__file__).resolve().parents[2] / "apps"  # tests/apps


def app_folder(image: str) -> Path | None:
    """`flint.test/apps/<name>[:tag|@digest]` → tests/apps/<name> when it has a Procfile."""
    if not image.startswith(IMAGE_PREFIX):
        return None
    name = image[len(IMAGE_PREFIX):].split("@")[0].split(":")[0]
    folder = APPS / name
    if not name or "/" in name or not (folder / "Procfile").is_file():
        return None
    return folder


def procfile_web(folder: Path) -> str | None:
    for line in (folder / "Procfile").read_text().splitlines():
        kind, sep, command = line.partition(":")
        if sep and kind.strip() == "web" and command.strip():
            return command.strip()
    return None


def container_argv(container: JSON, web: str | None) -> list[str]:
    """`command` replaces the image's entrypoint (the Procfile's `web:` line run by a shell),
    `args` are passed to whichever runs (Kubernetes' rule)."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if command:
        return command + args
    if web is None:
        raise ValueError("the image has no Procfile `web:` line and the container no command")
    return ["/bin/sh", "-c", f'exec {web} "$@"', "web", *args]


def first_port(container: JSON) -> int:
    ports = container.get("ports") or []
    return int(ports[0].get("containerPort", 8080)) if ports else 8080


@dataclass(frozen=True)
class PodInfo:
    """What a container knows of its Pod."""

    namespace: str
    name: str
    uid: str
    ip: str
    restart_policy: str  # Always, OnFailure, Never
    grace_s: float  # spec.terminationGracePeriodSeconds (default 30)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by a signal: 128 + signal


class Container:
    """A container's life: pull (find the app), run, restart with back-off until stopped."""

    def __init__(
        self,
        pod: PodInfo,
        spec: JSON,
        settings: KubeletSettings,
        log_dir: Path,
        on_change: Callable[[], None],
    ) -> None:
        self.pod = pod
        self.spec = spec
        self.name = str(spec.get("name", "app"))
        self.image = str(spec.get("image", ""))
        self.settings = settings
        self.log_path = log_dir / f"{pod.namespace}_{pod.name}_{self.name}.log"
        self.on_change = on_change
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = asyncio.Event()
        self.done = False  # terminated and never restarting
        self.image_id = ""  # set once "pulled" (a fixed fake digest)
        self.folder: Path | None = None  # the app's folder, once found
        self._deadline = 0.0  # when a stopping container is SIGKILLed (loop time)

    # --- status --------------------------------------------------------------------------------

    def status(self) -> JSON:
        out: JSON = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            out["containerID"] = f"flint://{self.proc.pid}"
        return out

    def _set(self, state: JSON, *, ready: bool | None = None) -> None:
        self.state = state
        if ready is not None:
            self.ready = ready
        self.on_change()

    # --- life ----------------------------------------------------------------------------------

    async def run(self) -> None:
        folder = await self._pull()
        if folder is None:
            return
        backoff = self.settings.crash_backoff_s
        while not self.stopping.is_set():
            try:
                argv = container_argv(self.spec, await asyncio.to_thread(procfile_web, folder))
            except ValueError as e:
                self._set({"waiting": {"reason": "CreateContainerError", "message": str(e)}})
                self.done = True
                return
            try:
                terminated = await self._run_once(argv, folder)
            except OSError as e:  # the command could not be started (a runtime's StartError)
                now = now_rfc3339()
                terminated = {"exitCode": 128, "reason": "StartError", "message": f"failed to start: {e}",
                              "startedAt": now, "finishedAt": now}
            code = int(terminated["exitCode"])
            policy = self.pod.restart_policy
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if self.stopping.is_set() or not restart:
                self.done = True
                self._set({"terminated": terminated}, ready=False)
                return
            self.last_state = {"terminated": terminated}
            self._set(
                {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {backoff:g}s restarting failed container={self.name} "
                        f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})",
                    }
                },
                ready=False,
            )
            await wait_event(self.stopping, backoff)
            backoff = min(backoff * 2, self.settings.crash_backoff_max_s)
            if not self.stopping.is_set():
                self.restart_count += 1
        if not self.done:  # stopped during a back-off: its last run is how it ended
            self.done = True
            self._set(self.last_state or {"terminated": {"exitCode": 0, "reason": "Completed"}}, ready=False)

    async def _run_once(self, argv: list[str], folder: Path) -> JSON:
        """Start the process, probe it while it runs; how it ended."""
        started_at = now_rfc3339()
        self.proc = proc = await self._spawn(argv, folder)
        self.started = True
        if self.stopping.is_set():  # deleted while it started
            await self._terminate(proc, self._deadline)
        self._set({"running": {"startedAt": started_at}}, ready=not self.spec.get("readinessProbe"))
        probes = Prober(self, self.settings).start()
        try:
            returncode = await proc.wait()
        finally:
            for task in probes:
                task.cancel()
        self.started = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what it left behind in its group
        code = _exit_code(returncode)
        return {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
            "containerID": f"flint://{proc.pid}",
        }

    async def _pull(self) -> Path | None:
        """The app folder, or ErrImagePull / ImagePullBackOff until it appears or the Pod stops."""
        while not self.stopping.is_set():
            folder = await asyncio.to_thread(app_folder, self.image)
            if folder is not None:
                self.folder = folder
                self.image_id = f"{self.image}@sha256:{'0' * 64}"
                return folder
            self._set({"waiting": {"reason": "ErrImagePull", "message": (
                f'failed to pull and unpack image "{self.image}": failed to resolve reference '
                f'"{self.image}": {self.image}: not found')}})
            if await wait_event(self.stopping, self.settings.image_backoff_s):
                break
            self._set({"waiting": {"reason": "ImagePullBackOff",
                                   "message": f'Back-off pulling image "{self.image}"'}})
            await wait_event(self.stopping, self.settings.image_backoff_s)
        self.done = True
        return None

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PORT": str(first_port(self.spec)),
            "POD_IP": self.pod.ip,
            "POD_NAME": self.pod.name,
            "POD_NAMESPACE": self.pod.namespace,
        }
        for var in self.spec.get("env") or []:
            if "value" in var:
                env[str(var["name"])] = str(var["value"])
            else:
                field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                known = {"metadata.name": self.pod.name, "metadata.namespace": self.pod.namespace,
                         "metadata.uid": self.pod.uid, "status.podIP": self.pod.ip,
                         "status.hostIP": self.settings.host_ip, "spec.nodeName": self.settings.node_name}
                if field in known:
                    env[str(var["name"])] = known[field]
        return env

    async def _spawn(self, argv: list[str], folder: Path) -> asyncio.subprocess.Process:
        log = await asyncio.to_thread(open, self.log_path, "ab", buffering=0)
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=folder,
                env=self.env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, signalled whole
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()

    # --- stop ----------------------------------------------------------------------------------

    async def kill(self) -> None:
        """SIGTERM the process group now, SIGKILL it after the grace (a liveness failure)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        cap = self.settings.grace_period_s
        grace = min(self.pod.grace_s, cap) if cap is not None else self.pod.grace_s
        await self._terminate(proc, asyncio.get_running_loop().time() + grace)

    async def stop(self, deadline: float, pre_stop: bool = True) -> None:
        """The Pod is deleted: preStop, then SIGTERM, SIGKILL at `deadline` (loop time)."""
        self._deadline = deadline
        self.stopping.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            hook = (self.spec.get("lifecycle") or {}).get("preStop")
            if hook and pre_stop:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._pre_stop(hook)
            await self._terminate(proc, deadline)

    async def _terminate(self, proc: asyncio.subprocess.Process, deadline: float) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout_at(deadline):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def _pre_stop(self, hook: JSON) -> None:
        if "exec" in hook:
            command = [str(c) for c in (hook["exec"] or {}).get("command") or []]
            seconds = _sleep_seconds(command)
            if seconds is not None:  # the common `sleep N`: no process needed
                await asyncio.sleep(seconds)
                return
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=self.folder, env=self.env(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )
            try:
                await proc.wait()
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await asyncio.shield(proc.wait())
        elif "sleep" in hook:
            await asyncio.sleep(float((hook["sleep"] or {}).get("seconds", 0)))
        elif "httpGet" in hook:
            await http_get(self, hook["httpGet"], timeout_s=30.0)


def _sleep_seconds(command: list[str]) -> float | None:
    """N of `sleep N` or `sh -c "sleep N"`, else None."""
    if len(command) == 3 and command[0] in ("sh", "/bin/sh") and command[1] == "-c":
        command = shlex.split(command[2])
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        with contextlib.suppress(ValueError):
            return float(command[1])
    return None
