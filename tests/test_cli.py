"""The `sweetspot` job commands on the real local cluster, and their bad-input lines.

Every command runs as a user runs it: the installed console script in a
subprocess, so exit codes and stderr are what a shell sees.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import local
from tests.conftest import E2E_TRAIN, ROOT, SAMPLE, sweetspot, sweetspot_process, train_document

# The stop test's job: one epoch of a quarter-width CNN on a fifth of the sample, one Train worker:
# about a minute, and small enough to share the 4-CPU local cluster.
TINY = ["--set", "train.epochs=1", "--set", "model.width=0.25", "--set", "data.train_fraction=0.2",
        "--set", "scaling.num_workers=1"]


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """A refused command: non-zero, no traceback, exactly one line on stderr."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def job_ids() -> set[str]:
    from cluster.client import JobClient

    return {job.submission_id for job in JobClient(local.DASHBOARD_URL).list() if job.submission_id}


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_spec(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump(train_document(**changes)))
    return path


# ---------------------------------------------------------------- the round trip


@pytest.fixture(scope="module")
def finished(e2e_train_run):
    """The end-to-end train job (tests/conftest.py): `sweetspot submit --wait` of a spec outside the project."""
    run, done = e2e_train_run
    return done.stdout.splitlines()[0].strip(), run.parent, done


@pytest.mark.timeout(900)
def test_submit_wait_runs_the_job_and_prints_the_results(finished):
    job_id, storage, done = finished
    assert job_id.startswith("raysubmit_")
    assert f"job {job_id}: SUCCEEDED" in done.stdout
    assert "test accuracy" in done.stdout  # the job's own log line, streamed
    assert f"results: {storage / 'e2e'}" in done.stdout and "test_accuracy" in done.stdout
    summary = json.loads((storage / "e2e" / "summary.json").read_text())
    assert summary["epochs_completed"] == E2E_TRAIN["epochs"]  # --set reached the job (the spec says 1)


@pytest.mark.timeout(120)
def test_status_logs_list_and_results_of_the_finished_job(finished):
    job_id, storage, _ = finished
    status = sweetspot("status", job_id)
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}: SUCCEEDED"), status.stdout
    logs = sweetspot("logs", job_id)
    assert logs.returncode == 0 and "test accuracy" in logs.stdout
    followed = sweetspot("logs", job_id, "--follow")  # a finished job: the whole log, then its status
    assert followed.returncode == 0 and "test accuracy" in followed.stdout
    assert f"job {job_id}: SUCCEEDED" in followed.stderr
    listed = sweetspot("list")
    assert listed.returncode == 0
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(job_id)]
    assert row.split()[1:3] == ["SUCCEEDED", "e2e"]
    results = sweetspot("results", "e2e", "--storage", storage)
    assert results.returncode == 0, results.stderr
    # The run folder the job printed ("results: <folder>") names the same results.
    assert sweetspot("results", f"{storage / 'e2e'}/").stdout == results.stdout
    summary = json.loads((storage / "e2e" / "summary.json").read_text())
    table = dict(line.split(None, 1) for line in results.stdout.splitlines()[3:])
    assert float(table["test_accuracy"]) == pytest.approx(summary["test_accuracy"], abs=1e-3)
    assert table["epochs_completed"] == str(E2E_TRAIN["epochs"]) and table["name"] == "e2e"


@pytest.mark.timeout(180)
def test_stop_a_submitted_job(ray_cluster, tmp_path):
    spec = write_spec(tmp_path / "stopme.yaml", name="cli-stop")
    done = sweetspot("submit", spec, *TINY, "--output", tmp_path / "runs")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert "sweetspot logs --follow" in done.stderr
    stopped = sweetspot("stop", job_id, "--wait")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines() == [f"{job_id}: stop requested", f"{job_id}: STOPPED"]
    assert sweetspot("status", job_id).stdout.startswith(f"{job_id}: STOPPED")
    again = sweetspot("stop", job_id)
    assert again.returncode == 0 and again.stdout.strip() == f"{job_id}: already STOPPED"


# ---------------------------------------------------------------- bad input: one line, nothing submitted


@pytest.mark.timeout(120)
def test_a_spec_that_fails_validation_submits_nothing(ray_cluster, tmp_path):
    bad = write_spec(tmp_path / "bad.yaml", name="cli-bad", train={"epochs": 0})
    before = sweetspot("list").stdout
    done = sweetspot("submit", bad, "--output", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "train.epochs" in done.stderr
    override = sweetspot("submit", write_spec(tmp_path / "good.yaml", name="cli-bad"), "--set", "model.widht=2")
    assert override.returncode == 2 and "model.widht" in override.stderr
    missing = sweetspot("submit", tmp_path / "nope.yaml")
    assert "cannot read the spec" in one_error_line(missing)
    assert sweetspot("list").stdout == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["status", "logs", "stop"])
