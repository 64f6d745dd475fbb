"""A thin client of a Ray cluster's job server (`ray.job_submission.JobSubmissionClient`).

It finds the auth token the way Ray does, sends it explicitly, and turns every
way a request can go wrong into a `ClusterError` whose message is one line a
user can act on: no cluster at the address, a missing or refused token, a job
id that does not exist.

Token lookup order (Ray 2.60's own): `RAY_AUTH_TOKEN`, then the file named by
`RAY_AUTH_TOKEN_PATH`, then `~/.ray/auth_token`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cluster.training.resources import ADMISSION_RESOURCE, ADMITTED_ENV

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(RuntimeError):
    """A request to the cluster failed; the message is one line saying what to do."""


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)  # a secret: never in a log line or a traceback's locals
    source: str  # where it came from, for messages: "RAY_AUTH_TOKEN", a file path


def default_token_file() -> Path:
    return Path.home() / ".ray" / "auth_token"


def find_token() -> Token | None:
    """The token Ray's own clients would send, or None.

    Like Ray, a RAY_AUTH_TOKEN_PATH that names no readable token is an error,
    not a reason to fall back to ~/.ray/auth_token.
    """
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return Token(value, f"${TOKEN_ENV}")
    if os.environ.get(TOKEN_PATH_ENV):
        path = Path(os.path.expanduser(os.environ[TOKEN_PATH_ENV]))
        try:
            value = path.read_text().strip()
        except OSError as error:
            raise ClusterError(f"{TOKEN_PATH_ENV} is {path}, which cannot be read ({error.strerror or error}): "
                               f"point it at the cluster's token file or unset it") from None
        if not value:
            raise ClusterError(f"{TOKEN_PATH_ENV} is {path}, which is empty: point it at the cluster's token file")
        warn_if_others_can_read(path)
        return Token(value, str(path))
    path = default_token_file()
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    warn_if_others_can_read(path)
    return Token(value, str(path)) if value else None


def loose_mode_warning(path: Path) -> str | None:
    """A warning when the token file at `path` is open to its group or to others (the secret runs code)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return (f"warning: the token file {path} has mode {mode:03o}: others on this machine can read the "
                f"cluster's secret; run `chmod 600 {path}`")
    return None


def warn_if_others_can_read(path: Path) -> None:
    message = loose_mode_warning(path)
    if message:
        print(message, file=sys.stderr)


def resolve_address(address: str | None) -> str:
    """--address, else RAY_ADDRESS, else the local dashboard; a bare host:port gets http://."""
    address = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip().rstrip("/")
    if address == "auto":
        address = DEFAULT_ADDRESS
    if "://" not in address:
        address = f"http://{address}"
    return address


def _missing_token_message(address: str) -> str:
    return (f"the Ray cluster at {address} requires an auth token and none was found (looked in ${TOKEN_ENV}, "
            f"${TOKEN_PATH_ENV}, {default_token_file()}): export "
            f"{TOKEN_ENV}=<token> or save it to {default_token_file()} (on the cluster's head node "
            f"`ray get-auth-token` prints it)")


def _wrong_token_message(address: str, token: Token) -> str:
    return (f"the Ray cluster at {address} refused the auth token from {token.source}: it is not this cluster's token; "
            f"set {TOKEN_ENV} (or {default_token_file()}) to the output of `ray get-auth-token` on its head node")


