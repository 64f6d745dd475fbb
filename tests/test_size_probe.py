"""The size probe: a variant's file size judged before training, and the scales a size limit rules out."""

import gzip

import pytest
import tf_keras as keras

from cluster.compression.pipeline import convert
from cluster.compression.steps import parse_steps
from cluster.models import ModelShape, build_model, compile_classifier
from cluster.tuning.size_probe import PROBE_FLOOR, plan_by_size, probe_bytes, size_floor
from cluster.tuning.space import Scale, Variant
from tests.conftest import SAMPLE

SHAPE = ModelShape((28, 28, 1), 10)
INT8 = parse_steps([{"quantize": {"mode": "int8"}}])
PRUNED_INT8 = parse_steps([{"prune": {"final_sparsity": 0.5}}, {"quantize": {"mode": "int8"}}])


@pytest.fixture(scope="module")
def sample():
    from cluster.data.pipeline import load_arrays
    from cluster.data.sources import resolve
    from cluster.spec import DataSpec

    data = DataSpec(train=str(SAMPLE / "train.parquet"), test=str(SAMPLE / "test.parquet"), num_classes=10)
    return load_arrays(resolve(data.train, "data.train"), data)


def test_each_step_shapes_the_probed_file():
    scale = Scale("bncnn", 0.5, 3)
    float_size = probe_bytes(scale, (), SHAPE)
    int8 = probe_bytes(scale, INT8, SHAPE)
    pruned = probe_bytes(scale, PRUNED_INT8, SHAPE)
    clustered = probe_bytes(scale, parse_steps([{"prune": {"final_sparsity": 0.5}},
                                                {"cluster": {"number_of_clusters": 8, "preserve_sparsity": True}},
                                                {"quantize": {"mode": "int8"}}]), SHAPE)
    student = probe_bytes(scale, parse_steps([{"distill": {"student": {"family": "bncnn", "width": 0.25,
                                                                       "depth": 3}}}, {"quantize": {"mode": "int8"}}]),
                          SHAPE)
    assert float_size > 3 * int8 > 3 * pruned
    assert clustered < pruned
    # A distilled variant's file is its student's (the weights differ: the teacher drew from the seed first).
    assert student == pytest.approx(probe_bytes(Scale("bncnn", 0.25, 3), INT8, SHAPE), rel=0.01)
    assert probe_bytes(scale, INT8, SHAPE) == int8, "the probe is deterministic"


@pytest.mark.parametrize("steps", [(), INT8], ids=["float", "int8"])
def test_a_trained_file_is_not_smaller_than_its_floor_nor_far_above_its_probe(sample, steps):
    images, labels = sample
    keras.utils.set_random_seed(1)
    model = build_model("bncnn", SHAPE, 0.5, 3)
    compile_classifier(model, keras.optimizers.Adam(3e-3), 10)
    model.fit(images, labels, epochs=2, batch_size=64, verbose=0)
    trained = len(gzip.compress(convert(list(steps), model, lambda: iter([images[:64]])), 9, mtime=0))
    probe = probe_bytes(Scale("bncnn", 0.5, 3), steps, SHAPE)
    assert probe * PROBE_FLOOR <= trained <= probe * 1.15, (trained, probe)


def test_the_plan_rules_out_only_scales_none_of_whose_variants_can_fit():
    small, large = Scale("bncnn", 0.25, 3), Scale("bncnn", 0.5, 3)
    variants = [Variant(s, name, steps) for s in (small, large)
                for name, steps in (("float", ()), ("int8", INT8), ("pruned", PRUNED_INT8))]
    limit = size_floor(small, INT8, SHAPE) + 1  # the small scale's int8 file fits, nothing of the large one
    plan = plan_by_size([small, large], variants, SHAPE, limit)
    assert plan.too_large == [large]
    assert set(plan.floors) == {v.name for v in variants}
    assert plan.floors["bncnn-w0.25-d3-int8"] < limit < plan.floors["bncnn-w0.5-d3-pruned"]
    assert plan_by_size([small, large], variants, SHAPE, 10 ** 9).too_large == []


def test_a_size_limit_no_file_can_meet_is_refused_before_anything_is_written(tmp_path):
    from cluster.spec import validate_document
    from cluster.storage import RunStorage
    from cluster.tuning.space import UnreachableConstraint, expand
    from cluster.tuning.sweep import plan_sizes
    from tests.conftest import train_document

    base = train_document()
    document = {"version": 1, "kind": "sweep", "name": "too-small", "data": base["data"],
                "search": {"family": "bncnn", "widths": [0.5, 1.0], "depths": [3],
                           "pipelines": [{"name": "float", "pipeline": []},
                                         {"name": "int8", "pipeline": [{"quantize": {"mode": "int8"}}]}]},
                "constraints": {"max_size_kb": 5}, "output": {"storage": str(tmp_path)}}
    spec = validate_document(document, "too-small.yaml")
    storage = RunStorage(str(tmp_path / "too-small"))
    scales, variants = expand(spec.search, 0)
    with pytest.raises(UnreachableConstraint, match=r"constraints.max_size_kb=5 but the smallest file of the "
                                                    r"search space, bncnn-w0.5-d3-int8, is expected at 1\d\.\d KB"):
        plan_sizes(spec, storage, scales, variants)
    assert list(tmp_path.iterdir()) == []
    document["search"]["train_too_large"] = True
    plan = plan_sizes(validate_document(document, "too-small.yaml"), storage, scales, variants)
    assert plan.too_large == [] and set(plan.floors) == {v.name for v in variants}
