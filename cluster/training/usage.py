"""Resource use of a training run's workers, gathered across ranks and restarts.

Every worker records its process's CPU seconds and peak RSS after each epoch
in the run's log actor (`WorkerUsage`'s methods); a restarted worker is a new process, so usage is
kept per process id and summed. Only rank 0's metrics reach Ray Train's
Result, so this is how the driver sees every worker.
"""

from __future__ import annotations

import os
import resource

import psutil


def process_usage() -> dict:
    """This process's CPU seconds (user + system) and peak resident memory so far."""
    times = psutil.Process().cpu_times()
    return {"cpu_seconds": times.user + times.system,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


class WorkerUsage:
    def __init__(self) -> None:
        self.by_process: dict[tuple[int, int], dict] = {}

    def record(self, rank: int, pid: int, usage: dict) -> None:
        self.by_process[(rank, pid)] = usage

    def summary(self) -> dict:
        """Per rank: CPU seconds over all its processes, the largest peak RSS; and the totals."""
        ranks: dict[int, dict] = {}
        for (rank, _pid), usage in self.by_process.items():
            entry = ranks.setdefault(rank, {"cpu_seconds": 0.0, "peak_rss_bytes": 0, "processes": 0})
            entry["cpu_seconds"] += usage["cpu_seconds"]
            entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], usage["peak_rss_bytes"])
            entry["processes"] += 1
        return {"workers": {str(rank): ranks[rank] for rank in sorted(ranks)},
                "worker_cpu_seconds": sum(r["cpu_seconds"] for r in ranks.values())}


def record(usage_log, rank: int) -> dict:
    usage = process_usage()
    usage_log.record.remote(rank, os.getpid(), usage)
    return usage
