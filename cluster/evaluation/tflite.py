"""TFLite artifacts: run one on image batches in LiteRT, and write one atomically.

The runner feeds raw float pixels (0..255) like the Keras models take: for an
int8/uint8 model it quantizes them with the input tensor's scale and zero
point, and it dequantizes quantized outputs, so callers never see the
artifact's number format. It uses a fixed thread count so its timings and
the thread count it reports agree. No TensorFlow here: converting a Keras
model is `cluster.evaluation.export`'s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from cluster.evaluation.errors import ArtifactError, InputShapeError
from cluster.evaluation.interpreter import DEFAULT_NUM_THREADS, open_interpreter, read_tflite


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write atomically so a crashed job never leaves a half-written artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class TFLiteModel:
    """Runs a single-input, single-output .tflite image model on batches."""

    def __init__(self, path: str | os.PathLike, num_threads: int = DEFAULT_NUM_THREADS):
        self.path = os.fspath(path)
        self.num_threads = num_threads
        self.interpreter = open_interpreter(self.path, read_tflite(self.path), num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(self.path, f"expected 1 input and 1 output, found {len(inputs)} and {len(outputs)}")
        self._input = inputs[0]
        self._output = outputs[0]
        self._shape = None
        self._allocate(tuple(int(d) for d in self._input["shape"]))

    # What the artifact expects -------------------------------------------

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """Shape of one input sample; None where the model accepts any size."""
        signature = self._input.get("shape_signature", self._input["shape"])
        return tuple(None if d < 0 else int(d) for d in signature[1:])

    @property
    def input_index(self) -> int:
        return self._input["index"]

    @property
    def output_index(self) -> int:
        """Index of the output tensor (valid for the last allocated batch shape)."""
        return self._output["index"]

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self._output["dtype"])

    @property
    def is_quantized(self) -> bool:
        """True when the input or output tensor holds integers."""
        return self.input_dtype.kind in "iu" or self.output_dtype.kind in "iu"

    # Running -------------------------------------------------------------

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs (logits for our models) as float32, one row per image."""
        images = self.check_input(images)
        if len(images) == 0:
            return np.zeros((0, *self._output["shape"][1:]), np.float32)
        rows = [self.run_batch(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(rows)

    def accuracy(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
        """Fraction of images whose arg-max output equals the label.

        `labels` are class ids, or one-hot rows (reduced by arg-max).
        """
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(axis=1)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("accuracy of an empty set is undefined")
        predicted = self.predict(images, batch_size).argmax(axis=1)
        return float(np.mean(predicted == labels.reshape(-1)))

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """One interpreter call on an already-checked batch."""
        self._allocate(batch.shape)
        self.interpreter.set_tensor(self._input["index"], self.quantize_input(batch))
        self.interpreter.invoke()
        return self.dequantize_output(self.interpreter.get_tensor(self._output["index"]))

    def check_input(self, images: np.ndarray) -> np.ndarray:
        """The images as an array, or InputShapeError naming the file."""
        images = np.asarray(images)
        expected = self.sample_shape
        actual = images.shape[1:]
        matches = len(actual) == len(expected) and all(e is None or e == a for e, a in zip(expected, actual))
        if images.ndim == 0 or not matches:
            shown = tuple(-1 if d is None else d for d in expected)
            raise InputShapeError(
                self.path, f"input batch of shape {images.shape} does not match the model's input shape "
                f"(N, {', '.join(str(d) for d in shown)})")
        return images

    def quantize_input(self, batch: np.ndarray) -> np.ndarray:
        """Raw float pixels in the input tensor's number format."""
        dtype = self.input_dtype
        if dtype.kind not in "iu":
            return batch.astype(dtype, copy=False)
        scale, zero_point = self._input["quantization"]
        values = batch.astype(np.float32)
        if scale:
            values = np.round(values / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(values, info.min, info.max).astype(dtype)

    def dequantize_output(self, values: np.ndarray) -> np.ndarray:
        """Outputs as float32, whatever number format the tensor holds."""
        scale, zero_point = self._output["quantization"]
        if self.output_dtype.kind in "iu" and scale:
            return (values.astype(np.float32) - zero_point) * np.float32(scale)
        return values.astype(np.float32)

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Resize the input only when the batch shape changes: allocation is slow."""
        if shape == self._shape:
            return
        try:
            self.interpreter.resize_tensor_input(self._input["index"], list(shape))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(self.path, f"cannot run an input of shape {shape}: {exc}") from exc
        self._shape = tuple(shape)
        # Output details carry the shape, which changed with the batch.
        self._output = self.interpreter.get_output_details()[0]

    def __repr__(self) -> str:
        return (f"TFLiteModel({self.path!r}, num_threads={self.num_threads}, "
                f"input={self.sample_shape} {self.input_dtype}, output={self.output_dtype})")
