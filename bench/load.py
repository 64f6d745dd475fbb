"""Load: submit many small jobs at once through the Jobs API and check every one finishes with its output.

    RAY_AUTH_MODE=token .venv/bin/python -m bench.load --jobs 20                 # tiny evaluate jobs
    RAY_AUTH_MODE=token .venv/bin/python -m bench.load --jobs 20 --kind mix      # every 4th a tiny train job

Each job goes in the way `sweetspot submit` sends it (spec validated here, the
job's CPU need reserved as `entrypoint_resources`, so Ray queues what does not
fit), all within a second or two. The statuses are polled until every job has
ended; the result is written to bench/results/load.json: wall time, the peak
number RUNNING at once (and the peak CPUs they reserved), every job's final
status, and whether its summary.json was written. Exit code 0 only when every
job SUCCEEDED with its summary.

Job kinds: `evaluate` (one tiny TFLite model measured on the bundled test split,
1 CPU each), `train` (1 epoch of a quarter-width CNN on a fifth of the bundled
sample, 1 Train worker + the Ray Data stage: 2 CPUs each), `mix` (both).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "fashion_mnist_sample"
RESULTS = ROOT / "bench" / "results" / "load.json"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def tiny_tflite(path: Path) -> Path:
    """A quarter-width CNN for 28x28x1, 10 classes, as float TFLite (untrained: evaluate only measures it)."""
    from cluster.evaluation.export import export_tflite
    from cluster.models import ModelShape, build_model

    return export_tflite(build_model("cnn", ModelShape((28, 28, 1), 10), 0.25, 1), path)


def evaluate_document(name: str, artifact: Path, storage: Path) -> dict:
    return {"version": 1, "kind": "evaluate", "name": name,
            "data": {"test": str(SAMPLE / "test.parquet"), "num_classes": 10, "image_shape": [28, 28, 1]},
            "artifacts": [{"name": "tiny", "path": str(artifact)}],
            "evaluation": {"num_threads": 1, "repetitions": 10, "batch_sizes": [1], "memory": False,
                           "min_seconds": 0.1},
            "cpus": 1, "output": {"storage": str(storage)}}


def train_document(name: str, storage: Path) -> dict:
    return {"version": 1, "kind": "train", "name": name,
            "data": {"train": str(SAMPLE / "train.parquet"), "test": str(SAMPLE / "test.parquet"),
                     "num_classes": 10, "image_shape": [28, 28, 1], "train_fraction": 0.2},
            "model": {"family": "cnn", "width": 0.25, "depth": 1},
            "train": {"epochs": 1, "global_batch_size": 128},
            "scaling": {"num_workers": 1, "cpus_per_worker": 1, "data_cpus": 1},
            "evaluation": {"num_threads": 1, "repetitions": 10, "batch_sizes": [1], "memory": False,
                           "min_seconds": 0.1},
            "output": {"storage": str(storage)}}


def write_specs(kind: str, jobs: int, folder: Path, storage: Path, prefix: str) -> list[Path]:
    """`jobs` spec files of `kind` (mix: every 4th a train job) under `folder`."""
    artifact = tiny_tflite(folder / "tiny.tflite") if kind in ("evaluate", "mix") else None
    paths = []
    for index in range(jobs):
        name = f"{prefix}-{index:03d}"
        train = kind == "train" or (kind == "mix" and index % 4 == 0)
        document = train_document(name, storage) if train else evaluate_document(name, artifact, storage)
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        paths.append(path)
    return paths


@dataclass
class Poll:
    """Statuses of the submitted jobs, polled until all have ended."""

    peak_running: int = 0
    peak_reserved_cpus: float = 0.0
    timeline: list = field(default_factory=list)  # (seconds, pending, running, done)


def submit_one(client, spec_path: Path, capacity, working_dir: str | None = None) -> tuple[str, object]:
    """What `sweetspot submit SPEC` does, minus printing; `working_dir` replaces the upload by a package URI."""
    from cluster.cli import build_submission
    from cluster.tuning.budget import admission

    spec, entrypoint, runtime_env = build_submission(str(spec_path), [], None, ROOT, ROOT)
    if working_dir:
        runtime_env["working_dir"] = working_dir
    ticket = admission(spec, capacity)
    metadata = {"sweetspot_name": spec.name, "sweetspot_storage": spec.output.storage,
                "sweetspot_spec": str(spec_path), "sweetspot_cpus": f"{ticket.need.cpus:g}"}
    job_id = client.submit(entrypoint, runtime_env, metadata, entrypoint_resources=ticket.resources,
                           entrypoint_memory=ticket.memory)
    return job_id, ticket


def poll(client, job_ids: list[str], needs: dict[str, float], started: float, timeout: float,
         interval: float = 1.0) -> tuple[dict[str, str], Poll]:
    """Every job's final status (or its last one at the timeout), and the peaks seen meanwhile."""
    seen = Poll()
    wanted = set(job_ids)
    while True:
        statuses = {job.submission_id: str(job.status) for job in client.list() if job.submission_id in wanted}
        running = [job for job, status in statuses.items() if status == "RUNNING"]
        done = sum(status in TERMINAL for status in statuses.values())
        seen.peak_running = max(seen.peak_running, len(running))
        seen.peak_reserved_cpus = max(seen.peak_reserved_cpus, sum(needs[job] for job in running))
        seen.timeline.append((round(time.monotonic() - started, 1), len(wanted) - done - len(running),
                              len(running), done))
        if done == len(wanted) or time.monotonic() - started > timeout:
            return statuses, seen
        time.sleep(interval)


