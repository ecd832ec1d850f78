"""The toolkit's exceptions.

Every message says what was wrong, the value received, and what is allowed or how to fix it. The CLI turns a
:class:`ClibdError` into one line on stderr and a non-zero exit code; other exceptions are bugs.
"""
from __future__ import annotations


class ClibdError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(ClibdError, ValueError):
    """A configuration or parameter value is unknown, of the wrong type, or out of range."""


class DataError(ClibdError, ValueError):
    """Input data (a record, a table, a sequence, an image) cannot be used.

    Attributes:
        record_id: id of the offending record, or None when the problem is not tied to one record.
        value: the offending value (shortened for display), or None.
    """

    def __init__(self, message: str, *, record_id: str | None = None, value: object = None):
        super().__init__(message)
        self.record_id = record_id
        self.value = value


class DataFileError(DataError, FileNotFoundError):
    """A data file or image is missing or unreadable."""


class CheckpointError(ClibdError, ValueError):
    """A checkpoint, run folder or embedding file is missing, incomplete, corrupt or does not match."""


class UnsafeFileError(CheckpointError):
    """A file would need to execute code to load (e.g. a pickle carrying code); it is refused."""


class TrainingDivergedError(ClibdError, RuntimeError):
    """Training stopped because the loss or the weights stopped being finite numbers (the message names the step,
    the loss and the learning rate; the checkpoints written before stay)."""


class NotFittedError(ClibdError, ValueError, AttributeError):
    """An estimator (index, classifier) was used before ``fit``."""


def short(value: object, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
