"""What every benchmark shares: run context, machine facts, statistics, jobs, probes, result files.

Each benchmark module under `bench/` defines `NAME`, `DEFAULT` and `QUICK`
settings (plain dicts) and `run(settings, ctx) -> dict`; `bench.__main__` runs
them, adds the machine, the versions and the wall time, and writes
`<results>/<NAME>.json`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Every benchmark, in the order they run: inference times the artifacts the compression and frontier
# benchmarks made.
BENCHMARKS = ("input_pipeline", "hardware", "compression", "sweep", "growth", "frontier", "inference")
RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = RESULTS / "quick"
DOC = ROOT / "docs" / "benchmarks.md"
SAMPLE = ROOT / "data" / "fashion_mnist_sample"
# The shared copies beside the project, as the full-data configs reference them (../shared/...).
SHARED = Path(os.environ.get("SWEETSPOT_SHARED", ROOT.parent / "shared"))
FULL_DATA = SHARED / "datasets" / "fashion_mnist"
ANCHOR_RECIPE = SHARED / "anchors" / "tfmot_recipe.py"
PACKAGES = ("ray", "tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy", "pyarrow", "pillow",
            "matplotlib")
AUGMENT = [{"flip_left_right": {"p": 0.5}}, {"random_translate": {"p": 0.5, "max_pixels": 2}}]


@dataclass(frozen=True)
class Context:
    """Where one bench run writes: results (JSON), scratch (job outputs, logs), and its mode."""

    quick: bool
    results: Path
    scratch: Path
    # Jobs this bench run has finished, by what they compute (see `job_key`): a benchmark
    # asking for a run another one already made gets that run's results, not a second run.
    finished_jobs: dict = field(default_factory=dict, compare=False, repr=False)
    # The toolkit recipe's runs this bench run has made, by data folder (`compression.recipe_runs`).
    recipe_runs: dict = field(default_factory=dict, compare=False, repr=False)

    def settings(self, module) -> dict:
        return dict(module.QUICK if self.quick else module.DEFAULT)

    def fresh(self, name: str) -> Path:
        """An empty scratch folder: a job finding its old results there would resume instead of running."""
        path = self.scratch / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def steady(values: list[float]) -> float:
    """Median of per-epoch figures after the first (tracing, warm caches), or the only one."""
    return median(values[1:] if len(values) > 1 else values)


def line_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line y = intercept + slope x, with R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - residual / total if total else 1.0}


# ---------------------------------------------------------------- machine and versions


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) * 1024 for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal")), None)
    facts = {"cpu": model, "logical_cpus": os.cpu_count(), "cpus_available": len(os.sched_getaffinity(0)),
             "memory_bytes": memory, "os": platform.platform(), "python": platform.python_version(),
             "hostname": platform.node()}
    try:
        import ray

        if ray.is_initialized():
            facts["ray_cluster_cpus"] = ray.cluster_resources().get("CPU")
            facts["ray_nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
    except ImportError:
        pass
    return facts


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


# ---------------------------------------------------------------- data specs


def data_section(full: bool, fraction: float = 1.0) -> dict:
    """The spec's `data` section: full Fashion-MNIST (shared copy) or the bundled sample."""
    if full:
        train, test = str(FULL_DATA / "train-*.parquet"), str(FULL_DATA / "test-*.parquet")
    else:
        train, test = str(SAMPLE / "train.parquet"), str(SAMPLE / "test.parquet")
    return {"train": train, "test": test, "num_classes": 10, "image_shape": [28, 28, 1],
            "validation_fraction": 0.1, "train_fraction": fraction}


# The float CNN recipe the compression baseline and the growth points share (so a quick run trains it once).
CNN = {"family": "cnn", "width": 1.0, "depth": 2}
CNN_OPTIMIZER = {"name": "adamw", "learning_rate": 0.002, "weight_decay": 0.0001}
EVALUATION = {"num_threads": 1, "repetitions": 100, "batch_sizes": [256], "memory": False}
# A smoke run's figures are not the real ones: its jobs time each artifact this long, not the spec's 1 s.
QUICK_MIN_SECONDS = 0.1


def cnn_train_document(name: str, data: dict, epochs: int, storage: Path) -> dict:
    """A train job of the float CNN, batch 256, measured with the benchmarks' evaluation settings."""
    return train_document(name, data, CNN, {"epochs": epochs, "global_batch_size": 256, "optimizer": CNN_OPTIMIZER},
                          storage, evaluation=EVALUATION)


def train_document(name: str, data: dict, model: dict, train: dict, storage: Path, **extra) -> dict:
    """A `kind: train` spec with the project's augmentation and 2 x 1-CPU workers."""
    return {"version": 1, "kind": "train", "name": name, "data": data, "augment": AUGMENT, "model": model,
            "train": {"seed": 0, **train}, "scaling": {"num_workers": 2, "cpus_per_worker": 1},
            "output": {"storage": str(storage), "overwrite": True}, **extra}


# ---------------------------------------------------------------- the cluster


def ensure_cluster() -> bool:
    """Start the local head as `sweetspot up` does (its logical CPUs) unless one runs; True when this call started it."""
    from cluster import local
    from cluster.cli import DEFAULT_LOCAL_CPUS

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    return local.up(num_cpus=DEFAULT_LOCAL_CPUS)


def connect(*modules) -> None:
    """Make this process a driver of the local cluster; `modules` (with Ray Train loops) travel by value."""
    import ray
    from ray import cloudpickle

    import cluster

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False, runtime_env={"env_vars": cluster.WORKER_ENV})


