"""Resource budgeting: refuse a run the cluster can never hold, before it spends any cluster time.

Ray Train reserves `num_workers x cpus_per_worker` CPUs for its workers; the
Ray Data decode/augment stage needs CPUs beyond those or the run hangs forever
("Cluster resources are not enough to run any task"), so the spec's
`scaling.data_cpus` is reserved on top.
"""

from __future__ import annotations

from dataclasses import dataclass


class ResourceError(ValueError):
    """A resource request the cluster cannot satisfy; the message shows the arithmetic."""


@dataclass(frozen=True)
class Capacity:
    """What the cluster has: total CPUs and GPUs, and the largest single node's."""

    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float

    @classmethod
    def of_cluster(cls) -> "Capacity":
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return cls(
            cpus=sum(n["Resources"].get("CPU", 0.0) for n in nodes),
            gpus=sum(n["Resources"].get("GPU", 0.0) for n in nodes),
            node_cpus=max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0),
            node_gpus=max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0),
        )


def check_training_fits(scaling, capacity: Capacity, driver_cpus: float = 0.0) -> None:
    """Raise ResourceError unless one training run (workers + data stage + driver) fits."""
    if scaling.cpus_per_worker > capacity.node_cpus:
        raise ResourceError(f"scaling.cpus_per_worker={scaling.cpus_per_worker:g} but the largest node has "
                            f"{capacity.node_cpus:g} CPUs")
    if scaling.gpus_per_worker > capacity.node_gpus:
        raise ResourceError(f"scaling.gpus_per_worker={scaling.gpus_per_worker:g} but the largest node has "
                            f"{capacity.node_gpus:g} GPUs")
    worker_cpus = scaling.num_workers * scaling.cpus_per_worker
    needed = worker_cpus + scaling.data_cpus + driver_cpus
    if needed > capacity.cpus:
        raise ResourceError(
            f"scaling asks for {scaling.num_workers} workers x {scaling.cpus_per_worker:g} CPU = {worker_cpus:g} "
            f"+ data_cpus {scaling.data_cpus:g}" + (f" + driver {driver_cpus:g}" if driver_cpus else "")
            + f" = {needed:g} CPUs, the cluster has {capacity.cpus:g}; lower scaling.num_workers or "
            "scaling.cpus_per_worker, or add nodes")
    gpus = scaling.num_workers * scaling.gpus_per_worker
    if gpus > capacity.gpus:
        raise ResourceError(f"scaling asks for {scaling.num_workers} workers x {scaling.gpus_per_worker:g} GPU = "
                            f"{gpus:g} GPUs, the cluster has {capacity.gpus:g}")
