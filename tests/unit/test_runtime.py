"""The normlab process around Prefect: console tracebacks of user errors, orphaned servers, dead leases.

Real processes stand in for servers and owners; the crash marking runs
against a real Prefect API (a test harness).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import requests

from normlab.cli import runtime
from normlab.cli.common import as_user_error
from normlab.errors import ConfigError, DataValidationError

TRACEBACK = "Traceback (most recent call last)"


def _record(exc: BaseException) -> logging.LogRecord:
    """The record Prefect's task engine logs for a failed task run (with the exception's traceback)."""
    try:
        raise exc
    except type(exc):
        info = sys.exc_info()
    return logging.getLogger("prefect.task_runs").makeRecord(
        "prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed with exception: %r", (exc,), info,
        extra={"task_run_name": "enforce-validation-0a1"})


def _console_output(record: logging.LogRecord) -> str:
    from prefect.logging.handlers import PrefectConsoleHandler

    stream = io.StringIO()
    handler = PrefectConsoleHandler(stream=stream)
    handler.setFormatter(runtime.UserErrorFormatter(logging.Formatter("%(levelname)s %(message)s"), as_user_error))
    handler.handle(record)
    return stream.getvalue()


@pytest.mark.parametrize("exc", [
    DataValidationError("batch abc blocked by 1 check(s)"),
    ConfigError("unknown key"),
    # Not a NormlabError, but one the CLI maps to exit 4 (`as_user_error`).
    requests.exceptions.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded"),
], ids=["data-blocked", "config", "store-unreachable"])
def test_a_user_error_is_one_line_on_the_console_and_keeps_its_traceback_for_other_handlers(exc):
    record = _record(exc)
    shown = _console_output(record)
    assert shown.startswith("ERROR Task run failed with exception: ") and type(exc).__name__ in shown
    assert TRACEBACK not in shown and len(shown.strip().splitlines()) == 1
    # The record itself is untouched: the API handler (before or after) still formats the traceback.
    assert record.exc_info is not None and record.exc_info[1] is exc
    assert TRACEBACK in logging.Formatter().format(record)


def test_a_bug_keeps_its_traceback_on_the_console():
    shown = _console_output(_record(ZeroDivisionError("division by zero")))
    assert TRACEBACK in shown and "ZeroDivisionError: division by zero" in shown


def test_prefect_console_handlers_get_the_formatter_and_keep_it_when_prefect_sets_logging_up_again():
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    assert runtime.quiet_user_tracebacks(as_user_error) >= 1
    setup_logging()  # what `import prefect` does, after prepare_environment: incremental
    (console,) = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    assert isinstance(console.formatter, runtime.UserErrorFormatter)
    api = [h for h in logging.getLogger("prefect.task_runs").handlers if isinstance(h, APILogHandler)]
    assert api and not any(isinstance(h.formatter, runtime.UserErrorFormatter) for h in api)
    stream, terminal = io.StringIO(), console.console.file  # the handler prints through its Rich console
    console.console.file = stream
    try:
        console.handle(_record(DataValidationError("batch abc blocked")))
        console.handle(_record(KeyError("bug")))
    finally:
        console.console.file = terminal
    assert stream.getvalue().count(TRACEBACK) == 1 and "KeyError: 'bug'" in stream.getvalue()


def _finished_process_identity() -> str:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = runtime.process_identity(process.pid)
    process.wait()
    return identity


def test_process_identity_tells_a_live_process_from_a_dead_one_and_from_a_reused_pid():
    me = runtime.process_identity()
    assert runtime.is_alive(me)
    assert not runtime.is_alive(me.split(":")[0] + ":12.00")  # same pid, another start time
    assert not runtime.is_alive(_finished_process_identity())
    assert not runtime.is_alive("not-an-identity")


def _fake_server(env: dict[str, str]) -> subprocess.Popen:
    """A process that looks like Prefect's temporary server in the process table (command line and environment)."""
    clean = {k: v for k, v in os.environ.items() if k not in (runtime.OWNER_VAR, runtime.EPHEMERAL_VAR)}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", runtime.SERVER_APP],
                            env={**clean, **env}, start_new_session=True)


def _wait_for_exec(process: subprocess.Popen, timeout: float = 10) -> None:
    """Until the process table shows the child's own command line (not its parent's, before exec)."""
    deadline = time.monotonic() + timeout
    while runtime.SERVER_APP not in psutil.Process(process.pid).cmdline():
        assert time.monotonic() < deadline, "the fake server did not start"
        time.sleep(0.01)


