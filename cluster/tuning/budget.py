"""How many trials can run at once without starving the Ray Data stage of CPUs.

Each trial holds its driver (a fraction of a CPU), its Train workers, and
needs `data_cpus` free for the decode/augment stage. Two concurrent 1-worker
trials on 4 logical CPUs with 1-CPU drivers left the data stage none and the
sweep hung forever; the arithmetic below refuses or lowers such a plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.training.resources import Capacity, ResourceError, check_training_fits


@dataclass(frozen=True)
class TrialBudget:
    cpus_per_trial: float
    gpus_per_trial: float
    concurrency: int
    explanation: str


def plan_concurrency(scaling, tune, capacity: Capacity) -> TrialBudget:
    check_training_fits(scaling, capacity, driver_cpus=tune.trial_driver_cpus)
    per_trial = tune.trial_driver_cpus + scaling.num_workers * scaling.cpus_per_worker + scaling.data_cpus
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