def run_load(address: str | None, jobs: int, kind: str, storage: Path, timeout: float,
             prefix: str = "load") -> dict:
    """Submit `jobs` jobs at once, wait for all, and report; the outputs go under `storage`."""
    from cluster.client import JobClient
    from cluster.storage import RunStorage

    client = JobClient(address)
    capacity = client.capacity()
    if capacity.pool is None:
        raise SystemExit(f"the cluster at {client.address} advertises no sweetspot_cpu: restart it with "
                         "`sweetspot up` (cluster/local.py adds it) before a load run")
    prefix = f"{prefix}-{time.strftime('%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="sweetspot-load-") as folder:
        specs = write_specs(kind, jobs, Path(folder), storage, prefix)
        started = time.monotonic()
        # The first submission uploads the project; the rest name the uploaded package, so
        # the burst is HTTP requests only, not twenty zips of the same folder.
        first = submit_one(client, specs[0], capacity)
        package = client.info(first[0]).runtime_env["working_dir"]
        with ThreadPoolExecutor(max_workers=8) as pool:
            submitted = [first] + list(pool.map(lambda path: submit_one(client, path, capacity, package), specs[1:]))
        submit_seconds = time.monotonic() - started
        needs = {job_id: ticket.need.cpus for job_id, ticket in submitted}
        statuses, seen = poll(client, list(needs), needs, started, timeout)
        wall = time.monotonic() - started
    names = {job_id: path.stem for (job_id, _), path in zip(submitted, specs)}
    outputs = {job_id: RunStorage(f"{storage}/{names[job_id]}").exists("summary.json") for job_id in needs}
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "jobs": jobs,
        "kind": kind,
        "cluster": {"address": client.address, "cpus": capacity.cpus, "sweetspot_cpu": capacity.pool},
        "submit_seconds": round(submit_seconds, 2),
        "wall_seconds": round(wall, 1),
        "peak_running": seen.peak_running,
        "peak_reserved_cpus": seen.peak_reserved_cpus,
        "statuses": counts,
        "all_succeeded": len(statuses) == jobs and counts.get("SUCCEEDED", 0) == jobs,
        "all_outputs": all(outputs.values()),
        "lost": jobs - len(statuses),
        "per_job": [{"id": job_id, "name": names[job_id], "cpus": needs[job_id], "status": statuses.get(job_id),
                     "summary_json": outputs[job_id]} for job_id in needs],
        "timeline": seen.timeline,
    }


class MemoryWatch:
    """Memory while the load runs (psutil, this host only): the host's used-memory high-water mark, and the
    job drivers' (`python -m jobs` processes started after the watch began) largest RSS and largest RSS sum."""

    def __init__(self, interval: float = 1.0):
        import psutil

        self._psutil, self.interval = psutil, interval
        self.started = time.time()
        self.baseline = self.peak = psutil.virtual_memory().used
        self.driver_peak = self.drivers_sum_peak = 0
        self.drivers_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def drivers(self) -> list[int]:
        """RSS of every job driver started since the watch began."""
        sizes = []
        for process in self._psutil.process_iter(["cmdline", "create_time", "memory_info"]):
            info = process.info
            command = info.get("cmdline") or []
            if (info.get("create_time") or 0) >= self.started and "-m" in command and "jobs" in command \
                    and info.get("memory_info") is not None:
                sizes.append(info["memory_info"].rss)
        return sizes

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._psutil.virtual_memory().used)
            sizes = self.drivers()
            self.driver_peak = max([self.driver_peak, *sizes])
            self.drivers_sum_peak = max(self.drivers_sum_peak, sum(sizes))
            self.drivers_at_once = max(self.drivers_at_once, len(sizes))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        gib = 2**30
        return {"host_used_before_gib": round(self.baseline / gib, 2), "host_used_peak_gib": round(self.peak / gib, 2),
                "driver_rss_peak_gib": round(self.driver_peak / gib, 2),
                "drivers_rss_sum_peak_gib": round(self.drivers_sum_peak / gib, 2),
                "drivers_alive_at_once_peak": self.drivers_at_once}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--kind", choices=("evaluate", "train", "mix"), default="evaluate")
    parser.add_argument("--address", help="the cluster's dashboard URL (default: $RAY_ADDRESS, else the local one)")
    parser.add_argument("--storage", type=Path, default=Path(tempfile.gettempdir()) / "sweetspot-load",
                        help="where the jobs write their results")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up polling after this many seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with MemoryWatch() as memory:
        report = run_load(args.address, args.jobs, args.kind, args.storage.resolve(), args.timeout)
    report["memory"] = memory.report()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['jobs']} {args.kind} jobs: {report['statuses']}, {report['wall_seconds']} s wall, "
          f"peak {report['peak_running']} running at once ({report['peak_reserved_cpus']:g} of "
          f"{report['cluster']['sweetspot_cpu']:g} sweetspot_cpu reserved), all outputs: {report['all_outputs']}; "
          f"memory: {report['memory']}; {args.out}")
    return 0 if report["all_succeeded"] and report["all_outputs"] else 1


if __name__ == "__main__":
    sys.exit(main())
