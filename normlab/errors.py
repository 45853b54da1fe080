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


class RetrainingError(NormlabError):
    """Monitoring finished every batch, but the retraining it started failed (the batches stay recorded).

    ``summary`` is what the monitoring flow would have returned.
    """

    exit_code = 7

    def __init__(self, message: str, summary: Any = None) -> None:
        super().__init__(message)
        self.summary = summary


# Substrings of the messages MLflow, requests and urllib3 give a request that never got an answer.
UNREACHABLE = ("API request to", "Max retries exceeded", "Connection refused", "Failed to establish",
               "Connection reset", "Read timed out", "database is locked")
_NETWORK_MODULES = ("requests", "urllib3", "httpx", "httpcore", "aiohttp")


def is_transient(exc: BaseException) -> bool:
    """Whether an error may pass on its own (worth a retry): the one retry rule of the project.

    Transient: the tracking store unreachable or busy (`TrackingError`, a
    connection or timeout error, MLflow's "API request to ... failed", a
    locked SQLite store). Never transient: anything a user must fix (a missing
    file, a bad config, bad data: every other `NormlabError`) and bugs.
    """
    if isinstance(exc, NormlabError):
        return isinstance(exc, TrackingError)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if any(type(e).__module__.split(".")[0] in _NETWORK_MODULES for e in _chain(exc)):
        return True
    text = str(exc)
    return any(s in text for s in UNREACHABLE)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes and contexts."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen
