"""The one error type every compression technique raises for bad input."""

from __future__ import annotations


class CompressionError(ValueError):
    """Bad compression input, raised before any fine-tuning starts.

    `step` (the technique, e.g. "prune"), `field` (e.g. "final_sparsity") and
    `position` (1-based index in a pipeline) say what was wrong, each None when
    not applicable, so a job can report it without parsing the message.
    """

    def __init__(self, reason: str, *, step: str | None = None, field: str | None = None,
                 position: int | None = None):
        self.reason = reason
        self.step = step
        self.field = field
        self.position = position
        where = []
        if position is not None:
            where.append(f"pipeline step {position}")
        if step:
            where.append(f"step '{step}'")
        if field:
            where.append(f"field '{field}'")
        super().__init__(", ".join(where) + ": " + reason if where else reason)

    def at_position(self, position: int) -> CompressionError:
        """The same error, located at a pipeline position."""
        return CompressionError(self.reason, step=self.step, field=self.field, position=position)
