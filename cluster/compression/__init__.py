"""Compression techniques as Ray-independent library functions.

Each technique is split so it fits a distributed trainer:
  prepare_*  -> `Prepared(model, callbacks)` to compile and fit (creates
                variables: call inside `strategy.scope()`),
  strip / finalize -> the plain Keras model after fine-tuning,
  convert_*  -> TFLite flatbuffer bytes.
`pipeline` chains them from plain dicts, e.g.
  [{"prune": {"final_sparsity": 0.8, "end_step": 500}}, {"qat": {}}].
"""

import cluster  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from cluster.compression.errors import CompressionError
from cluster.compression.prepared import Prepared

__all__ = ["CompressionError", "Prepared"]
