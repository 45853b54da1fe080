"""What the console shows when ``normlab run`` fails: one line for a user error, the traceback for a bug.

Each test runs the real CLI in a subprocess against the session's Prefect
API, then reads the flow run's logs back from that server: the traceback
Prefect logged is kept there either way.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import pytest

from normlab.data.sources import load_builtin
from tests.conftest import REPO
from tests.e2e.conftest import finish, normlab_env, run_normlab, small_run_args

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRACEBACK = "Traceback (most recent call last)"


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def flow_run_logs(api: str, output: str, expect: str, timeout: float = 30) -> list[str]:
    """The messages of the flow run named in ``output``, once one of them contains ``expect``."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )

    (name,) = re.findall(r"Beginning flow run '([^']+)'", output)
    deadline = time.monotonic() + timeout
    with SyncPrefectClient(api) as client:
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        while True:
            messages = [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
            if any(expect in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


def test_a_blocked_batch_is_one_error_line_and_its_traceback_stays_in_the_flow_run_logs(tmp_path, prefect_api):
    data = tmp_path / "no-pixel-0.csv"
    load_builtin("digits").drop(columns=["pixel_0"]).to_csv(data, index=False)
    code, output = run_normlab(small_run_args(tmp_path / "work", "--data", str(data)), normlab_env(prefect_api),
                               tmp_path / "blocked.log")
    assert code == 3, output[-3000:]
    (error,) = error_lines(output)
    assert error.startswith("error: batch ") and "pixel_0" in error
    assert TRACEBACK not in output
    # Prefect's one-line messages stay: which task failed, and the states.
    assert "Task run failed with exception: DataValidationError(" in output
    assert "Finished in state Failed(" in output

    logs = flow_run_logs(prefect_api, output, TRACEBACK)
    failed = [m for m in logs if m.startswith("Task run failed with exception: DataValidationError(")]
    assert failed and TRACEBACK in failed[0] and "normlab.errors.DataValidationError: batch " in failed[0]


def test_an_unreachable_store_is_one_error_line_after_the_retries(tmp_path, prefect_api):
    # MLflow's own HTTP retries off: the three Prefect retries of the tracking task remain (2 + 5 + 15 s).
    env = normlab_env(prefect_api, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    args = small_run_args(tmp_path / "work", "--set", "tracking.uri=http://127.0.0.1:1")
    code, output = run_normlab(args, env, tmp_path / "unreachable.log")
    assert code == 4, output[-3000:]
    (error,) = error_lines(output)
    assert error.startswith("error: tracking store unreachable") and "127.0.0.1:1" in error
    assert TRACEBACK not in output
    for attempt, delay in ((1, 2), (2, 5), (3, 15)):
        assert f"Retry {attempt}/3 will start {delay} second(s) from now" in output
    assert "Retries are exhausted" in output

    logs = flow_run_logs(prefect_api, output, "Retries are exhausted")
    exhausted = [m for m in logs if "Retries are exhausted" in m]
    assert exhausted and TRACEBACK in exhausted[0] and "Connection refused" in exhausted[0]


def test_a_bug_keeps_its_traceback_on_the_console(tmp_path, prefect_api):
    # The real CLI with one library function replaced by a bug, in the subprocess only.
    code = textwrap.dedent("""
        import sys
        import normlab.pipeline

        def enforce_validation(report):
            raise RuntimeError("injected bug in the gate")

        normlab.pipeline.enforce_validation = enforce_validation
        from normlab.cli import main

        sys.argv = ["normlab", *sys.argv[1:]]
        main()
    """)
    log = tmp_path / "bug.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([sys.executable, "-c", code, *small_run_args(tmp_path / "work")], cwd=REPO,
                                   env=normlab_env(prefect_api), stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    output = finish(process, log)
    assert process.returncode == 1, output[-3000:]
    assert error_lines(output) == []
    lines = output.splitlines()
    (failed,) = [i for i, line in enumerate(lines) if "Task run failed with exception: RuntimeError(" in line]
    assert lines[failed + 1].startswith(TRACEBACK)  # Prefect's record, with its traceback
    assert output.rstrip().endswith("RuntimeError: injected bug in the gate")  # and Python's own at exit
