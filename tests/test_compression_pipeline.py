"""Pipelines: validation errors name step and field; steps prepare, finalize and convert end to end."""

import cluster  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from cluster.compression import pipeline as pl
from cluster.compression import pruning
from cluster.compression.distillation import Distiller
from cluster.compression.errors import CompressionError
from cluster.compression.steps import conversion

from tests.compression_helpers import SHAPE, random_data, tiny_cnn  # noqa: F401


def representative_data():
    yield random_data(16, seed=2)[0]


def fit(step, prepared):
    prepared.model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data()
    prepared.model.fit(x, y, batch_size=32, epochs=1, callbacks=prepared.callbacks, verbose=0)


def weightless_model():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    return keras.Model(inputs, keras.layers.Flatten(name="flatten")(x), name="weightless")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("specs, step, field, position", [
    ([{"prune": {"final_sparsity": 1.0}}], "prune", "final_sparsity", 1),
    ([{"prune": {"final_sparsity": -0.2}}], "prune", "final_sparsity", 1),
    ([{"prune": {"final_sparsity": 0.5, "end_step": 10}}, {"cluster": {"number_of_clusters": 1}}],
     "cluster", "number_of_clusters", 2),
    ([{"prune": {"target": 0.5}}], "prune", "target", 1),
    ([{"distill": {"alpha": 2}}], "distill", "alpha", 1),
    ([{"distill": {"student": {"family": "transformer"}}}], "distill", "student", 1),
    ([{"qat": {"preserve": "all"}}], "qat", "preserve", 1),
    ([{"quantize": {"mode": "int4"}}], "quantize", "mode", 1),
])
def test_bad_parameters_name_step_field_and_position(specs, step, field, position):
    with pytest.raises(CompressionError, match=f"pipeline step {position}, step '{step}', field '{field}'") as info:
        pl.parse_pipeline(specs)
    assert (info.value.step, info.value.field, info.value.position) == (step, field, position)


@pytest.mark.timeout(30)
def test_unknown_technique_and_bad_order_are_rejected():
    with pytest.raises(CompressionError, match=r"step 'sparsify': unknown technique 'sparsify'; known: cluster, distill"):
        pl.parse_pipeline([{"sparsify": {}}])
    with pytest.raises(CompressionError, match=r"step 2 \(distill\): distill must be the first"):
        pl.parse_pipeline([{"prune": {}}, {"distill": {}}])
    with pytest.raises(CompressionError, match=r"step 2 \(prune\): quantize .* must be the last"):
        pl.parse_pipeline([{"quantize": {"mode": "float16"}}, {"prune": {}}])
    with pytest.raises(CompressionError, match="only one of qat and quantize"):
        pl.parse_pipeline([{"qat": {}}, {"quantize": {}}])
    with pytest.raises(CompressionError, match="each entry is one of"):
        pl.parse_pipeline([{"prune": {}, "cluster": {}}])


@pytest.mark.timeout(60)
def test_model_without_supported_layers_is_rejected_before_training():
    for technique in ("prune", "cluster", "qat"):
        with pytest.raises(CompressionError, match=rf"pipeline step 1, step '{technique}': model 'weightless' has no "
                                                   rf"layer that {technique} supports.*rescale \(Rescaling\), flatten"):
            pl.check_model([{technique: {}}], weightless_model())
    with pytest.raises(CompressionError, match=r"step 2, step 'prune', field 'exclude'.*\['head'\]"):
        pl.check_model([{"cluster": {}}, {"prune": {"exclude": ["head"]}}], tiny_cnn())
    with pytest.raises(CompressionError, match="field 'student': give student settings"):
        pl.check_model([{"distill": {}}], tiny_cnn())
    fine_tuned = []
    with pytest.raises(CompressionError, match="step 'prune'"):
        pl.run_pipeline([{"prune": {}}], weightless_model(), lambda step, prepared: fine_tuned.append(step))
    assert fine_tuned == []


