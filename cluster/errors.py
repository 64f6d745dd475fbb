"""Errors raised where TensorFlow is loaded, defined here so the job runner can catch them without loading it.

An evaluate job of TFLite files never imports TensorFlow; its runner must still
name these types in its `except` clauses.
"""


class ModelBuilderError(ValueError):
    """A user's model builder (module:function) that cannot be imported or builds no usable model."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded safely; the message names the file."""


class CheckpointError(ValueError):
    """A checkpoint or saved model that cannot be used; names the path."""


class TrainingFailed(RuntimeError):
    """A Ray Train run that ended in error after its retries; names the run."""
