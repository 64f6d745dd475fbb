"""Resource budgeting: refuse a run the cluster can never hold, before it spends any cluster time.

Ray Train reserves `num_workers x cpus_per_worker` CPUs for its workers; the
Ray Data decode/augment stage needs CPUs beyond those or the run hangs forever
("Cluster resources are not enough to run any task"), so the spec's
`scaling.data_cpus` is reserved on top.

Across jobs, the cluster's head advertises ADMISSION_RESOURCE, one unit per
CPU the cluster has; `sweetspot submit` reserves a job's whole CPU need of it
for the job's driver (`entrypoint_resources`), so Ray keeps a job that does not
fit beside the running ones PENDING instead of letting it take CPUs another
job's data stage needs (cluster/tuning/budget.py computes that need). A job sent
otherwise holds the same share from its own driver (cluster/admission.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# The custom resource whose total is the CPUs the running sweetspot jobs may share.
ADMISSION_RESOURCE = "sweetspot_cpu"
# Set in a job's environment by the submit commands, whose entrypoint resources hold its need while its
# driver runs; a driver without it holds its own (cluster/admission.py).
ADMITTED_ENV = "SWEETSPOT_ADMITTED"


class ResourceError(ValueError):
    """A resource request the cluster cannot satisfy; the message shows the arithmetic."""


@dataclass(frozen=True)
class Capacity:
    """What the cluster has: total CPUs and GPUs, and the largest single node's.

    `pool` is the total of ADMISSION_RESOURCE (None when no node advertises it)
    and `pool_node_memory` the largest Ray `memory` of a node advertising it:
    a job's driver runs on such a node.
    """

    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float
    pool: float | None = None
    pool_node_memory: float = 0.0

    @classmethod
    def of_nodes(cls, resources: list[dict]) -> "Capacity":
        """From the `resources_total` of every live node."""
        pooled = [r for r in resources if r.get(ADMISSION_RESOURCE, 0.0) > 0]
        return cls(
            cpus=sum(r.get("CPU", 0.0) for r in resources),
            gpus=sum(r.get("GPU", 0.0) for r in resources),
            node_cpus=max((r.get("CPU", 0.0) for r in resources), default=0.0),
            node_gpus=max((r.get("GPU", 0.0) for r in resources), default=0.0),
            pool=sum(r[ADMISSION_RESOURCE] for r in pooled) if pooled else None,
            pool_node_memory=max((r.get("memory", 0.0) for r in pooled), default=0.0),
        )

    @classmethod
    def of_cluster(cls) -> "Capacity":
        import ray

        return cls.of_nodes([n["Resources"] for n in ray.nodes() if n.get("Alive")])


def training_cpus(scaling, driver_cpus: float = 0.0) -> tuple[float, str]:
    """CPUs one training run holds (workers + data stage + driver), and the sum written out."""
    worker_cpus = scaling.num_workers * scaling.cpus_per_worker
    needed = worker_cpus + scaling.data_cpus + driver_cpus
    return needed, (f"{scaling.num_workers} workers x {scaling.cpus_per_worker:g} CPU = {worker_cpus:g} "
                    f"+ data_cpus {scaling.data_cpus:g}" + (f" + driver {driver_cpus:g}" if driver_cpus else "")
                    + f" = {needed:g} CPUs")


def check_training_fits(scaling, capacity: Capacity, driver_cpus: float = 0.0) -> None:
    """Raise ResourceError unless one training run (workers + data stage + driver) fits."""
    if scaling.cpus_per_worker > capacity.node_cpus:
        raise ResourceError(f"scaling.cpus_per_worker={scaling.cpus_per_worker:g} but the largest node has "
                            f"{capacity.node_cpus:g} CPUs")
    if scaling.gpus_per_worker > capacity.node_gpus:
        raise ResourceError(f"scaling.gpus_per_worker={scaling.gpus_per_worker:g} but the largest node has "
                            f"{capacity.node_gpus:g} GPUs")
    needed, arithmetic = training_cpus(scaling, driver_cpus)
    if needed > capacity.cpus:
        raise ResourceError(f"scaling asks for {arithmetic}, the cluster has {capacity.cpus:g}; lower "
                            "scaling.num_workers or scaling.cpus_per_worker, or add nodes")
    gpus = scaling.num_workers * scaling.gpus_per_worker
    if gpus > capacity.gpus:
        raise ResourceError(f"scaling asks for {scaling.num_workers} workers x {scaling.gpus_per_worker:g} GPU = "
                            f"{gpus:g} GPUs, the cluster has {capacity.gpus:g}")
