"""One error type for bad input data, formatted as ``file:line: message``."""

from __future__ import annotations


class DataError(ValueError):
    """Malformed input data (a profile, table or trace).

    The message names the file, the line or field when known, and what is wrong, so that the
    CLI can print it as one line.
    """

    def __init__(self, source: str, message: str, line: int | None = None, field: str | None = None):
        self.source = source
        self.line = line
        self.field = field
        self.message = message
        where = source if line is None else f"{source}:{line}"
        if field:
            where = f"{where}: field '{field}'"
        super().__init__(f"{where}: {message}")


class NotFound(DataError):
    """The input does not exist (a ConfigMap that is not there): a missing input, not a bad one."""
