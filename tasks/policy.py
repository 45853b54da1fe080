"""The task policies of the whole project, defined once.

``TRANSIENT``: tasks that talk to the tracking store (a server, across a
network) retry with backoff, and only for errors that may pass on their own
(`normlab.errors.is_transient`): a user error (missing file, bad config, bad
data) or a bug fails at once, with its one line. ``LOCAL``: tasks that only
compute and write local files, never retried.

No task caches: every stage writes into its run's folder and MLflow run, so a
cached result from another run would point at another run's files.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from normlab.errors import is_transient

RETRY_DELAYS_S = [2, 5, 15]


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry a failed task run only for a transient error."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


TRANSIENT: dict[str, Any] = {"retries": len(RETRY_DELAYS_S), "retry_delay_seconds": RETRY_DELAYS_S,
                             "retry_condition_fn": retry_if_transient, "cache_policy": NO_CACHE}
LOCAL: dict[str, Any] = {"cache_policy": NO_CACHE}
