"""Pipeline overhead: ``normlab run`` on the default config against `bench.plain_script`.

Both run as fresh processes from the repository root on ``configs/digits.yaml``;
``normlab run`` talks to a Prefect server this module starts on 127.0.0.1
beforehand (and stops afterwards) and keeps its MLflow store in a scratch
folder. A first run of each at the config's own epochs warms the store and the
file cache (the first ``normlab run`` also creates the MLflow database); its
times are reported as they are. Then rounds alternate between the two at more
epochs (``train.epochs=50``: the digits train 10 epochs in a fraction of a
second, too short a window to time an epoch in on a shared machine).

- Per-epoch cost: the time from the end of the first epoch to the end of the
  last, divided by the epochs in between, read from each process's own clock
  (normlab's epoch log lines, the plain script's epoch end times), so
  checkpointing, logging and progress output count and start-up noise does
  not. Growth per epoch = normlab's / plain's - 1 (medians over the rounds).
- Fixed overhead: per round, the difference of the wall times less the epochs'
  share of it (epochs x the per-epoch difference); the median over the rounds.
- Stages: each Prefect task's duration, read back from the server, next to the
  plain script's phases.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import REPO, Size, fmt, target

TARGET_FIXED_SECONDS = 10.0
TARGET_GROWTH_PERCENT = 2.0

# epochs of the timed runs, timed rounds, first runs at the config's epochs.
_PLAN: dict[str, tuple[int, int, bool]] = {
    "smoke": (3, 1, False), "quick": (50, 3, True), "full": (50, 5, True),
}

_EPOCH_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|.*?\bepoch (\d+)/(\d+)\b")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


@contextmanager
def prefect_server(home: Path, *, timeout: float = 180.0):
    """A Prefect server on 127.0.0.1 with its own database under ``home``; yields its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({process.returncode}); see {home / 'server.log'}")
            try:
                if _get_json(f"{api}/health", timeout=2) is True:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s")
            time.sleep(0.5)
        yield api
    finally:
        # The server runs in its own session: stop it and whatever it started.
        with _ignored(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with _ignored(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextmanager
def _ignored(*errors: type[BaseException]):
    try:
        yield
    except errors:
        pass


def epoch_marks_from_log(text: str) -> list[tuple[int, float]]:
    """(epoch, seconds since midnight) of each ``epoch k/E`` line in Prefect's console format."""
    marks: list[tuple[int, float]] = []
    for line in text.splitlines():
        m = _EPOCH_LINE.match(line)
        if m:
            h, mi, s, ms, epoch = (int(g) for g in m.groups()[:5])
            marks.append((epoch, h * 3600 + mi * 60 + s + ms / 1000))
    return marks


def seconds_per_epoch(marks: list[tuple[int, float]]) -> float | None:
    """Mean seconds per epoch from the first epoch-end mark to the last (the first epoch's warm-up is left out).

    Progress lines may skip epochs (at most one a second), so the span between the
    first and the last mark is what is measured, not line-to-line gaps.
    """
    if len(marks) < 2:
        return None
    (e0, t0), (e1, t1) = marks[0], marks[-1]
    if e1 <= e0 or t1 < t0:  # a restart or a midnight wrap: no clean span
        return None
    return (t1 - t0) / (e1 - e0)


def flow_run_stages(api: str) -> dict[str, float]:
    """Seconds per task of the newest flow run on the server, plus the flow run itself."""
    (flow_run,) = _get_json(f"{api}/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
    tasks = _get_json(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}, "limit": 200})
    stages: dict[str, float] = {}
    for task in tasks:
        name = task["name"].rsplit("-", 1)[0]
        stages[name] = stages.get(name, 0.0) + float(task.get("total_run_time") or 0.0)
    stages["flow run (all tasks)"] = float(flow_run.get("total_run_time") or 0.0)
    return stages


def _normlab(workdir: Path, epochs: int | None, env: dict[str, str], log: Path) -> float:
    args = ["run", "--set", f"workdir={workdir}"] + (["--set", f"train.epochs={epochs}"] if epochs else [])
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, "-c", "from normlab.cli import main; main()", *args],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"normlab run exited {code}; see {log}")
    return seconds


