"""Several training steps per call into TensorFlow (`train.steps_per_execution`): the same updates, and
one step per call where callbacks count steps."""

import numpy as np
import pytest
import tf_keras as keras
from pydantic import ValidationError

from cluster.compression.steps import PruneStep
from cluster.models import ModelShape, build_model, compile_classifier
from cluster.spec import TrainSpec
from cluster.training.loop import execution_steps

SHAPE = ModelShape((8, 8, 1), 3)


class BatchCalls(keras.callbacks.Callback):
    calls = 0

    def on_train_batch_end(self, batch, logs=None):
        self.calls += 1


def fitted(steps_per_execution: int, steps: int) -> tuple[list[np.ndarray], int, int]:
    keras.utils.set_random_seed(0)
    model = build_model("mlp", SHAPE, width=0.25)
    compile_classifier(model, keras.optimizers.SGD(0.1), 3, steps_per_execution=steps_per_execution)
    rng = np.random.default_rng(0)
    images = rng.random((16 * steps, 8, 8, 1), dtype=np.float32)
    labels = rng.integers(0, 3, 16 * steps)
    # Two epochs of a step count that steps_per_execution does not divide: the last call is cut short.
    counter = BatchCalls()
    model.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[counter])
    return model.get_weights(), int(model.optimizer.iterations.numpy()), counter.calls


def test_several_steps_per_call_make_the_same_updates_as_one():
    one, one_steps, one_calls = fitted(1, steps=10)
    four, four_steps, four_calls = fitted(4, steps=10)
    assert one_steps == four_steps == 20
    # Callbacks hear of each call, not each step: 4 + 4 + 2 steps an epoch.
    assert (one_calls, four_calls) == (20, 6)
    for a, b in zip(one, four):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_step_whose_callbacks_count_steps_runs_one_step_per_call():
    train = TrainSpec(steps_per_execution=16)
    assert execution_steps(train, callbacks=[]) == 16
    model = build_model("cnn", ModelShape((28, 28, 1), 10), width=0.25)
    prepared = PruneStep(final_sparsity=0.5, end_step=10, frequency=1).prepare(model)
    assert prepared.callbacks  # pruning's step counter
    assert execution_steps(train, prepared.callbacks) == 1


def test_the_spec_defaults_to_eight_and_refuses_zero():
    assert TrainSpec().steps_per_execution == 8
    with pytest.raises(ValidationError, match="steps_per_execution"):
        TrainSpec(steps_per_execution=0)
