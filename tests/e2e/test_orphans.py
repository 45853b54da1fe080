"""``kill -9`` of a ``normlab run`` without a Prefect server: what the next command cleans up.

Prefect then runs a temporary server as a child process. The killed run
leaves it running (and its flow run ``Running``); the next normlab command
stops that server and marks the flow run ``Crashed``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from normlab.cli import runtime
from normlab.data.sources import load_builtin
from tests.e2e.conftest import base_env, run_normlab, small_run_args, start_normlab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def flow_run_state(home: Path, name: str) -> tuple[str, str]:
    """(state type, state message) of a flow run, from the database of the temporary servers under ``home``."""
    with contextlib.closing(sqlite3.connect(home / "prefect.db")) as db:
        (row,) = db.execute("SELECT s.type, s.message FROM flow_run f JOIN flow_run_state s ON s.id = f.state_id "
                            "WHERE f.name = ?", (name,)).fetchall()
    return row[0], row[1] or ""


def wait_for_flow_run(log: Path, process, timeout: float = 150) -> str:
    """The name of the flow run ``process`` begins (it is Running then)."""
    deadline = time.monotonic() + timeout
    while not (names := re.findall(r"Beginning flow run '([^']+)'", log.read_text(errors="replace"))):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no flow run after {timeout:.0f} s"
        time.sleep(0.1)
    return names[0]


def temporary_server(pid: int) -> psutil.Process:
    (server,) = [p for p in psutil.Process(pid).children() if runtime.SERVER_APP in p.cmdline()]
    return server


def answers(server: psutil.Process) -> bool:
    cmdline = server.cmdline()
    port = cmdline[cmdline.index("--port") + 1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_next_command_stops_the_killed_runs_server_and_marks_its_flow_run_crashed(tmp_path):
    home = tmp_path / "prefect-home"
    env = {**base_env(), "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)  # no server configured: each normlab process starts a temporary one
    victim = start_normlab(small_run_args(tmp_path / "work", "--set", "train.epochs=1"), env, tmp_path / "killed.log")
    try:
        name = wait_for_flow_run(tmp_path / "killed.log", victim)
        server = temporary_server(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)  # the normlab process only, as `kill -9 PID` does
        victim.wait()

        # The fault: the server outlives its normlab process and still serves; the flow run stays Running.
        assert not gone(server) and server.ppid() != victim.pid and answers(server)
        assert flow_run_state(home, name)[0] == "RUNNING"

        # The next run: a batch the gate blocks, the shortest flow there is.
        data = tmp_path / "no-pixel-0.csv"
        load_builtin("digits").drop(columns=["pixel_0"]).to_csv(data, index=False)
        code, output = run_normlab(small_run_args(tmp_path / "work", "--data", str(data)), env, tmp_path / "next.log")
        assert code == 3, output[-3000:]
        assert f"note: stopped Prefect's temporary server (pid {server.pid}) left running by normlab process " \
               f"{victim.pid}" in output
        assert f"note: flow run '{name}' marked Crashed: its normlab process {victim.pid} was killed" in output
        assert gone(server)
        state, message = flow_run_state(home, name)
        assert state == "CRASHED" and f"normlab process {victim.pid} " in message
        # Nothing of either process is left: no server of this PREFECT_HOME, no lease.
        assert not [p for p in psutil.process_iter(["cmdline", "environ"])
                    if runtime.SERVER_APP in (p.info["cmdline"] or [])
                    and (p.info["environ"] or {}).get("PREFECT_HOME") == str(home)]
        assert not list((home / runtime.LEASES).glob("*.json"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)  # the server, if the test failed before it was stopped
