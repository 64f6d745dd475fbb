"""What every job kind shares: logging, the run folder claim, and failures that end a job cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import yaml

from cluster.spec import spec_to_yaml
from cluster.storage import RunStorage


class JobFailed(RuntimeError):
    """A job that cannot go on; the message says why, for the user."""


def log(message: str) -> None:
    print(f"[sweetspot {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Fields that only decide how finished results are read, not what is trained:
# a sweep resubmitted with new constraints re-chooses without training again.
RESUMABLE_CHANGES = ("constraints", "objective")


def _comparable(document: dict) -> dict:
    """The spec without the fields that may change between runs of the same job."""
    document = {k: v for k, v in document.items() if k not in RESUMABLE_CHANGES}
    document["output"] = {k: v for k, v in document.get("output", {}).items() if k != "overwrite"}
    return document


CLAIM = "claim.json"
# A second claimant re-reads the claim after this long: of two jobs that replaced a stale claim at once,
# the one whose write landed first sees the other's and stops.
CLAIM_SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Holder:
    """The job that holds a run folder: its driver's Ray job id and, when submitted, its submission id."""

    job_id: str
    submission_id: str | None
    host: str
    pid: int

    @classmethod
    def current(cls) -> "Holder":
        import ray  # the driver has joined the cluster by now; ray is not imported at module level (cli stays light)

        # `ray job submit` hands its driver the submission's metadata in this variable.
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        return cls(job_id=ray.get_runtime_context().get_job_id(),
                   submission_id=config.get("metadata", {}).get("job_submission_id"),
                   host=socket.gethostname(), pid=os.getpid())

    def describe(self) -> str:
        driver = f"driver job {self.job_id}, pid {self.pid} on {self.host}"
        return f"job {self.submission_id} ({driver})" if self.submission_id else driver


def job_running(job_id: str) -> bool:
    """Whether the cluster's job table shows this Ray job alive (a killed driver's job ends with its connection)."""
    # Deferred: only a driver on the cluster asks, and the CLI imports this module without Ray.
    from ray.job_submission import JobStatus
    from ray.util.state import list_jobs

    return any(job.status in (JobStatus.PENDING, JobStatus.RUNNING)
               for job in list_jobs(filters=[("job_id", "=", job_id)], raise_on_missing_output=False))


def spec_digest(text: str) -> str:
    return hashlib.sha256(json.dumps(_comparable(yaml.safe_load(text)), sort_keys=True).encode()).hexdigest()


def _read_claim(storage: RunStorage) -> dict | None:
    try:
        return json.loads(storage.read_text(CLAIM))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def refuse_if_held(storage: RunStorage, holder: Holder, running: Callable[[str], bool]) -> None:
    """JobFailed naming the job when a live job other than `holder` holds the folder."""
    existing = _read_claim(storage)
    if not existing or existing.get("holder", {}).get("job_id") == holder.job_id:
        return
    other = Holder(**existing["holder"])
    try:
        alive = running(other.job_id)
    except Exception as error:  # the state API's errors (connection, auth) have no common base
        raise JobFailed(f"{storage.path()} is claimed by {other.describe()} and the cluster cannot say whether it "
                        f"still runs ({type(error).__name__}: {error}); if it has ended, delete "
                        f"{storage.path(CLAIM)} and submit again") from None
    if alive:
        raise JobFailed(f"{storage.path()} is in use by {other.describe()}, claimed at "
                        f"{existing.get('claimed_at', '?')}; wait for it to finish or stop it "
                        f"(`sweetspot stop {other.submission_id or other.job_id}`)")


def take_claim(storage: RunStorage, claim: dict, holder: Holder, running: Callable[[str], bool]) -> None:
    """Write `claim` unless a live job other than `holder` holds the folder (JobFailed names it)."""
    text = json.dumps(claim, indent=1)
    if storage.is_local:
        # Hard-linking a finished file into place creates the claim atomically, or fails if one exists.
        temporary = storage.write_text(f".claim-{holder.job_id}-{holder.pid}", text)
        try:
            os.link(temporary, storage.path(CLAIM))
            return
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    refuse_if_held(storage, holder, running)
    storage.write_text(CLAIM, text)  # the previous holder has ended (or it is this job): take over
    time.sleep(CLAIM_SETTLE_SECONDS)
    if _read_claim(storage) != claim:
        refuse_if_held(storage, holder, running)  # another job took over at the same moment
        raise JobFailed(f"{storage.path()}: another job claimed this folder at the same moment; submit again")


def claim_run_folder(spec, storage: RunStorage, holder: Holder | None = None,
                     running: Callable[[str], bool] = job_running) -> None:
    """Claim the run folder for this job, then write spec.yaml; call once every check has passed.

    `claim.json` names the job holding the folder and its spec's digest. A folder
    held by another job that is still running is refused with that job's id; a
    claim left by a job that ended (finished, failed, killed) is taken over. A
    folder holding a different spec is refused unless `output.overwrite` is set,
    which moves the previous run aside whole (`<name>.replaced-<time>`): nothing
    of it is resumed or mixed into the new run. The same spec again resumes.
    """
    holder = holder or Holder.current()
    refuse_if_held(storage, holder, running)
    text = spec_to_yaml(spec)
    claim = {"holder": asdict(holder), "spec_digest": spec_digest(text),
             "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if storage.exists("spec.yaml") and not spec.output.overwrite:
        previous = yaml.safe_load(storage.read_text("spec.yaml")) or {}
        if _comparable(previous) != _comparable(yaml.safe_load(text)):
            raise JobFailed(f"{storage.path()} holds the results of a different spec; use another name, "
                            "or set output.overwrite=true to replace them")
        log(f"{storage.path()} holds this spec already: resuming")
    take_claim(storage, claim, holder, running)
    if spec.output.overwrite and storage.exists("spec.yaml"):
        aside = storage.move_aside(time.strftime("replaced-%Y%m%d-%H%M%S"))
        log(f"output.overwrite: the previous run is now {aside}; this run starts afresh")
        take_claim(storage, claim, holder, running)
    storage.write_text("spec.yaml", text)
