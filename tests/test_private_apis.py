"""The private APIs of our pinned dependencies that the library leans on: each test fails the day one changes.

No public API exposes these; upgrading tensorflow-model-optimization or Ray must
start here.
"""

import importlib
import importlib.util
import logging

import pytest

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


@pytest.mark.parametrize("module, registry", [
    ("tensorflow_model_optimization.python.core.sparsity.keras.prune_registry", "PruneRegistry"),
    ("tensorflow_model_optimization.python.core.clustering.keras.clustering_registry", "ClusteringRegistry"),
])
def test_tfmot_registries_map_layer_classes_to_their_weight_names(module, registry):
    """compression/pruning.py and clustering.py ask these maps which weights of a layer the toolkit wraps."""
    import tf_keras as keras

    weights = getattr(importlib.import_module(module), registry)._LAYERS_WEIGHTS_MAP
    assert isinstance(weights, dict)
    assert "kernel" in weights[keras.layers.Conv2D] and "kernel" in weights[keras.layers.Dense]
    assert not weights.get(keras.layers.MaxPooling2D)  # a layer without weights maps to nothing


def test_tunes_async_hyperband_keeps_brackets_with_a_cutoff_we_can_wrap():
    """tuning/asha.py widens each bracket's cutoff by the validation noise; the rungs stay Ray's."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from cluster.tuning.asha import NoiseAwareASHA

    stock = AsyncHyperBandScheduler(metric="val_accuracy", mode="max", time_attr="epoch", max_t=4,
                                    grace_period=1, reduction_factor=2)
    assert stock._brackets and all(callable(bracket.cutoff) for bracket in stock._brackets)
    ours = NoiseAwareASHA(1000, metric="val_accuracy", mode="max", time_attr="epoch", max_t=4, grace_period=1,
                          reduction_factor=2)
    # The same rungs as Ray's, only a cutoff that is lower by the standard error of 1,000 rows.
    recorded = {f"trial{i}": 0.80 + 0.02 * i for i in range(4)}
    assert ours._brackets[0].cutoff(recorded) < stock._brackets[0].cutoff(recorded)


def test_rays_cpu_count_is_where_local_up_reads_it():
    """local.py sizes the admission pool as `ray start` counts CPUs."""
    from ray._private.utils import get_num_cpus

    assert isinstance(get_num_cpus(), int) and get_num_cpus() >= 1


@pytest.mark.parametrize("name", ["ray._private.authentication.http_token_authentication",
                                  "ray._private.runtime_env.working_dir", "ray._private.runtime_env.packaging",
                                  "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"])
def test_the_ray_loggers_the_client_quiets_still_exist(name):
    """client.py lowers these modules' loggers: a renamed module would bring their noise back, silently."""
    assert importlib.util.find_spec(name) is not None
    importlib.import_module(name)
    assert name in logging.Logger.manager.loggerDict


def test_starting_a_run_loads_no_tensorflow_where_ray_trains_tensorflow_trainer_does(tmp_path):
    """A sweep's scale-trial actor only builds a `Trainer` and starts its run: building ours loads no
    TensorFlow, while Ray's `TensorflowTrainer` (the same data-parallel trainer with Ray's TensorflowConfig)
    loads it in its constructor. If Ray stopped doing so, `Trainer` could go back to extending it."""
    import subprocess
    import sys

    def loads_tensorflow(build: str) -> bool:
        code = ("import sys\n"
                "from ray.train import RunConfig, ScalingConfig\n"
                "import cluster.tuning.scale_trial\n"
                "assert 'tensorflow' not in sys.modules\n"
                "run = dict(scaling_config=ScalingConfig(num_workers=1), "
                f"run_config=RunConfig(storage_path={str(tmp_path)!r}))\n"
                f"{build}\n"
                "print('tensorflow' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1] == "True"

    assert not loads_tensorflow("from cluster.training.trainer import Trainer\n"
                                "Trainer(lambda: None, placement_group_cleaner=False, **run)")
    assert loads_tensorflow("from ray.train.v2.tensorflow.tensorflow_trainer import TensorflowTrainer\n"
                            "TensorflowTrainer(lambda: None, **run)")


def test_ray_trains_default_callbacks_hold_the_helpers_our_trainer_leaves_out(tmp_path):
    """training/trainer.py's `Trainer` filters Ray Train's default callbacks by class: if the placement-group
    cleaner's or the datasets' callback moved or were renamed, the filter would silently keep them, and if
    the method went, every run would fail."""
    import ray.data
    from ray.train import RunConfig, ScalingConfig

    from cluster.training.trainer import DataParallelTrainer, DatasetsCallback, PlacementGroupCleanerCallback, Trainer

    def callbacks(trainer_class, **options) -> list[type]:
        trainer = trainer_class(lambda: None, scaling_config=ScalingConfig(num_workers=1),
                                run_config=RunConfig(storage_path=str(tmp_path)), **options)
        return [type(callback) for callback in trainer._create_default_callbacks()]

    stock = callbacks(DataParallelTrainer)
    assert PlacementGroupCleanerCallback in stock and DatasetsCallback in stock
    assert callbacks(Trainer, placement_group_cleaner=True) == [c for c in stock if c is not DatasetsCallback]
    assert callbacks(Trainer, placement_group_cleaner=False) == [
        c for c in stock if c not in (DatasetsCallback, PlacementGroupCleanerCallback)]
    # Given datasets to split, the run keeps the dataset manager.
    split = callbacks(Trainer, placement_group_cleaner=False, datasets={"train": ray.data.range(1)})
    assert split == [c for c in stock if c is not PlacementGroupCleanerCallback]
