"""The monitoring ledger: folders, batch discovery, the locked state, claims (exactly once).

A batch is identified by its content fingerprint, so a renamed or re-uploaded
copy is recognised. It is *claimed* before processing and marked *done* only
when every stage finished; a failed batch is released and retried on the next
run, and a claim left by a process that died is taken over. State writes are
atomic (write, then rename) under an exclusive file lock, so the state
survives restarts and concurrent monitors.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from normlab.config import PipelineConfig
from normlab.data.fingerprint import fingerprint_frame
from normlab.data.sources import read_table
from normlab.errors import DataSourceError

BATCH_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_STATE_VERSION = 1
# A claim older than this is taken over even when its process seems alive (pid reuse).
_CLAIM_TIMEOUT_S = 6 * 3600
# What a batch that raised no alert records for each alert kind.
NO_ALERT: dict[str, Any] = {"due": False, "sent": False, "targets": 0, "delivered": 0}



def monitor_dir(cfg: PipelineConfig) -> Path:
    """``<workdir>/monitoring`` (created)."""
    path = cfg.workdir_path() / "monitoring"
    path.mkdir(parents=True, exist_ok=True)
    return path


def monitoring_experiment(cfg: PipelineConfig) -> str:
    """The MLflow experiment of monitoring runs."""
    return cfg.monitor.experiment or f"{cfg.tracking.experiment}-monitoring"


def workspace_dir(cfg: PipelineConfig) -> Path:
    """The Evidently workspace folder."""
    if cfg.monitor.workspace:
        return Path(cfg.monitor.workspace).expanduser().resolve()
    return cfg.workdir_path() / "evidently"


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# 1. Discovery --------------------------------------------------------------------------


def discover_batches(data: str | Path) -> list[str]:
    """The batch files at ``data``: the file itself, or a landing folder's table files.

    In a folder, files are taken oldest first (modification time, then name);
    hidden files and names starting with ``_`` are skipped, so a writer can
    upload as ``_part.parquet`` and rename when done.

    Raises:
        DataSourceError: ``data`` does not exist or is a file of another type.
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise DataSourceError(f"--data {str(path)!r} does not exist; give a batch file or a landing folder")
    if path.is_file():
        if not path.name.lower().endswith(BATCH_SUFFIXES):
            raise DataSourceError(f"--data {str(path)!r}: batch files end with {', '.join(BATCH_SUFFIXES)}")
        return [str(path.resolve())]
    files = [
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.name.lower().endswith(BATCH_SUFFIXES)
    ]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [str(p.resolve()) for p in files]


# State ---------------------------------------------------------------------------------


def _empty_state() -> dict[str, Any]:
    return {"version": _STATE_VERSION, "files": {}, "batches": {}, "models": {}}