@pytest.mark.timeout(30)
def test_qat_preserves_what_earlier_steps_built_and_conversion_follows_the_pipeline():
    def qat_preserve(specs):
        return pl.parse_pipeline(specs)[-1].preserve
    assert qat_preserve([{"qat": {}}]) is None
    assert qat_preserve([{"prune": {}}, {"qat": {}}]) == "sparsity"
    assert qat_preserve([{"cluster": {}}, {"qat": {}}]) == "clusters"
    assert qat_preserve([{"prune": {}}, {"cluster": {"preserve_sparsity": True}}, {"qat": {}}]) == "sparsity_and_clusters"
    assert qat_preserve([{"prune": {}}, {"qat": {"preserve": None}}]) is None
    assert conversion(pl.parse_pipeline([{"prune": {}}])) == "float"
    assert conversion(pl.parse_pipeline([])) == "float"
    assert conversion(pl.parse_pipeline([{"cluster": {}}, {"quantize": {"mode": "float16"}}])) == "float16"
    assert conversion(pl.parse_pipeline([{"prune": {}}, {"qat": {}}])) == "qat"


@pytest.mark.timeout(120)
def test_prune_then_sparsity_preserving_qat_end_to_end():
    specs = [{"prune": {"final_sparsity": 0.5, "end_step": 2, "frequency": 1, "exclude": ["logits"]}},
             {"qat": {"input_type": "uint8", "output_type": "float32"}}]
    prepared_models = []

    def fine_tune(step, prepared):
        prepared_models.append(prepared.model)
        fit(step, prepared)

    model, flatbuffer = pl.run_pipeline(specs, tiny_cnn(), fine_tune)
    pruned_names, qat_names = ([layer.name for layer in m.layers] for m in prepared_models)
    assert "prune_low_magnitude_conv1" in pruned_names and "quant_conv1" in qat_names
    assert pruning.measured_sparsity(model).per_layer["dense1"] >= 0.49
    it = tf.lite.Interpreter(model_content=flatbuffer)
    assert it.get_input_details()[0]["dtype"] == np.uint8
    assert it.get_input_details()[0]["quantization"][0] > 0  # a real input scale
    assert it.get_output_details()[0]["dtype"] == np.float32
    (dense1,) = [d for d in it.get_tensor_details() if tuple(d["shape"]) == (32, 784)]
    assert dense1["dtype"] == np.int8
    it.allocate_tensors()
    assert np.mean(it.get_tensor(dense1["index"]) == 0) >= 0.49


@pytest.mark.timeout(120)
def test_distill_prune_quantize_int8_step_by_step():
    pipeline = pl.parse_pipeline([
        {"distill": {"student": {"family": "mlp", "width": 0.125, "depth": 1}, "temperature": 2.0}},
        {"prune": {"final_sparsity": 0.6, "schedule": "constant", "begin_step": 0, "end_step": -1, "frequency": 1}},
        {"quantize": {"mode": "int8"}},
    ])
    teacher = tiny_cnn()
    pl.check_model(pipeline, teacher)
    model = teacher
    for step in pipeline:
        prepared = step.prepare(model)
        if step.technique == "distill":
            assert isinstance(prepared.model, Distiller)
        if prepared.needs_fine_tuning:
            fit(step, prepared)
        model = step.finalize(prepared.model)
    assert model.name == "mlp"
    assert pruning.measured_sparsity(model).per_layer["dense1"] >= 0.59
    it = tf.lite.Interpreter(model_content=pl.convert(pipeline, model, representative_data))
    assert it.get_input_details()[0]["dtype"] == np.int8
    (dense1,) = [d for d in it.get_tensor_details() if tuple(d["shape"]) == (32, 784)]
    assert dense1["dtype"] == np.int8
    with pytest.raises(CompressionError, match="field 'representative_data'"):
        pl.convert(pipeline, model)
