"""`scaling` -> Ray Train's ScalingConfig, checked on CPU (no GPU needed to read the mapping)."""

from __future__ import annotations

import pytest

from cluster.spec import ScalingSpec, SpecError, validate_document
from cluster.training.trainer import scaling_config
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
