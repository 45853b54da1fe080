"""Typed errors. Each carries what a user needs to act, in one line.

The CLI turns any `NormlabError` into a single ``error: ...`` line and the
error's ``exit_code``; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class NormlabError(Exception):
    """Base class for errors a user can fix (bad config, bad data, no server)."""

    exit_code = 2


class ConfigError(NormlabError):
    """The configuration names an unknown key or holds a value that is not allowed."""


class DataSourceError(NormlabError):
    """A data file is missing, unreadable or has no usable rows."""


class DataValidationError(NormlabError):
    """A batch failed a blocking data check; ``report`` holds the full result."""

    exit_code = 3

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class TrackingError(NormlabError):
    """The tracking store could not be reached or refused a write."""

    exit_code = 4
