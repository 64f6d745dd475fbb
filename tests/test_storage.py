"""The run folder: files are whole or absent after an interrupted write; a folder of another spec is refused."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from cluster.spec import validate_document
from cluster.storage import RunStorage
from cluster.runs import CLAIM, Holder, JobFailed, claim_run_folder
from tests.conftest import train_document

OLD = json.dumps({"test_accuracy": 0.9, "variants": list(range(50))})
NEW = json.dumps({"test_accuracy": 0.8, "variants": list(range(5000))})


class Interrupted(Exception):
    pass


def interrupt(monkeypatch, point: str) -> None:
    """Make a local write fail at `point`; at "write" the first 100 bytes reach the disk, like a crash mid-write."""
    if point == "write":
        real_fdopen = os.fdopen

        def partial(handle, *args, **kwargs):
            file = real_fdopen(handle, *args, **kwargs)

            def write(data):
                file.raw.write(data[:100])
                raise Interrupted(point)

            file.write = write
            return file

        monkeypatch.setattr(os, "fdopen", partial)
        return

    def failing(*args, **kwargs):
        raise Interrupted(point)

    monkeypatch.setattr(os, point, failing)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "summary.json")


@pytest.mark.parametrize("point", ["write", "fsync", "replace"])
def test_an_interrupted_write_keeps_the_previous_summary_whole(tmp_path, monkeypatch, point):
    storage = RunStorage(str(tmp_path / "run"))
    storage.write_text("summary.json", OLD)
    interrupt(monkeypatch, point)
    with pytest.raises(Interrupted):
        storage.write_text("summary.json", NEW)
    monkeypatch.undo()
    assert json.loads(storage.read_text("summary.json")) == json.loads(OLD)
    assert leftovers(tmp_path / "run") == []


@pytest.mark.parametrize("point", ["write", "fsync", "replace"])
def test_an_interrupted_first_write_leaves_no_summary(tmp_path, monkeypatch, point):
    storage = RunStorage(str(tmp_path / "run"))
    interrupt(monkeypatch, point)
    with pytest.raises(Interrupted):
        storage.write_text("summary.json", NEW)
    monkeypatch.undo()
    assert not storage.exists("summary.json")
    assert leftovers(tmp_path / "run") == []


ME = Holder(job_id="01000000", submission_id=None, host="here", pid=1)


def ended(job_id: str) -> bool:
    """No other job is running (the cluster's job table, as the claim asks it)."""
    return False


def spec_of(**changes):
    return validate_document(train_document(**changes))


def test_a_folder_is_claimed_then_resumed_by_the_same_spec(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    spec = spec_of()
    claim_run_folder(spec, storage, ME, ended)
    written = storage.read_text("spec.yaml")
    assert yaml.safe_load(written)["train"]["epochs"] == 2
    claim_run_folder(spec_of(), storage, ME, ended)  # the same spec again resumes
    assert storage.read_text("spec.yaml") == written


def test_a_folder_of_a_different_spec_is_refused_unless_overwrite(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    claim_run_folder(spec_of(), storage, ME, ended)
    before = storage.read_text("spec.yaml")
    with pytest.raises(JobFailed, match=r"holds the results of a different spec; .*output\.overwrite=true"):
        claim_run_folder(spec_of(train={"epochs": 3}), storage, ME, ended)
    assert storage.read_text("spec.yaml") == before
    claim_run_folder(spec_of(train={"epochs": 3}, output={"storage": "/tmp/x", "overwrite": True}), storage, ME, ended)
    assert yaml.safe_load(storage.read_text("spec.yaml"))["train"]["epochs"] == 3


@pytest.mark.parametrize("same_spec", [True, False])
def test_overwrite_moves_the_whole_previous_run_aside_so_nothing_old_is_resumed(tmp_path, same_spec):
    """The old summary, checkpoints and Tune state used to stay: a train job resumed the old checkpoint."""
    storage = RunStorage(str(tmp_path / "run"))
    claim_run_folder(spec_of(), storage, ME, ended)
    storage.write_text("summary.json", "{\"old\": true}")
    storage.write_text("train/checkpoint_000001/model.weights.h5", "old weights")
    overwrite = {"output": {"storage": str(tmp_path), "overwrite": True}}
    claim_run_folder(spec_of(**overwrite) if same_spec else spec_of(train={"epochs": 5}, **overwrite), storage, ME, ended)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["claim.json", "spec.yaml"]  # a fresh folder
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "summary.json").read_text() == '{"old": true}'  # kept, not lost
    assert (aside / "train" / "checkpoint_000001" / "model.weights.h5").read_text() == "old weights"


def test_a_sweep_with_new_constraints_resumes_its_folder(tmp_path):
    def sweep(**changes):
        document = train_document(kind="sweep", **changes)
        del document["model"]
        return validate_document(document)

    storage = RunStorage(str(tmp_path / "run"))
    claim_run_folder(sweep(), storage, ME, ended)
    claim_run_folder(sweep(constraints={"max_size_kb": 50}, objective={"metric": "size_bytes_gzip"}), storage, ME, ended)
    assert yaml.safe_load(storage.read_text("spec.yaml"))["constraints"]["max_size_kb"] == 50
    with pytest.raises(JobFailed, match="different spec"):
        claim_run_folder(sweep(search={"widths": [0.5]}), storage, ME, ended)


def test_a_resumed_sweep_finds_each_scales_final_checkpoint_in_storage_not_in_tunes_state(tmp_path):
    """The export after a driver died reads our checkpoints' meta.json; an early stop is a recorded settlement."""
    from cluster.tuning.space import Scale
    from cluster.tuning.sweep import STOPPED, final_checkpoint, settled, trained_epochs

    document = train_document(kind="sweep", search={"widths": [0.5]})
    del document["model"]
    spec = validate_document(document)  # train.epochs: 2
    storage, scale = RunStorage(str(tmp_path)), Scale("cnn", 0.5, 2)
    assert final_checkpoint(spec, storage, scale) is None
    for stamp, epoch in (("2026-12-02_07-00-01.1", 1), ("2026-12-02_07-00-02.2", 2), ("2026-12-02_07-00-03.3", 1)):
        folder = tmp_path / "trials" / scale.name / f"checkpoint_{stamp}"
        folder.mkdir(parents=True)
        if stamp != "2026-12-02_07-00-03.3":  # the newest is half-written: no meta.json
            (folder / "meta.json").write_text(json.dumps({"epoch": epoch}))
    assert final_checkpoint(spec, storage, scale).path.endswith("checkpoint_2026-12-02_07-00-02.2")
    assert not settled(storage, scale)
    storage.write_text(STOPPED.format(scale=scale.name), json.dumps({"epochs": 1}))
    assert settled(storage, scale) and trained_epochs(storage, scale) == 1


def test_a_folder_held_by_a_running_job_is_refused_with_its_id_and_nothing_is_written(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    other = Holder(job_id="02000000", submission_id="raysubmit_abc", host="node", pid=7)
    claim_run_folder(spec_of(), storage, other, ended)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(JobFailed, match=r"in use by job raysubmit_abc \(driver job 02000000.*sweetspot stop raysubmit_abc"):
        claim_run_folder(spec_of(), storage, ME, running=lambda job_id: job_id == "02000000")
    overwrite = spec_of(train={"epochs": 5}, output={"storage": str(tmp_path), "overwrite": True})
    with pytest.raises(JobFailed, match="in use by"):  # not even overwrite takes a live job's folder
        claim_run_folder(overwrite, storage, ME, running=lambda job_id: job_id == "02000000")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert not list(tmp_path.glob("run.replaced-*"))


def test_a_claim_left_by_a_job_that_ended_is_taken_over(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    killed = Holder(job_id="02000000", submission_id=None, host="node", pid=7)
    claim_run_folder(spec_of(), storage, killed, ended)
    claim_run_folder(spec_of(), storage, ME, running=lambda job_id: job_id == ME.job_id)
    claim = json.loads(storage.read_text(CLAIM))
    assert claim["holder"]["job_id"] == ME.job_id and len(claim["spec_digest"]) == 64


def test_of_two_jobs_claiming_a_new_folder_at_once_one_is_refused(tmp_path):
    """The claim file is created atomically (a hard link): exactly one of the racing jobs gets it."""
    import threading

    storage = RunStorage(str(tmp_path / "run"))
    holders = [Holder(job_id=f"0{i}000000", submission_id=None, host="node", pid=i) for i in range(2, 8)]
    outcomes, start = {}, threading.Barrier(len(holders))

    def claim(holder):
        start.wait()
        try:
            claim_run_folder(spec_of(), storage, holder, running=lambda job_id: True)
            outcomes[holder.job_id] = "claimed"
        except JobFailed:
            outcomes[holder.job_id] = "refused"

    threads = [threading.Thread(target=claim, args=(h,)) for h in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["claimed"] + ["refused"] * (len(holders) - 1)
    assert json.loads(storage.read_text(CLAIM))["holder"]["job_id"] == next(
        job for job, outcome in outcomes.items() if outcome == "claimed")


@pytest.fixture
def small_disk(tmp_path):
    """A real 32 KB filesystem (tmpfs), so writes fail with ENOSPC as on a full disk."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()[:200]}): needs root")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_storage_full_while_the_summary_is_written_fails_cleanly_and_keeps_the_previous_one(small_disk):
    from cluster.storage import StorageFull

    storage = RunStorage(str(small_disk / "run"))
    storage.write_text("summary.json", OLD)
    with pytest.raises(StorageFull) as error:
        storage.write_text("summary.json", "x" * 200_000)
    assert error.value.strerror.startswith(f"{small_disk}/run/summary.json: no space left on the storage")
    assert storage.read_text("summary.json") == OLD
    assert sorted(p.name for p in (small_disk / "run").iterdir()) == ["summary.json"]  # no temporary file left


def test_a_checkpoint_cut_off_by_a_full_disk_is_passed_over_and_the_previous_one_resumes(small_disk):
    """Epoch 2's checkpoint does not fit: it is never read back as valid, and epoch 1's still restores."""
    import tf_keras as keras

    from cluster.training import checkpoints

    def model_and_optimizer(units: int):
        model = keras.Sequential([keras.layers.Input((units,)), keras.layers.Dense(units)])
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        return model, optimizer

    small, small_optimizer = model_and_optimizer(4)  # a few hundred bytes
    first, second = small_disk / "checkpoint_1", small_disk / "checkpoint_2"
    first.mkdir()
    checkpoints.save(first, small, small_optimizer, {"epoch": 1, "history": []})
    second.mkdir()
    big, big_optimizer = model_and_optimizer(256)  # 790 KB with the optimizer's slots: the disk holds 32 KB
    with pytest.raises(Exception, match="No space left on device"):
        checkpoints.save(second, big, big_optimizer, {"epoch": 2, "history": []})
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.read_meta(second)
    assert checkpoints.restore(first, small, small_optimizer)["epoch"] == 1


def test_a_job_that_fills_the_storage_ends_with_one_line_and_exit_1(monkeypatch, capsys):
    """The runner's mapping (the write itself is tested on a real full filesystem above)."""
    import errno

    from cluster.storage import StorageFull
    from cluster.training import train_job
    from cluster.training.resources import ADMITTED_ENV
    from jobs.runner import run

    def fill(spec):
        raise StorageFull(errno.ENOSPC, "/runs/e2e/summary.json: no space left on the storage (No space left "
                                        "on device); the file was not written and its previous version, if "
                                        "any, is intact")

    monkeypatch.setattr(train_job, "run_train", fill)
    monkeypatch.setenv(ADMITTED_ENV, "1")  # as `sweetspot submit` sends it: no share of its own to hold
    assert run(spec_of()) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert error == ["error: /runs/e2e/summary.json: no space left on the storage (No space left on device); the "
                     "file was not written and its previous version, if any, is intact"]


def test_a_claim_whose_holder_cannot_be_asked_about_is_refused_with_the_way_out(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    claim_run_folder(spec_of(), storage, Holder(job_id="02000000", submission_id=None, host="node", pid=7), ended)

    def unreachable(job_id):
        raise ConnectionError("dashboard unreachable")

    with pytest.raises(JobFailed, match=r"cannot say whether it still runs \(ConnectionError: dashboard unreachable\); "
                                        r"if it has ended, delete .*claim.json and submit again"):
        claim_run_folder(spec_of(), storage, ME, unreachable)
