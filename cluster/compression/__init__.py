"""Compression techniques as Ray-independent library functions.

`steps` holds the typed step configs (no TensorFlow: specs import it). Each
technique module (pruning, clustering, quantization, distillation) fits a
distributed trainer: a step's `prepare(model)` returns `Prepared(model,
callbacks)` to compile and fit (it creates variables: call it inside
`strategy.scope()`), `finalize(model)` the plain Keras model after
fine-tuning, and `pipeline.convert` the TFLite flatbuffer bytes.
"""
