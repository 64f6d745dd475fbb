"""What every job kind shares: logging, the run folder claim, and failures that end a job cleanly."""

from __future__ import annotations

import sys
import time

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


def claim_run_folder(spec, storage: RunStorage) -> None:
    """Write spec.yaml, refusing a folder that holds a different spec unless output.overwrite is set.

    The same spec again resumes (Ray Train continues from its checkpoints). With
    `output.overwrite` the previous run, whatever its spec, is moved aside whole
    first (`<name>.replaced-<time>`): nothing of it is resumed or mixed into the new run.
    """
    text = spec_to_yaml(spec)
    if storage.exists("spec.yaml"):
        previous = yaml.safe_load(storage.read_text("spec.yaml")) or {}
        same = _comparable(previous) == _comparable(yaml.safe_load(text))
        if spec.output.overwrite:
            aside = storage.move_aside(time.strftime("replaced-%Y%m%d-%H%M%S"))
            log(f"output.overwrite: the previous run is now {aside}; this run starts afresh")
        elif not same:
            raise JobFailed(f"{storage.path()} holds the results of a different spec; use another name, "
                            "or set output.overwrite=true to replace them")
        else:
            log(f"{storage.path()} holds this spec already: resuming")
    storage.write_text("spec.yaml", text)
