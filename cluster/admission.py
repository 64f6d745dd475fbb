"""A job's admission, held by its own driver when its submission reserved none.

`sweetspot submit` and `sweetspot quickstart` reserve a job's peak need as
entrypoint resources (`cluster/tuning/budget.py: admission`), and Ray starts the
driver only once they are free. A job sent with plain `ray job submit`, or a
driver run directly, had no such reservation: two train jobs of 2 x 1-CPU
workers run at once on the 4-CPU local cluster took every CPU for their workers,
left neither Ray Data stage one, and both hung until killed (seen 2026-12-03).
Such a driver now reserves the same resources itself, as a placement group of
one bundle that nothing runs in, and waits for it before its job starts.
"""

from __future__ import annotations

import contextlib
import os

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from cluster.runs import Holder, job_running, log, refuse_if_held
from cluster.spec import run_dir
from cluster.storage import RunStorage
from cluster.training.resources import ADMISSION_RESOURCE, ADMITTED_ENV, Capacity
from cluster.tuning.budget import admission

# How long a driver waits silently before it says what it waits for.
QUIET_WAIT_SECONDS = 1.0


@contextlib.contextmanager
def held(spec):
    """Hold the job's admission resources for the block; wait (saying so) while other jobs hold them.

    Raises ResourceError, before any wait, for a job the cluster can never hold, and JobFailed, before
    waiting, when a running job holds its run folder.
    Holds nothing when the submission reserved them already, or when no node
    advertises the admission resource (a cluster not started by `sweetspot up`).
    """
    if os.environ.get(ADMITTED_ENV):
        yield
        return
    ray.init(ignore_reinit_error=True)
    capacity = Capacity.of_cluster()
    ticket = admission(spec, capacity)
    if not ticket.resources:
        yield
        return
    group = placement_group([ticket.resources])
    try:
        if not group.wait(timeout_seconds=QUIET_WAIT_SECONDS):
            # The same job sent twice is refused with the running one's id now, not after that one ends.
            refuse_if_held(RunStorage(run_dir(spec)), Holder.current(), job_running)
            log(f"waiting for {ticket.need.cpus:g} of the cluster's {capacity.pool:g} {ADMISSION_RESOURCE}: "
                "other jobs hold them (this job needs " + ticket.need.arithmetic + ")")
            ray.get(group.ready())
            log("admitted")
        yield
    finally:
        remove_placement_group(group)