def test_an_unknown_job_id_is_one_clear_line(ray_cluster, command):
    line = one_error_line(sweetspot(command, "raysubmit_doesnotexist"))
    assert line == (f"error: no job 'raysubmit_doesnotexist' on the Ray cluster at {local.DASHBOARD_URL} "
                    "(`sweetspot list` shows the jobs there)")


@pytest.mark.timeout(120)
def test_no_cluster_at_the_address_is_one_clear_line(ray_cluster, tmp_path):
    address = f"http://127.0.0.1:{unused_port()}"
    line = one_error_line(sweetspot("list", "--address", address))
    assert line.startswith(f"error: no Ray cluster answers at {address}")
    before = job_ids()
    spec = write_spec(tmp_path / "s.yaml", name="cli-nocluster")
    assert "no Ray cluster answers" in one_error_line(sweetspot("submit", spec, "--address", address))
    assert "no Ray cluster answers" in one_error_line(sweetspot("status", "x", env={"RAY_ADDRESS": address}))
    assert job_ids() == before


def test_results_of_a_name_without_a_summary_is_one_clear_line(tmp_path):
    line = one_error_line(sweetspot("results", "never-ran", "--storage", tmp_path))
    assert "no results named 'never-ran'" in line and str(tmp_path / "never-ran" / "summary.json") in line
    line = one_error_line(sweetspot("results", tmp_path / "runs" / "never-ran"))  # a run folder's path
    assert f"no results named 'never-ran' under {tmp_path / 'runs'}:" in line


def test_output_its_reader_stops_reading_ends_quietly():
    """`sweetspot results x | head` and the like: the reader leaves, the command stops without a traceback."""
    process = sweetspot_process("schema")
    process.stdout.close()  # gone before the first line
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141 and "Traceback" not in stderr, stderr


# ---------------------------------------------------------------- what submit sends (no cluster)


def test_a_spec_in_the_project_runs_by_its_relative_path(monkeypatch):
    from cluster.cli import build_submission

    monkeypatch.chdir(ROOT)
    spec, entrypoint, runtime_env = build_submission("configs/train_sample.yaml", ["train.epochs=2"], "runs", ROOT)
    assert entrypoint == f"python -m jobs configs/train_sample.yaml --set train.epochs=2 --output {ROOT / 'runs'}"
    assert runtime_env["working_dir"] == str(ROOT)
    assert runtime_env["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"
    assert spec.train.epochs == 2


def test_paths_are_rewritten_for_the_jobs_copy_of_the_working_dir(monkeypatch, tmp_path):
    from cluster.cli import SPEC_ENV, build_submission

    inside = ROOT / "configs"
    monkeypatch.chdir(inside)  # relative paths below are relative to configs/
    spec_file = write_spec(tmp_path / "spec.yaml", name="paths",
                           data={"train": "../data/fashion_mnist_sample/train.parquet",
                                 "test": "../../elsewhere/test.parquet", "num_classes": 10},
                           train={"init_from": "~/runs/base/checkpoint"})
    _, entrypoint, runtime_env = build_submission(str(spec_file), [], None, ROOT)
    assert "init_from" not in entrypoint  # ~ expands where the job runs
    # inside the project: relative to the working dir; outside it: absolute
    assert "--set data.train=data/fashion_mnist_sample/train.parquet" in entrypoint
    assert f"--set data.test={(ROOT / '../elsewhere/test.parquet').resolve()}" in entrypoint
    # a spec outside the working dir travels in the runtime env
    assert runtime_env["env_vars"][SPEC_ENV] == spec_file.read_text()
    assert entrypoint.startswith("spec=$(mktemp") and 'python -m jobs "$spec"' in entrypoint
    assert (SAMPLE / "train.parquet").exists()


# ---------------------------------------------------------------- admission: what submit reserves (no cluster)


class FakeClient:
    """Stands in for JobClient: a cluster of the given Capacity that records submissions."""

    address = "http://fake:8265"

    def __init__(self, capacity):
        self._capacity, self.submitted = capacity, []

    def capacity(self):
        return self._capacity

    def submit(self, entrypoint, runtime_env, metadata, **reserve):
        self.submitted.append(reserve)
        return "raysubmit_fake"


def submit_to(monkeypatch, capacity, spec: Path, *args: str) -> tuple[int, FakeClient]:
    from cluster import cli

    client = FakeClient(capacity)
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return cli.main(["submit", str(spec), *args]), client


def test_submit_reserves_the_jobs_cpu_need_of_the_pool(monkeypatch, tmp_path, capsys):
    from cluster.training.resources import Capacity
    from cluster.tuning.budget import DRIVER_MEMORY

    capacity = Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0, pool=4, pool_node_memory=8 * 2**30)
    code, client = submit_to(monkeypatch, capacity, write_spec(tmp_path / "s.yaml", name="cli-reserve"), *TINY)
    assert code == 0
    assert client.submitted == [{"entrypoint_resources": {"sweetspot_cpu": 2.0}, "entrypoint_memory": DRIVER_MEMORY}]
    assert "reserving 2 of the cluster's 4 sweetspot_cpu (1 workers x 1 CPU = 1 + data_cpus 1" in capsys.readouterr().err


