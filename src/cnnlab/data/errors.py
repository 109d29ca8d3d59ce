"""The one exception type raised for bad, missing or mismatched data files."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file or data set is missing, corrupt or inconsistent.

    Subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working; the message
    always names the file (or directory) involved and what was expected versus found.
    """