def client_env() -> dict:
    from cluster import local

    env = local.client_env()
    env.setdefault("RAY_ADDRESS", "auto")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def job_key(document: dict) -> str:
    """What a job computes: its validated spec, every default filled in, without its name and output."""
    from cluster.spec import validate_document

    spec = validate_document(document).model_dump(mode="json")
    spec.pop("name")
    spec.pop("output")
    return json.dumps(spec, sort_keys=True)


def run_job(document: dict, ctx: Context) -> tuple[dict, float]:
    """Run a job spec's driver (`python -m jobs spec.yaml`) against the local cluster.

    Returns its summary.json and the driver's wall time. The job's log goes to
    `<scratch>/logs/<name>.log`; a failed job raises with the log's tail. A job
    that computes what an earlier job of this bench run computed is not run
    again: the earlier one's results are returned. A quick run's jobs time their
    artifacts for `QUICK_MIN_SECONDS`.
    """
    if ctx.quick:
        document = {**document, "evaluation": {**document.get("evaluation", {}), "min_seconds": QUICK_MIN_SECONDS}}
    name = document["name"]
    key = job_key(document)
    if key in ctx.finished_jobs:
        earlier, summary, wall = ctx.finished_jobs[key]
        log(f"job {name}: the same run as {earlier}, reused")
        return summary, wall
    storage = Path(document["output"]["storage"])
    shutil.rmtree(storage / name, ignore_errors=True)
    specs, logs = ctx.scratch / "specs", ctx.scratch / "logs"
    specs.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    spec_path = specs / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(document, sort_keys=False))
    log(f"job {name} ({document['kind']}) started; log: {logs / (name + '.log')}")
    started = time.perf_counter()
    with open(logs / f"{name}.log", "w") as out:
        done = subprocess.run([sys.executable, "-m", "jobs", str(spec_path)], cwd=ROOT, env=client_env(),
                              stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "".join((logs / f"{name}.log").read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"job {name} failed (exit {done.returncode}):\n{tail}")
    log(f"job {name} finished in {wall:.0f} s")
    summary = json.loads((storage / name / "summary.json").read_text())
    ctx.finished_jobs[key] = (name, summary, wall)
    return summary, wall


def probe_env() -> dict:
    env = client_env()
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_probe(module: str, payload: dict, timeout: float = 1800.0) -> dict:
    """Run `python -m <module> --probe JSON` in a fresh process (its own TF thread pools); its last line is JSON."""
    done = subprocess.run([sys.executable, "-m", module, "--probe", json.dumps(payload)], cwd=ROOT, env=probe_env(),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} probe failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    """Ports free on this host now (each bound, then released, so the OS picked distinct ones)."""
    import socket

    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("localhost", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def run_probe_group(module: str, payload: dict, workers: int, timeout: float = 1800.0) -> dict:
    """`run_probe` as `workers` processes at once, each told the others' addresses through `TF_CONFIG` (as Ray
    Train's workers are), for MultiWorkerMirroredStrategy outside Ray; returns worker 0's result. A worker
    that fails stops the others, which would otherwise wait for it in the strategy's first collective."""
    import tempfile

    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    with tempfile.TemporaryDirectory() as folder:
        processes = []
        for index in range(workers):
            env = {**probe_env(), "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                                           "task": {"type": "worker", "index": index}})}
            with open(f"{folder}/{index}.out", "w") as out, open(f"{folder}/{index}.err", "w") as err:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", module, "--probe",
                     json.dumps({**payload, "workers": workers, "rank": index})],
                    cwd=ROOT, env=env, stdout=out, stderr=err))
        deadline = time.monotonic() + timeout
        stopped, timed_out = set(), False
        try:
            while any(process.poll() is None for process in processes):
                timed_out = time.monotonic() > deadline
                if timed_out or any(process.poll() not in (None, 0) for process in processes):
                    break
                time.sleep(0.2)
        finally:
            for index, process in enumerate(processes):
                if process.poll() is None:
                    stopped.add(index)
                    process.kill()
                    process.wait()
        # The worker that failed first says why; the ones stopped here only say they were stopped.
        for index in sorted(range(workers), key=lambda i: i in stopped):
            if processes[index].returncode != 0:
                why = (f"exit {processes[index].returncode}" if index not in stopped
                       else f"stopped after {timeout:.0f} s" if timed_out else "stopped")
                raise RuntimeError(f"{module} probe, worker {index} of {workers}, failed ({why}):\n"
                                   f"{Path(folder, f'{index}.err').read_text()[-3000:]}")
        return json.loads(Path(folder, "0.out").read_text().strip().splitlines()[-1])


def probe_main(handler) -> None:
    """The `--probe JSON` entry point of a module: print `handler(payload)` as the last stdout line."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", required=True)
    args = parser.parse_args()
    print(json.dumps(handler(json.loads(args.probe))), flush=True)


def ray_train_epochs(result) -> list[dict]:
    """Every epoch's metrics of a `run_epochs` Ray Train run, from its last checkpoint's history.

    (Ray Train's `metrics_dataframe` holds only the rows of the checkpoints it kept, 2 here.)
    """
    from cluster.training import checkpoints

    with result.checkpoint.as_directory() as directory:
        return checkpoints.read_meta(directory)["history"]


# ---------------------------------------------------------------- results


def result_path(results: Path, name: str) -> Path:
    return results / f"{name}.json"


def write_result(results: Path, name: str, data: dict) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = result_path(results, name)
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")
    return path


def read_result(results: Path, name: str) -> dict | None:
    path = result_path(results, name)
    return json.loads(path.read_text()) if path.exists() else None