@contextmanager
def locked_state(cfg: PipelineConfig) -> Iterator[dict[str, Any]]:
    """The monitoring state under an exclusive lock; changes are written back atomically."""
    folder = monitor_dir(cfg)
    path = folder / "state.json"
    with open(folder / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _read_state_file(path)
            yield state
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(cfg: PipelineConfig) -> dict[str, Any]:
    """A consistent copy of the monitoring state (read-only)."""
    folder = monitor_dir(cfg)
    with open(folder / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return _read_state_file(folder / "state.json")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return _empty_state()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataSourceError(
            f"monitoring state {path} is unreadable ({exc.__class__.__name__}); "
            "restore it from a backup or move it away to start over (every batch will be processed again)"
        ) from None
    if state.get("version") != _STATE_VERSION:
        raise DataSourceError(
            f"monitoring state {path} has version {state.get('version')!r}; this normlab reads {_STATE_VERSION}"
        )
    return state


def _claim_is_live(claim: dict[str, Any]) -> bool:
    """True while the process that claimed a batch may still be working on it."""
    if time.time() - float(claim.get("claimed_ts", 0)) > _CLAIM_TIMEOUT_S:
        return False
    if claim.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(claim["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# 2. Open and claim a batch -------------------------------------------------------------


def open_batch(cfg: PipelineConfig, path: str) -> dict[str, Any]:
    """Fingerprint a batch file and claim it, or say why it is skipped.

    A file that cannot be read is skipped and left in place (it is tried
    again on the next run).

    Returns:
        ``skip`` (bool), ``status`` and ``fingerprint`` (None for an unreadable
        file), ``source``; when skipped also ``reason`` and ``previous`` (the
        earlier record); otherwise ``path`` (the snapshot), ``rows``,
        ``columns`` and ``batch_dir``.
    """
    stat = Path(path).stat()
    try:
        frame = read_table(path)
    except DataSourceError as exc:
        return {"skip": True, "status": "unreadable", "fingerprint": None, "source": path, "previous": None,
                "reason": f"unreadable, left in place: {exc}"}
    fingerprint = fingerprint_frame(frame)
    with locked_state(cfg) as state:
        state["files"][path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fingerprint": fingerprint}
        record = state["batches"].get(fingerprint)
        if record and record.get("status") == "done":
            return _seen(fingerprint, path, record)
        if record and record.get("status") == "claimed" and _claim_is_live(record):
            return {"skip": True, "status": "skipped", "fingerprint": fingerprint, "source": path, "previous": None,
                    "reason": f"being processed by pid {record['pid']} on {record['host']}"}
        state["batches"][fingerprint] = {"status": "claimed", "source": path, "pid": os.getpid(),
                                         "host": socket.gethostname(), "claimed_ts": time.time()}
    opened = {"skip": False, "status": "claimed", "fingerprint": fingerprint, "source": path,
              "rows": int(len(frame)), "columns": [str(c) for c in frame.columns]}
    try:
        batch_dir = monitor_dir(cfg) / "batches" / fingerprint[:16]
        batch_dir.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(batch_dir / "batch.parquet", index=False)
    except BaseException:
        release_batch(cfg, opened)
        raise
    return {**opened, "path": str(batch_dir / "batch.parquet"), "batch_dir": str(batch_dir)}


def triage_batches(cfg: PipelineConfig, paths: list[str]) -> dict[str, Any]:
    """Split batch files into those to open and those already processed, without reading them.

    A file whose size and modification time match a file processed before is
    known; anything else is opened (and still recognised by content there).

    Returns:
        ``new`` (paths) and ``skipped`` (summary entries).
    """
    state = read_state(cfg)
    new, skipped = [], []
    for path in paths:
        stat = Path(path).stat()
        known = state["files"].get(path)
        record = state["batches"].get(known["fingerprint"]) if known else None
        if (record and record.get("status") == "done" and known["size"] == stat.st_size
                and known["mtime_ns"] == stat.st_mtime_ns):
            skipped.append(skipped_entry(_seen(known["fingerprint"], path, record)))
        else:
            new.append(path)
    return {"new": new, "skipped": skipped}


def _seen(fingerprint: str, path: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"skip": True, "status": "skipped", "fingerprint": fingerprint, "source": path, "previous": record,
            "reason": f"already processed at {record['processed_at']} (from {record['source']})"}


def release_batch(cfg: PipelineConfig, batch: dict[str, Any]) -> None:
    """Drop this process's claim on a batch that failed, so the next run retries it."""
    with locked_state(cfg) as state:
        record = state["batches"].get(batch["fingerprint"])
        if record and record.get("status") == "claimed" and record.get("pid") == os.getpid():
            del state["batches"][batch["fingerprint"]]

def model_history(state: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The model's streak and alerts; a new reference (retrained or promoted model) starts afresh."""
    history = state["models"].get(reference["model"])
    if not history or history.get("reference_run_id") != reference["run_id"]:
        return {"reference_run_id": reference["run_id"], "version": reference["version"], "streak": 0,
                "streak_batches": [], "alerts": []}
    return history

def skipped_entry(opened: dict[str, Any]) -> dict[str, Any]:
    """A batch seen before, in the summary JSON: its earlier result, marked skipped."""
    previous = (opened.get("previous") or {}).get("entry") or {}
    return {
        **previous,
        "fingerprint": opened["fingerprint"],
        "source": opened["source"],
        "status": opened["status"],
        "reason": opened["reason"],
        "alert": dict(NO_ALERT),
        "quality_alert": dict(NO_ALERT),
    }
