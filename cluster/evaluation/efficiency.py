"""Resource efficiency of a training run: time, CPU and GPU seconds, memory, and what it cost."""

from __future__ import annotations


def resource_summary(scaling, evaluation, wall_seconds: float, usage: dict) -> dict:
    """`usage` is the run's `WorkerUsage.summary()`; GPU seconds are the GPUs reserved times the run's wall time."""
    gpu_seconds = scaling.num_workers * scaling.gpus_per_worker * wall_seconds if scaling.use_gpu else 0.0
    reserved_cpu_seconds = scaling.num_workers * scaling.cpus_per_worker * wall_seconds
    summary = {
        "wall_seconds": wall_seconds,
        "worker_cpu_seconds": usage["worker_cpu_seconds"],
        "reserved_cpu_seconds": reserved_cpu_seconds,
        "cpu_utilisation": usage["worker_cpu_seconds"] / reserved_cpu_seconds if reserved_cpu_seconds else 0.0,
        "gpu_seconds": gpu_seconds,
        "peak_rss_bytes_per_worker": {rank: w["peak_rss_bytes"] for rank, w in usage["workers"].items()},
        "worker_processes": sum(w["processes"] for w in usage["workers"].values()),
        # What worker failures cost: every epoch start in order; a repeated epoch was redone.
        "epochs_started": usage.get("epochs_started", []),
        "epochs_repeated": usage.get("epochs_repeated", 0),
        "cost": None,
    }
    if evaluation.price_per_cpu_hour is not None or evaluation.price_per_gpu_hour is not None:
        # Billed on what was reserved, as a cloud bills it, not on what was used.
        summary["cost"] = (reserved_cpu_seconds / 3600 * (evaluation.price_per_cpu_hour or 0.0)
                           + gpu_seconds / 3600 * (evaluation.price_per_gpu_hour or 0.0))
    return summary
