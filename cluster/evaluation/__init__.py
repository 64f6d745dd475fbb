"""Measuring a model or artifact: size, compute, accuracy, latency, memory.

Every job (train, compress, sweep, evaluate) measures through this package so
their numbers are comparable:

* `compute`   - parameters, non-zero parameters, MACs per sample, file sizes
* `tflite`    - export a Keras model to TFLite; run a .tflite file on batches
* `tensors`   - constant tensors of a .tflite file (dtypes, distinct values)
* `latency`   - batch-1 latency percentiles and batched throughput
* `memory`    - peak RSS of inference in a fresh process
* `probe`     - the child-process entry point behind `latency` and `memory`
* `report`    - the per-variant record, `measure_artifact`, a Markdown table
* `errors`    - `ArtifactError` and friends, each naming the file at fault

Submodules import TensorFlow; this package file does not, so importing
`cluster.evaluation.errors` stays cheap.
"""