def _plain(workdir: Path, epochs: int | None, env: dict[str, str], out: Path) -> float:
    """Wall seconds of one plain-script process; its JSON gets ``import_seconds`` (start-up and imports)."""
    args = ["--workdir", str(workdir), "--out", str(out)] + (["--epochs", str(epochs)] if epochs else [])
    launched = time.time()
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "bench.plain_script", *args], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"bench.plain_script exited {code}")
    timing = json.loads(out.read_text())
    timing["import_seconds"] = timing.pop("imported_at") - launched
    out.write_text(json.dumps(timing, indent=1))
    return seconds


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Fixed overhead (target <= 10 s) and per-epoch growth (target <= 2%) of ``normlab run``."""
    from normlab.config import load_config

    epochs, rounds, first = _PLAN[size]
    default_epochs = load_config(REPO / "configs" / "digits.yaml").train.epochs
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "prefect").mkdir()
        with prefect_server(tmp / "prefect") as api:
            env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp / "prefect"),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}
            if threads is not None:
                env["OMP_NUM_THREADS"] = str(threads)
            workdir = tmp / "work"
            first_runs: dict[str, float] = {}
            if first:
                first_runs["normlab"] = _normlab(workdir, None, env, tmp / "first.log")
                first_runs["plain"] = _plain(tmp / "plain", None, env, tmp / "plain-first.json")
            stages: list[dict[str, float]] = []
            phases: list[dict[str, float]] = []
            for r in range(rounds):
                row: dict[str, Any] = {"round": r}
                for side in ("normlab", "plain") if r % 2 == 0 else ("plain", "normlab"):
                    if side == "normlab":
                        log = tmp / f"normlab-{r}.log"
                        row["normlab_seconds"] = _normlab(workdir, epochs, env, log)
                        row["normlab_epoch_seconds"] = seconds_per_epoch(
                            epoch_marks_from_log(log.read_text(errors="replace")))
                        stages.append(flow_run_stages(api))
                    else:
                        out = tmp / f"plain-{r}.json"
                        row["plain_seconds"] = _plain(tmp / "plain", epochs, env, out)
                        timing = json.loads(out.read_text())
                        row["plain_epoch_seconds"] = seconds_per_epoch(list(enumerate(timing["epoch_ends"], 1)))
                        phases.append(timing)
                if row["normlab_epoch_seconds"] is not None and row["plain_epoch_seconds"] is not None:
                    extra = row["normlab_epoch_seconds"] - row["plain_epoch_seconds"]
                    row["fixed_overhead_seconds"] = row["normlab_seconds"] - row["plain_seconds"] - epochs * extra
                rows.append(row)

    def median(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    epoch_s = {side: median(f"{side}_epoch_seconds") for side in ("normlab", "plain")}
    growth = 100.0 * (epoch_s["normlab"] / epoch_s["plain"] - 1.0) if epoch_s["normlab"] and epoch_s["plain"] else None
    fixed = median("fixed_overhead_seconds")
    stage_names = sorted({k for s in stages for k in s}, key=lambda k: -statistics.median(s.get(k, 0) for s in stages))
    stage_medians = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stage_names}
    phase_medians = {k: statistics.median(p[k] for p in phases)
                     for k in ("import_seconds", "data_seconds", "train_seconds", "evaluate_seconds")}
    summary = {
        "epochs": epochs, "rounds": rounds, "threads": threads, "normlab_seconds": median("normlab_seconds"),
        "plain_seconds": median("plain_seconds"), "fixed_overhead_seconds": fixed,
        "normlab_epoch_seconds": epoch_s["normlab"], "plain_epoch_seconds": epoch_s["plain"],
        "growth_percent_per_epoch": growth, "default_epochs": default_epochs,
        "first_normlab_seconds": first_runs.get("normlab"), "first_plain_seconds": first_runs.get("plain"),
        "normlab_stage_seconds": stage_medians, "plain_phase_seconds": phase_medians, "rounds_detail": rows,
    }
    table = [{
        "epochs": epochs, "plain s": fmt(summary["plain_seconds"]), "normlab run s": fmt(summary["normlab_seconds"]),
        "fixed overhead s": fmt(fixed), "plain ms/epoch": fmt(epoch_s["plain"] and epoch_s["plain"] * 1e3),
        "normlab ms/epoch": fmt(epoch_s["normlab"] and epoch_s["normlab"] * 1e3), "growth %/epoch": fmt(growth, 2),
        f"first runs, {default_epochs} epochs, fresh store: normlab / plain s":
            f"{fmt(first_runs.get('normlab'))} / {fmt(first_runs.get('plain'))}",
    }]
    stage_table = [{"normlab stage": k, "median s": fmt(v)} for k, v in stage_medians.items()]
    stage_table += [{"normlab stage": f"plain script: {k.removesuffix('_seconds')}", "median s": fmt(v)}
                    for k, v in phase_medians.items()]
    targets = [
        target("pipeline: fixed overhead of normlab run vs plain script", fixed, at_most=TARGET_FIXED_SECONDS,
               unit=" s"),
        target("pipeline: growth per epoch", growth, at_most=TARGET_GROWTH_PERCENT, unit=" %",
               why_not=None if growth is not None else "no epoch spans were found (one epoch per run?)"),
    ]
    note = (f"{rounds} alternating rounds of {epochs} epochs (the default config otherwise)"
            f"{f' after a first run of each at its {default_epochs} epochs' if first else ''}; medians. "
            "Prefect server on 127.0.0.1 started before the first run; the MLflow store is SQLite in a "
            "scratch folder.")
    return {"rows": [summary], "table": table, "tables": {"stages": stage_table}, "targets": targets,
            "notes": [note]}
