"""`scaling` -> Ray Train's ScalingConfig, checked on CPU (no GPU needed to read the mapping), and the CPU
need one job reserves of the cluster's admission pool."""

from __future__ import annotations

import pytest

from cluster.spec import ScalingSpec, SpecError, validate_document
from cluster.training.resources import ADMISSION_RESOURCE, Capacity, ResourceError
from cluster.training.trainer import scaling_config
from cluster.tuning.budget import DRIVER_MEMORY, admission, job_need
from tests.conftest import train_document


def test_gpu_workers_get_gpus_cpus_and_the_placement_strategy():
    config = scaling_config(ScalingSpec(num_workers=4, use_gpu=True, gpus_per_worker=1, cpus_per_worker=6,
                                        placement_strategy="SPREAD"))
    assert config.num_workers == 4 and config.use_gpu is True
    assert config.resources_per_worker == {"CPU": 6, "GPU": 1}
    assert config.placement_strategy == "SPREAD"
    assert config.total_resources == {"CPU": 24, "GPU": 4}


def test_cpu_workers_ask_for_no_gpu():
    config = scaling_config(ScalingSpec(num_workers=2, cpus_per_worker=1))
    assert config.use_gpu is False and config.resources_per_worker == {"CPU": 1}
    assert config.placement_strategy == "PACK"


def test_fractional_gpus_and_strict_placement_pass_through():
    config = scaling_config(ScalingSpec(num_workers=2, use_gpu=True, gpus_per_worker=0.5,
                                        placement_strategy="STRICT_PACK"))
    assert config.resources_per_worker["GPU"] == 0.5 and config.placement_strategy == "STRICT_PACK"


@pytest.mark.parametrize("scaling, message", [
    ({"use_gpu": True, "gpus_per_worker": 0}, "gpus_per_worker is 0"),
    ({"use_gpu": False, "gpus_per_worker": 1}, "use_gpu is false"),
    ({"placement_strategy": "ANYWHERE"}, "placement_strategy"),
])
def test_inconsistent_scaling_is_refused_before_submission(scaling, message):
    with pytest.raises(SpecError, match=message):
        validate_document(train_document(scaling={"num_workers": 2, **scaling}))


# ---------------------------------------------------------------- one job's CPU need and admission (no cluster)


def _spec(**changes):
    return validate_document(train_document(**changes))


FOUR_CPUS = Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0, pool=4, pool_node_memory=8 * 2**30)


def test_a_train_jobs_need_is_its_workers_plus_the_data_stage():
    need = job_need(_spec(scaling={"num_workers": 1, "cpus_per_worker": 1}), FOUR_CPUS)
    assert need.cpus == 2 and need.arithmetic == "1 workers x 1 CPU = 1 + data_cpus 1 = 2 CPUs"
    need = job_need(_spec(scaling={"num_workers": 2, "cpus_per_worker": 1.5, "data_cpus": 0.5}), FOUR_CPUS)
    assert need.cpus == 3.5


def test_a_sweeps_need_is_its_concurrent_trials_each_with_its_driver():
    sweep = validate_document({**{k: v for k, v in train_document().items() if k not in ("model", "augment")},
                               "kind": "sweep", "scaling": {"num_workers": 1},
                               "tune": {"max_concurrent_trials": 4, "trial_driver_cpus": 0.1}})
    need = job_need(sweep, Capacity(cpus=8, gpus=0, node_cpus=8, node_gpus=0, pool=8))
    # each trial 0.1 + 1 + 1 = 2.1; 8 // 2.1 = 3 fit, so 3 of the 4 run at once
    assert need.cpus == pytest.approx(6.3) and need.arithmetic.startswith("3 trial(s) at once x 2.1 = 6.3 CPUs")


def test_an_evaluate_jobs_need_is_its_measuring_task():
    evaluate = validate_document({"kind": "evaluate", "name": "e", "cpus": 2,
                                  "data": {"test": "t.parquet", "num_classes": 10},
                                  "artifacts": [{"name": "a", "path": "a.tflite"}]})
    assert job_need(evaluate, FOUR_CPUS).cpus == 2
    with pytest.raises(ResourceError, match="cpus=2 but the largest node has 1 CPUs"):
        job_need(evaluate, Capacity(cpus=4, gpus=0, node_cpus=1, node_gpus=0))


def test_admission_reserves_the_whole_need_and_driver_memory():
    ticket = admission(_spec(scaling={"num_workers": 1}), FOUR_CPUS)
    assert ticket.resources == {ADMISSION_RESOURCE: 2.0} and ticket.memory == DRIVER_MEMORY
    assert "reserving 2 of the cluster's 4 sweetspot_cpu" in ticket.note


def test_without_the_admission_resource_the_job_goes_in_unreserved_and_says_so():
    ticket = admission(_spec(scaling={"num_workers": 1}), Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0))
    assert ticket.resources == {} and ticket.memory is None
    assert "advertises no sweetspot_cpu" in ticket.note and "without admission control" in ticket.note


def test_a_job_larger_than_the_pool_is_refused_with_the_arithmetic():
    # 3 workers + 1 data = 4 CPUs fits the cluster's CPUs, but the pool admits at most 3.
    capacity = Capacity(cpus=4, gpus=0, node_cpus=4, node_gpus=0, pool=3, pool_node_memory=8 * 2**30)
    with pytest.raises(ResourceError, match=r"needs 3 workers x 1 CPU = 3 \+ data_cpus 1 = 4 CPUs, but the "
                                            r"cluster admits jobs of at most 3 CPUs \(sweetspot_cpu\)"):
        admission(_spec(scaling={"num_workers": 3}), capacity)
    with pytest.raises(ResourceError, match=r"= 5 CPUs, the cluster has 4"):  # more than every CPU
        admission(_spec(scaling={"num_workers": 4}), FOUR_CPUS)


def test_capacity_of_nodes_sums_the_pool_of_the_nodes_advertising_it():
    capacity = Capacity.of_nodes([{"CPU": 4, "memory": 8e9, ADMISSION_RESOURCE: 12},
                                  {"CPU": 8, "GPU": 1, "memory": 30e9}])
    assert (capacity.cpus, capacity.gpus, capacity.node_cpus, capacity.node_gpus) == (12, 1, 8, 1)
    assert capacity.pool == 12 and capacity.pool_node_memory == 8e9
    assert Capacity.of_nodes([{"CPU": 4}]).pool is None


@pytest.mark.parametrize("rows, batch, workers, gpus, expected", [
    (1000, 100, 2, 0, (50, 50, 10)),    # CPU: one replica per worker
    (1000, 100, 2, 3, (16, 48, 10)),    # 6 replicas: 100 // 6 = 16 each, 48 a worker, 500 // 48 = 10 steps
    (1004, 128, 4, 2, (16, 32, 7)),     # 8 replicas; 251 rows a worker // 32 = 7
    (999, 7, 2, 4, (1, 4, 124)),        # more replicas than the batch: one row each
])
def test_driver_and_workers_agree_on_the_batch_split(rows, batch, workers, gpus, expected):
    from cluster.spec import ScalingSpec
    from cluster.training.batches import batch_split, epoch_steps, steps_per_epoch

    scaling = ScalingSpec(num_workers=workers, use_gpu=gpus > 0, gpus_per_worker=gpus)
    replicas = workers * max(1, gpus)
    per_replica, per_worker = batch_split(batch, workers, replicas)
    # The loop computes epoch_steps from the strategy's replica count; the driver from the spec.
    assert (per_replica, per_worker, epoch_steps(rows, workers, replicas, batch)) == expected
    assert steps_per_epoch(rows, scaling, batch) == expected[2]
