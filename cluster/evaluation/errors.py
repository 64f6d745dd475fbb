"""Errors raised while measuring a model or artifact.

Every job catches these to tell a bad artifact (missing, corrupt, wrong input
shape) apart from a bug, so each message names the file it is about.
"""

from __future__ import annotations

import os


class EvaluationError(Exception):
    """Base class of the evaluation package's errors."""


class ArtifactError(EvaluationError):
    """An artifact file is missing, unreadable, corrupt or unsupported."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        where = self.path if self.path is not None else "<in-memory model>"
        super().__init__(f"{where}: {reason}")


class InputShapeError(ArtifactError):
    """The data handed to an artifact does not match its input tensor."""


class MeasurementError(EvaluationError):
    """A measurement (e.g. the child process of a probe) failed."""
