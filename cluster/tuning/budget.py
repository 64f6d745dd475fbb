"""CPU budgets: how many trials of a sweep run at once, and what one job holds of the cluster.

Each trial holds its driver (a fraction of a CPU), its Train workers, and
needs `data_cpus` free for the decode/augment stage. Two concurrent 1-worker
trials on 4 logical CPUs with 1-CPU drivers left the data stage none and the
sweep hung forever; the arithmetic below refuses or lowers such a plan.

The same holds between jobs: two jobs whose Train workers take every CPU leave
neither data stage any, and both hang. `admission` turns a job's peak need
into the `entrypoint_resources` `sweetspot submit` reserves, so Ray starts a
job only when its whole need is free (the sum of the running jobs' needs stays
within the cluster's CPUs) and keeps the others PENDING.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.training.resources import (ADMISSION_RESOURCE, Capacity, ResourceError, check_training_fits,
                                        training_cpus)

# Ray `memory` reserved for each job's driver: it imports TensorFlow (0.5-1 GB
# RSS), so this bounds how many drivers the head holds at once.
DRIVER_MEMORY = 1 << 30


@dataclass(frozen=True)
class TrialBudget:
    cpus_per_trial: float
    gpus_per_trial: float
    concurrency: int
    explanation: str


def plan_concurrency(scaling, tune, capacity: Capacity) -> TrialBudget:
    check_training_fits(scaling, capacity, driver_cpus=tune.trial_driver_cpus)
    per_trial, _ = training_cpus(scaling, tune.trial_driver_cpus)
    gpus = scaling.num_workers * scaling.gpus_per_worker if scaling.use_gpu else 0.0
    fits = int(capacity.cpus // per_trial)
    if gpus:
        fits = min(fits, int(capacity.gpus // gpus))
    arithmetic = (f"each trial needs {tune.trial_driver_cpus:g} (driver) + {scaling.num_workers} x "
                  f"{scaling.cpus_per_worker:g} (workers) + {scaling.data_cpus:g} (data) = {per_trial:g} CPUs; "
                  f"the cluster has {capacity.cpus:g}")
    if fits < 1:
        raise ResourceError(f"no trial fits: {arithmetic}")
    concurrency = min(tune.max_concurrent_trials, fits)
    note = arithmetic + (f", so {concurrency} trial(s) run at once (tune.max_concurrent_trials "
                         f"{tune.max_concurrent_trials} lowered)" if concurrency < tune.max_concurrent_trials
                         else f", so up to {concurrency} trial(s) run at once")
    return TrialBudget(per_trial, gpus, concurrency, note)


@dataclass(frozen=True)
class JobNeed:
    cpus: float
    arithmetic: str  # how `cpus` adds up, for messages


def job_need(spec, capacity: Capacity) -> JobNeed:
    """The CPUs a job holds at its peak; ResourceError (with the arithmetic) when the cluster can never hold it.

    train and compress: one Ray Train run at a time (workers + data stage);
    sweep: its concurrent trials, each with its trial driver; evaluate: its one
    measuring task. The job's own driver process holds no Ray CPU.
    """
    if spec.kind == "evaluate":
        if spec.cpus > capacity.node_cpus:
            raise ResourceError(f"cpus={spec.cpus:g} but the largest node has {capacity.node_cpus:g} CPUs")
        return JobNeed(spec.cpus, f"1 measuring task x {spec.cpus:g} CPU = {spec.cpus:g} CPUs")
    if spec.kind == "sweep":
        budget = plan_concurrency(spec.scaling, spec.tune, capacity)
        cpus = budget.cpus_per_trial * budget.concurrency
        return JobNeed(cpus, f"{budget.concurrency} trial(s) at once x {budget.cpus_per_trial:g} = {cpus:g} CPUs "
                             f"({budget.explanation})")
    check_training_fits(spec.scaling, capacity)
    return JobNeed(*training_cpus(spec.scaling))


@dataclass(frozen=True)
class Admission:
    need: JobNeed
    resources: dict[str, float]  # entrypoint_resources; empty when the cluster has no admission pool
    memory: int | None           # entrypoint_memory (bytes) for the driver, with the resources
    note: str                    # one line for the user


def admission(spec, capacity: Capacity) -> Admission:
    """What to reserve for the job's driver so that Ray queues it until its whole need is free."""
    need = job_need(spec, capacity)
    if capacity.pool is None:
        return Admission(need, {}, None,
                         f"the cluster advertises no {ADMISSION_RESOURCE} resource: submitting without admission "
                         f"control (this job needs {need.arithmetic}); jobs submitted together may starve each "
                         "other's Ray Data stage. Start the cluster with `sweetspot up` or see docs/deploy.md")
    if need.cpus > capacity.pool + 1e-9:
        raise ResourceError(f"this job needs {need.arithmetic}, but the cluster admits jobs of at most "
                            f"{capacity.pool:g} CPUs ({ADMISSION_RESOURCE}): it would wait forever; lower "
                            "scaling.num_workers, scaling.cpus_per_worker or tune.max_concurrent_trials")
    if DRIVER_MEMORY > capacity.pool_node_memory:
        raise ResourceError(f"a job's driver reserves {DRIVER_MEMORY / 2**30:g} GiB of Ray memory, the head has "
                            f"{capacity.pool_node_memory / 2**30:.2f} GiB")
    return Admission(need, {ADMISSION_RESOURCE: round(need.cpus, 4)}, DRIVER_MEMORY,
                     f"reserving {need.cpus:g} of the cluster's {capacity.pool:g} {ADMISSION_RESOURCE} "
                     f"({need.arithmetic}) and {DRIVER_MEMORY / 2**30:g} GiB for the driver; the job stays "
                     "PENDING until they are free")