class JobClient:
    """Submit, inspect, follow and stop jobs on one cluster."""

    def __init__(self, address: str | None = None, token: Token | None = None):
        self.address = resolve_address(address)
        self.token = token if token is not None else find_token()
        # With a token: token mode, and our explicit header (Ray's SDK leaves a
        # user's Authorization header alone). Without one, a cluster that wants
        # a token answers 401 (or Ray's SDK refuses in token mode): both become
        # the "no token" line below; a cluster without auth just works.
        if self.token is not None:
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        logging.getLogger("ray._private.authentication.http_token_authentication").setLevel(logging.ERROR)
        self._headers = {"Authorization": f"Bearer {self.token.value}"} if self.token else {}
        self._client = self._call(self._connect, self._headers)

    def _connect(self, headers):
        from ray.job_submission import JobSubmissionClient

        # Ray's SDK narrates every upload at INFO/WARNING (".git is now ignored", ...);
        # its modules set their own levels on import, so quiet them afterwards.
        for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                     "ray._private.runtime_env.working_dir", "ray._private.runtime_env.packaging"):
            logging.getLogger(name).setLevel(logging.ERROR)
        return JobSubmissionClient(self.address, headers=headers)

    def _call(self, function, *args, job_id: str | None = None, **kwargs):
        """Run one SDK call; every failure becomes a one-line ClusterError."""
        import requests
        from ray.exceptions import AuthenticationError

        try:
            return function(*args, **kwargs)
        except AuthenticationError:
            if self.token is None:
                raise ClusterError(_missing_token_message(self.address)) from None
            raise ClusterError(_wrong_token_message(self.address, self.token)) from None
        except (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            raise ClusterError(f"no Ray cluster answers at {self.address}: start one with `sweetspot up`, "
                               f"or pass --address / set RAY_ADDRESS to its dashboard URL") from None
        except RuntimeError as error:
            text = str(error)
            if job_id is not None and ("404" in text or "does not exist" in text):
                raise ClusterError(f"no job {job_id!r} on the Ray cluster at {self.address} "
                                   f"(`sweetspot list` shows the jobs there)") from None
            first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
            raise ClusterError(f"the Ray cluster at {self.address} refused the request: {first}") from None

    # ------------------------------------------------------------ jobs

    def submit(self, entrypoint: str, runtime_env: dict, metadata: dict | None = None,
               submission_id: str | None = None, entrypoint_resources: dict[str, float] | None = None,
               entrypoint_memory: int | None = None) -> str:
        """Submit a job; `entrypoint_resources`/`entrypoint_memory` are held by its driver while it runs
        (Ray keeps the job PENDING until they are free), which then holds no share of its own."""
        if entrypoint_resources and ADMISSION_RESOURCE in entrypoint_resources:
            runtime_env = {**runtime_env, "env_vars": {**runtime_env.get("env_vars", {}), ADMITTED_ENV: "1"}}
        return self._call(self._client.submit_job, entrypoint=entrypoint, runtime_env=runtime_env,
                          metadata=metadata or {}, submission_id=submission_id,
                          entrypoint_resources=entrypoint_resources or None, entrypoint_memory=entrypoint_memory)

    def capacity(self):
        """The cluster's Capacity (CPUs, GPUs, admission pool), read through the dashboard's state API."""
        from ray.util.state.api import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        from cluster.training.resources import Capacity

        def nodes():
            state = StateApiClient(self.address, headers=self._headers)
            return state.list(StateResource.NODES, options=ListApiOptions(detail=True),
                              raise_on_missing_output=False)

        return Capacity.of_nodes([node.resources_total for node in self._call(nodes) if node.state == "ALIVE"])

    def info(self, job_id: str):
        return self._call(self._client.get_job_info, job_id, job_id=job_id)

    def status(self, job_id: str) -> str:
        return str(self.info(job_id).status)

    def logs(self, job_id: str) -> str:
        return self._call(self._client.get_job_logs, job_id, job_id=job_id)

    def stop(self, job_id: str) -> bool:
        self.info(job_id)  # a clear "no job" line rather than the server's
        return self._call(self._client.stop_job, job_id, job_id=job_id)

    def list(self) -> list:
        return self._call(self._client.list_jobs)

    def follow(self, job_id: str) -> Iterator[str]:
        """Chunks of the job's output until it ends."""
        self.info(job_id)
        stream = self._client.tail_job_logs(job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    chunk = loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
                except Exception as error:  # the websocket dropped: fall back to polling below
                    if self._wait_quietly(job_id):
                        return
                    raise ClusterError(f"lost the log stream of job {job_id} at {self.address}: "
                                       f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                                       ) from None
                yield chunk
        finally:
            loop.run_until_complete(stream.aclose())
            loop.close()

    def _wait_quietly(self, job_id: str, seconds: float = 5.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.status(job_id) in TERMINAL:
                return True
            time.sleep(0.5)
        return False

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> str:
        """Block until the job ends; its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status in TERMINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(poll)
