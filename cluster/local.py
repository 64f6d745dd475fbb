"""Bring a laptop-local Ray cluster up and down, the way a user would: `ray start --head`.

The dashboard (and with it the job server `ray job submit` talks to) binds to
127.0.0.1, and Ray 2.60's token authentication stays on: `up` runs in token
mode, and afterwards makes the token file readable by its owner only (Ray
writes it world-readable).

The head advertises the admission resource (`sweetspot_cpu`, one per CPU) that
`sweetspot submit` reserves a job's whole CPU need of, and lets a job wait
PENDING for it as long as it takes (Ray fails a job that stays PENDING
longer than RAY_JOB_START_TIMEOUT_SECONDS, 15 minutes by default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8265
DASHBOARD_URL = f"http://{DASHBOARD_HOST}:{DASHBOARD_PORT}"
TOKEN_FILE = Path.home() / ".ray" / "auth_token"
# How long a submitted job may wait PENDING for its admission resources: a week.
JOB_START_TIMEOUT_SECONDS = 7 * 24 * 3600


def ray_executable() -> str:
    """The `ray` next to this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def client_env() -> dict[str, str]:
    """The environment for a client of the local cluster: token auth on.

    This interpreter's folder goes first on PATH so that a head started from
    here runs job entrypoints (`python -m jobs ...`) with this environment's Python.
    """
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def dashboard_up(timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{DASHBOARD_URL}/api/version", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (401 without a token still means it is up)
    except (urllib.error.URLError, OSError):
        return False


def token_auth_in_force(url: str | None = None, timeout: float = 5.0) -> bool:
    """Whether the dashboard at `url` refuses a request without a token: the mode the cluster really runs in,
    whatever this shell's RAY_AUTH_MODE says."""
    try:
        with urllib.request.urlopen(f"{url or DASHBOARD_URL}/api/version", timeout=timeout):
            return False
    except urllib.error.HTTPError as error:
        return error.code in (401, 403)


def is_running() -> bool:
    """A local head answers `ray status`."""
    done = subprocess.run([ray_executable(), "status"], env=client_env(), capture_output=True, text=True)
    return done.returncode == 0


def restrict_token_file() -> None:
    if TOKEN_FILE.exists():
        TOKEN_FILE.chmod(0o600)


def head_resources(num_cpus: int | None) -> dict[str, float]:
    """The head's custom resources: the admission pool, one unit per CPU of this one-node cluster."""
    from cluster.training.resources import ADMISSION_RESOURCE

    if num_cpus is None:
        from ray._private.utils import get_num_cpus  # what `ray start` detects

        num_cpus = get_num_cpus()
    return {ADMISSION_RESOURCE: float(num_cpus)}


def head_env() -> dict[str, str]:
    """`ray start --head`'s environment, which every Ray process of the cluster inherits: a client's, and
    queued jobs wait for their turn instead of failing."""
    env = client_env()
    env.setdefault("RAY_JOB_START_TIMEOUT_SECONDS", str(JOB_START_TIMEOUT_SECONDS))
    # A laptop is not preempted: Ray Train's preemption watcher (an actor per run, polling for nodes
    # being drained) has nothing to watch here. A cloud cluster, whose nodes are drained, keeps it.
    env.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray's log monitor globs the whole log folder every 0.1 s until it holds 1,000 files, which a day of
    # jobs on a laptop rarely reaches: here every 0.5 s, as past that count (each file's new lines still
    # go to the job's log every 0.1 s). Measured over the 63 cluster tests: 11.0 CPU-s against 23.2.
    env.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
    return env


def up(num_cpus: int | None = None, num_gpus: int | None = None, wait_seconds: float = 60.0) -> bool:
    """Start a head node unless one runs; returns True when this call started it."""
    if is_running():
        restrict_token_file()
        return False
    command = [ray_executable(), "start", "--head", "--dashboard-host", DASHBOARD_HOST,
               "--dashboard-port", str(DASHBOARD_PORT), "--include-dashboard", "true", "--disable-usage-stats"]
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        command += ["--num-gpus", str(num_gpus)]
    command += ["--resources", json.dumps(head_resources(num_cpus))]
    # In token mode `ray start` refuses to run without a token; make one if none exists.
    subprocess.run([ray_executable(), "get-auth-token", "--generate"], env=client_env(), check=True,
                   capture_output=True, text=True)
    restrict_token_file()
    subprocess.run(command, env=head_env(), check=True, capture_output=True, text=True)
    restrict_token_file()
    deadline = time.monotonic() + wait_seconds
    while not dashboard_up():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray dashboard did not come up at {DASHBOARD_URL} in {wait_seconds:.0f}s")
        time.sleep(1.0)
    return True


def down() -> None:
    subprocess.run([ray_executable(), "stop", "--force"], env=client_env(), check=False, capture_output=True)
