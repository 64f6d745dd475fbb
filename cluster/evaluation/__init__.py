"""Measuring a model or artifact: size, compute, accuracy, latency, memory.

Every job (train, compress, sweep, evaluate) measures through this package so
their numbers are comparable:

* `compute`   - parameters, non-zero parameters, MACs per sample, file sizes
* `export`    - a Keras model to a float .tflite file (TensorFlow's converter)
* `tflite`    - run a .tflite file on batches in LiteRT (no TensorFlow)
* `tensors`   - constant tensors of a .tflite file (dtypes, distinct values)
* `latency`   - batch-1 latency percentiles and batched throughput (LiteRT)
* `keras_latency` - the same protocol for a Keras model, in a fresh process
* `memory`    - peak RSS of inference in a fresh process
* `probe`, `probe_child` - the parent and child sides of a fresh-process measurement
* `report`    - the per-variant record, `measure_artifact`, a Markdown table
* `errors`    - `ArtifactError` and friends, each naming the file at fault

Only `export`, `tensors`, `keras_latency`, `compute` and the job modules import
TensorFlow; running and timing a .tflite file does not.
"""