def test_submit_without_the_pool_reserves_nothing_and_says_so(monkeypatch, tmp_path, capsys):
    from cluster.training.resources import Capacity

    code, client = submit_to(monkeypatch, Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0),
                             write_spec(tmp_path / "s.yaml", name="cli-nopool"), *TINY)
    assert code == 0 and client.submitted == [{"entrypoint_resources": {}, "entrypoint_memory": None}]
    assert "advertises no sweetspot_cpu resource: submitting without admission control" in capsys.readouterr().err


def test_a_job_larger_than_the_pool_is_refused_before_anything_is_submitted(monkeypatch, tmp_path, capsys):
    from cluster.training.resources import Capacity

    capacity = Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0, pool=4, pool_node_memory=8 * 2**30)
    code, client = submit_to(monkeypatch, capacity, write_spec(tmp_path / "s.yaml", name="cli-big"),
                             "--set", "scaling.num_workers=4")
    assert code == 2 and client.submitted == []
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("error: scaling asks for 4 workers x 1 CPU = 4 + data_cpus 1 = 5 CPUs, the cluster has 4; "
                    "lower scaling.num_workers or scaling.cpus_per_worker, or add nodes")


def test_the_local_head_advertises_the_pool_and_lets_queued_jobs_wait(monkeypatch, tmp_path):
    """What `sweetspot up` runs (captured, nothing started)."""
    calls = []
    monkeypatch.setattr(local, "is_running", lambda: False)
    monkeypatch.setattr(local, "dashboard_up", lambda timeout=2.0: True)
    monkeypatch.setattr(local, "TOKEN_FILE", tmp_path / "auth_token")
    monkeypatch.setattr(local.subprocess, "run", lambda command, **kw: calls.append((command, kw.get("env"))))
    assert local.up(num_cpus=6) is True
    (start, env), = [(c, e) for c, e in calls if c[1:3] == ["start", "--head"]]
    assert start[start.index("--num-cpus") + 1] == "6"
    assert json.loads(start[start.index("--resources") + 1]) == {"sweetspot_cpu": 6}
    assert int(env["RAY_JOB_START_TIMEOUT_SECONDS"]) >= 24 * 3600 and env["RAY_AUTH_MODE"] == "token"


NOISY_JOB = r"""
import sys
print("Job submission server address: http://127.0.0.1:8265")
print("Job 'raysubmit_abc' submitted successfully")
print("\x1b[36m(TrainController pid=1)\x1b[0m Started training worker group of size 1:")
print("[sweetspot 10:00:00] checking data: train.parquet")
print("\x1b[36m(scale_trial pid=2)\x1b[0m [sweetspot 10:00:05] training cnn-w1-d2 (3 epochs)")
print("\x1b[36m(SplitCoordinator pid=3)\x1b[0m Execution plan of Dataset train_1: InputDataBuffer[Input]")
print("Traceback (most recent call last): noise a successful job may print at shutdown")
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("status", [0, 1])
def test_the_console_shows_the_jobs_own_lines_and_the_log_keeps_everything(status, tmp_path, capsys):
    """What `sweetspot quickstart` prints of a `ray job submit` that follows a job."""
    import sys

    from cluster.cli import JOB_LOG, follow_compactly

    script = tmp_path / "job.py"
    script.write_text(NOISY_JOB)
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    assert follow_compactly([sys.executable, str(script), str(status)], run_folder) == status
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "submitted job raysubmit_abc (`sweetspot logs raysubmit_abc` for its full log)",
        "[sweetspot 10:00:00] checking data: train.parquet",
        "[sweetspot 10:00:05] training cnn-w1-d2 (3 epochs)"]
    if status == 0:
        # The whole output, noise included, is kept in the run folder; nothing more on the console.
        assert "Execution plan of Dataset" in (run_folder / JOB_LOG).read_text() and err == ""
    else:
        # A failed job: the end of its log, and where the rest is; the run folder is left as it was.
        assert "Execution plan of Dataset" in err and "the job failed" in err
        assert not (run_folder / JOB_LOG).exists()