def test_only_a_temporary_server_whose_normlab_process_is_gone_is_stopped():
    dead, alive = _finished_process_identity(), runtime.process_identity()
    servers = {
        "orphan": _fake_server({runtime.EPHEMERAL_VAR: "1", runtime.OWNER_VAR: dead}),
        "in use by a live normlab": _fake_server({runtime.EPHEMERAL_VAR: "1", runtime.OWNER_VAR: alive}),
        "temporary, not started by normlab": _fake_server({runtime.EPHEMERAL_VAR: "1"}),
        # `prefect server start` run from a shell that a normlab process started: not a temporary server.
        "started by a user": _fake_server({runtime.OWNER_VAR: dead}),
    }
    try:
        for process in servers.values():
            _wait_for_exec(process)
        stopped = runtime.stop_orphan_servers(wait_s=5)
        assert (servers["orphan"].pid, dead) in stopped
        assert servers["orphan"].wait(timeout=5) is not None
        for name, process in servers.items():
            if name != "orphan":
                assert process.poll() is None, name
                assert process.pid not in [pid for pid, _ in stopped], name
    finally:
        for process in servers.values():
            process.kill()
            process.wait()


def _lease_in_subprocess(folder: Path, target: str, then: str) -> subprocess.Popen:
    """A process that takes a lease, prints it, then runs ``then`` (``os._exit(0)``: dies without cleaning up)."""
    code = textwrap.dedent(f"""
        import json, os, sys, time
        from pathlib import Path
        from normlab.cli.runtime import take_lease
        lease = take_lease(Path({str(folder)!r}), {target!r})
        print(json.dumps({{"path": str(lease.path), "tag": lease.tag}}), flush=True)
        {then}
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_lease_is_dead_only_once_its_process_is_gone(tmp_path):
    folder = tmp_path / "leases"
    own = runtime.take_lease(folder, "t1")
    living = _lease_in_subprocess(folder, "t1", "time.sleep(120)")
    killed = _lease_in_subprocess(folder, "t1", "os._exit(0)")
    try:
        living_lease = json.loads(living.stdout.readline())
        killed_lease = json.loads(killed.stdout.readline())
        killed.wait(timeout=30)
        with runtime.dead_leases(folder) as leases:
            assert [str(path) for path, _ in leases] == [killed_lease["path"]]
            (_, record), = leases
            assert record.tag == killed_lease["tag"] and record.target == "t1"
            assert record.pid == killed.pid and record.host
        assert Path(living_lease["path"]).is_file() and own.path.is_file()
    finally:
        living.kill()
        living.wait()
        own.release()
    assert not own.path.exists()
    assert not list(folder.glob(".*.partial"))


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_flow_runs_of_a_dead_process_are_marked_crashed_and_nothing_else(tmp_path, prefect_api):
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    @flow(name="normlab-runtime-test")
    def some_flow() -> None:
        pass

    @task(name="normlab-runtime-test-task")
    def some_task() -> None:
        pass

    folder, target = tmp_path / "leases", runtime.api_target()
    killed = _lease_in_subprocess(folder, target, "os._exit(0)")
    killed_tag = json.loads(killed.stdout.readline())["tag"]
    killed.wait(timeout=30)
    foreign = _lease_in_subprocess(folder, "another-api", "os._exit(0)")  # a dead process on another Prefect API
    foreign_path = Path(json.loads(foreign.stdout.readline())["path"])
    foreign.wait(timeout=30)
    own = runtime.take_lease(folder, target)
    try:
        with get_client(sync_client=True) as client:
            left_running = client.create_flow_run(some_flow, tags=[killed_tag], state=Running())
            task_run = client.create_task_run(some_task, left_running.id, "0", state=Running())
            finished = client.create_flow_run(some_flow, tags=[killed_tag], state=Completed())
            live = client.create_flow_run(some_flow, tags=[own.tag], state=Running())

        crashed = runtime.close_dead_runs(folder, target, lambda: get_client(sync_client=True))

        assert [name for name, _ in crashed] == [left_running.name]
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(left_running.id)
            assert run.state.is_crashed() and f"normlab process {killed.pid} " in run.state.message
            assert client.read_task_run(task_run.id).state.is_crashed()
            assert client.read_flow_run(finished.id).state.is_completed()
            assert client.read_flow_run(live.id).state.is_running()
        # The dead lease of this API is gone; the other API's stays for a command on it; a second pass finds nothing.
        assert sorted(p.name for p in folder.glob("*.json")) == sorted([own.path.name, foreign_path.name])
        assert runtime.close_dead_runs(folder, target, lambda: get_client(sync_client=True)) == []
    finally:
        own.release()


def test_a_lease_cut_short_or_foreign_reads_as_what_it_has():
    assert runtime.LeaseRecord.parse(b'{"pid": 12, "tag": "normlab-x"') == runtime.LeaseRecord()
    assert runtime.LeaseRecord.parse(b"\xff\xfe") == runtime.LeaseRecord()
    assert runtime.LeaseRecord.parse(b"[1, 2]") == runtime.LeaseRecord()
    odd = runtime.LeaseRecord.parse(b'{"pid": "12", "tag": "normlab-x", "target": 3, "extra": true}')
    assert odd == runtime.LeaseRecord(pid=None, tag="normlab-x")
