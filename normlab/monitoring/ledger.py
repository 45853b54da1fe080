"""The monitoring ledger: folders, batch discovery, the locked state, claims (exactly once).

A batch is identified by its content fingerprint, so a renamed or re-uploaded
copy is recognised. It is *claimed* before processing and marked *done* only
when every stage finished; a failed batch is released and retried on the next
run, and a claim left by a process that died is taken over. State writes are
atomic (write, then rename) under an exclusive file lock, so the state
survives restarts and concurrent monitors.

What the ledger does with the files of a landing folder:

- A file is read only once its size and modification time have stood still
  for `SETTLE_S` seconds, and only if they are the same after the read; a
  file still being written is ``pending``: left for the next run, not marked.
  Names starting with ``_`` or ``.`` are never listed (upload as
  ``_part.csv``, rename when done).
- Symbolic links are ``refused``, whatever they point to (inside the folder or
  not): only regular files in the folder are read, so a link can never make
  the monitor read, or quote in a message, a file outside it. A ``--data``
  that is itself a link to a file is an error; a landing folder given as a
  link to a folder is followed (the operator named it).
- A file that cannot be read, fingerprinted or snapshotted, or whose structure
  the gate cannot take (a reserved ``_normlab_*`` column, lists or records in
  a column), is ``unreadable``: left in place and recorded with the reason and
  its size and time, so it is not read again until it changes.
- A file that changes after it was processed is judged by content: rows
  appended to it (the earlier rows unchanged, same column types) make a batch
  of the new rows only; any other change makes the whole file a new batch;
  the summary says which. Same content again is skipped as processed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import ValidationError

from normlab.config import MonitorConfig, TrackingConfig
from normlab.data.fingerprint import fingerprint_frame
from normlab.data.sources import read_table
from normlab.errors import DataSourceError
from normlab.monitoring.contracts import NO_ALERT, BatchEntry, LandedBatch, Reference, Triage
from normlab.monitoring.landing import folder_identity
from normlab.monitoring.state import (
    STATE_VERSION,
    BatchRecord,
    FileRecord,
    ModelHistory,
    MonitorState,
    Processed,
)

# A claim older than this is taken over even when its process seems alive (pid reuse).
_CLAIM_TIMEOUT_S = 6 * 3600
# Seconds a file's size and modification time must stand still before it is read: a writer that
# appends in bursts (or copies without the ``_`` prefix) gets this long between writes. A younger
# file is waited for, up to this long, and left for the next run if it changes meanwhile.
SETTLE_S = 2.0
# Column names the gate writes into quarantine records; a batch that already has one cannot be gated.
_RESERVED_PREFIX = "_normlab_"
# Longest reason recorded for an unreadable file (one line in the summary).
_REASON_CHARS = 300


def monitor_dir(workdir: Path) -> Path:
    """``<workdir>/monitoring`` (created); ``workdir`` is the absolute work folder (`PipelineConfig.workdir_path`)."""
    path = workdir / "monitoring"
    path.mkdir(parents=True, exist_ok=True)
    return path


def monitoring_experiment(monitor: MonitorConfig, tracking: TrackingConfig) -> str:
    """The MLflow experiment of monitoring runs."""
    return monitor.experiment or f"{tracking.experiment}-monitoring"


def workspace_dir(monitor: MonitorConfig, workdir: Path) -> Path:
    """The Evidently workspace folder: ``monitor.workspace``, else ``<workdir>/evidently``."""
    if monitor.workspace:
        return Path(monitor.workspace).expanduser().resolve()
    return workdir / "evidently"


@contextmanager
def workspace_lock(folder: Path) -> Iterator[Path]:
    """The Evidently workspace ``folder`` (`workspace_dir`) under an exclusive lock, for monitors that share it.

    Evidently's local workspace writes its JSON files in place and unlocked:
    a monitor could read another's half-written project, or both create the
    same project. The lock file sits in the workspace root, where Evidently
    only looks at project (UUID) folders.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".normlab.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# State ---------------------------------------------------------------------------------


@contextmanager
def locked_state(workdir: Path) -> Iterator[MonitorState]:
    """The monitoring state of ``workdir`` under an exclusive lock.

    Changes (records replaced in its mappings) are written back atomically.
    """
    folder = monitor_dir(workdir)
    path = folder / "state.json"
    with open(folder / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _read_state_file(path)
            yield state
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(state.to_json(), indent=1, default=str), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(workdir: Path) -> MonitorState:
    """A consistent copy of the monitoring state of ``workdir`` (read-only)."""
    folder = monitor_dir(workdir)
    with open(folder / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return _read_state_file(folder / "state.json")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state_file(path: Path) -> MonitorState:
    if not path.is_file():
        return MonitorState.empty()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataSourceError(
            f"monitoring state {path} is unreadable ({exc.__class__.__name__}); "
            "restore it from a backup or move it away to start over (every batch will be processed again)"
        ) from None
    version = state.get("version") if isinstance(state, dict) else None
    if version != STATE_VERSION:
        raise DataSourceError(
            f"monitoring state {path} has version {version!r}; this normlab reads {STATE_VERSION}"
        )
    try:
        return MonitorState.model_validate(state)
    except ValidationError as exc:
        raise DataSourceError(
            f"monitoring state {path} does not hold the records this normlab writes ({exc.error_count()} "
            f"problem(s), first at {'.'.join(map(str, exc.errors()[0]['loc']))}); restore it from a backup or "
            "move it away to start over (every batch will be processed again)"
        ) from None


def _claim_is_live(claim: BatchRecord) -> bool:
    """True while the process that claimed a batch may still be working on it."""
    if time.time() - float(claim.claimed_ts or 0) > _CLAIM_TIMEOUT_S:
        return False
    if claim.host != socket.gethostname():
        return True
    try:
        os.kill(int(claim.pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# 2. Open and claim a batch -------------------------------------------------------------


def open_batch(workdir: Path, model: str, path: str) -> LandedBatch:
    """Fingerprint a batch file and claim it for ``model`` (the registered name), or say why it is not processed now.

    The file is read only when it is a regular file (never a symbolic link)
    whose size and modification time stood still for `SETTLE_S` seconds and
    did not change while it was read. A file that cannot be read,
    fingerprinted or snapshotted (any ``Exception``), or that has a reserved
    ``_normlab_*`` or repeated column, is recorded as ``unreadable`` with the
    reason and left in place; it is read again once its size or time change.
    A file processed before and changed since is a new batch: its appended
    rows only when the earlier rows are unchanged, else the whole file
    (``change`` says which).

    Returns:
        The `LandedBatch`: claimed (``skip`` false, with its snapshot), or
        skipped, pending, unreadable or refused with the ``reason``.
    """
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return _not_opened("skipped", path, "no longer there: moved or deleted after it was listed")
    if stat.S_ISLNK(before.st_mode):
        return _quarantine_file(workdir, path, before, "refused", f"refused: {Path(path).name} is a symbolic link; "
                                "only regular files in the landing folder are read, never what a link points to")
    if not stat.S_ISREG(before.st_mode):
        return _quarantine_file(workdir, path, before, "refused", f"refused: {Path(path).name} is not a regular file")
    if not _settled(path, before):
        return _not_opened("pending", path, f"not yet stable: still being written (changed within {SETTLE_S:g} s); "
                                            "left for the next run")
    try:
        frame = read_table(path)
        _check_structure(frame)
        content = fingerprint_frame(frame)
        batch_frame, fingerprint, change = _new_rows(frame, content, _processed(read_state(workdir), path))
        # Converted now so that a column Parquet cannot hold fails here, as the file's fault.
        table = _arrow_table(batch_frame)
        failure = None
    except Exception as exc:  # noqa: BLE001 - one file's failure, whatever it is, quarantines that file only
        failure = exc
    after = _lstat_or_none(path)
    if after is None or _identity(after) != _identity(before):
        return _not_opened("pending", path, "not yet stable: it changed while it was read; left for the next run")
    if failure is not None:
        return _quarantine_file(workdir, path, before, "unreadable", f"unreadable, left in place: {_one_line(failure)}")
    opened = claim_batch(workdir, model, path, (before.st_size, before.st_mtime_ns), fingerprint, content, len(frame))
    if opened.skip:
        return opened
    opened = opened.model_copy(update={"rows": len(batch_frame), "columns": [str(c) for c in batch_frame.columns],
                                       "change": change})
    return write_snapshot(workdir, opened, table)


def claim_batch(workdir: Path, model: str, path: str, identity: tuple[int, int], fingerprint: str, content: str,
                rows: int) -> LandedBatch:
    """Record the file read at ``path`` (its size and modification time, ``identity``) and claim its batch.

    Returns:
        The claimed `LandedBatch` (no snapshot yet), or a skipped one: the batch
        was processed before, or another live process is working on it.
    """
    size, mtime_ns = identity
    with locked_state(workdir) as state:
        state.files[path] = FileRecord(size=size, mtime_ns=mtime_ns, fingerprint=fingerprint, content=content,
                                       rows=rows, processed=_processed(state, path))
        record = state.batches.get(fingerprint)
        if record and record.status == "done":
            return _seen(fingerprint, path, record)
        if record and record.status == "claimed" and _claim_is_live(record):
            return LandedBatch(skip=True, status="skipped", fingerprint=fingerprint, source=path, previous=None,
                               reason=f"being processed by pid {record.pid} on {record.host}")
        claim = BatchRecord(status="claimed", source=path, pid=os.getpid(), host=socket.gethostname(),
                            claimed_ts=time.time(), model=model, landed_ns=mtime_ns)
        if record and record.decision is not None:
            # Committed to the streak once; a retry must not count it again.
            claim = claim.model_copy(update={"decision": record.decision})
        state.batches[fingerprint] = claim
    return LandedBatch(skip=False, status="claimed", fingerprint=fingerprint, source=path, rows=rows,
                       landed_ns=mtime_ns)


def write_snapshot(workdir: Path, opened: LandedBatch, table: Any) -> LandedBatch:
    """Write the claimed batch's rows (a pyarrow ``table``) to its folder; the claim is released if that fails."""
    try:
        import pyarrow.parquet as pq

        batch_dir = monitor_dir(workdir) / "batches" / opened.fingerprint[:16]
        batch_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, batch_dir / "batch.parquet")
    except BaseException:
        release_batch(workdir, opened)
        raise
    return opened.model_copy(update={"path": str(batch_dir / "batch.parquet"), "batch_dir": str(batch_dir)})


def _settled(path: str, before: os.stat_result) -> bool:
    """True when the file stood still for `SETTLE_S` seconds (waiting, at most that long, if it is younger)."""
    age = time.time() - before.st_mtime_ns / 1e9
    if age >= SETTLE_S:
        return True
    time.sleep(SETTLE_S - max(age, 0.0))  # a modification time in the future waits the whole interval
    now = _lstat_or_none(path)
    return now is not None and _identity(now) == _identity(before)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written to, truncated, replaced or swapped for a link."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)


def _lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _check_structure(frame: pd.DataFrame) -> None:
    """Raise for columns the gate cannot take: reserved ``_normlab_*`` names, a name used twice."""
    reserved = [str(c) for c in frame.columns if str(c).startswith(_RESERVED_PREFIX)]
    if reserved:
        raise DataSourceError(f"column {reserved[0]!r} uses the prefix {_RESERVED_PREFIX!r}, reserved for "
                              "quarantine records; rename it")
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise DataSourceError(f"column {str(repeated[0])!r} appears more than once; give each column its own name")


def _arrow_table(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, shortened: a reason that fits one summary line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _processed(state: MonitorState, path: str) -> Processed | None:
    """The last content of ``path`` that was processed to the end: ``content``, ``rows``, ``fingerprint``, ``at``."""
    known = state.files.get(path)
    if not known:
        return None
    record = state.batches.get(known.fingerprint or "")
    if record and record.status == "done" and known.content is not None:
        return Processed(content=known.content, rows=known.rows, fingerprint=known.fingerprint,
                         at=record.processed_at)
    return known.processed


def _new_rows(frame: pd.DataFrame, content: str,
              processed: Processed | None) -> tuple[pd.DataFrame, str, str | None]:
    """The batch in a file: its rows appended since it was last processed, or all of them.

    Returns:
        The batch's rows, its fingerprint and a one-line note on how the file
        changed since it was processed (None when it was not processed before).
    """
    if processed is None:
        return frame, content, None
    if content == processed.content:
        return frame, processed.fingerprint, None  # same content again (touched, or copied back)
    n, at = int(processed.rows), processed.at
    if 0 < n < len(frame) and fingerprint_frame(frame.iloc[:n]) == processed.content:
        new = frame.iloc[n:].reset_index(drop=True)
        return new, fingerprint_frame(new), (f"appended to since it was processed at {at}: this batch is its "
                                             f"{len(new)} new rows (the first {n} were processed then)")
    return frame, content, (f"changed since it was processed at {at} (batch {processed.fingerprint[:12]}): "
                            "processed in full as a new batch")


def _not_opened(status: Literal["skipped", "pending", "unreadable", "refused"], path: str,
                reason: str) -> LandedBatch:
    return LandedBatch(skip=True, status=status, fingerprint=None, source=path, previous=None, reason=reason)


def _quarantine_file(workdir: Path, path: str, st: os.stat_result, status: Literal["unreadable", "refused"],
                     reason: str) -> LandedBatch:
    return record_unread(workdir, path, (st.st_size, st.st_mtime_ns), status, reason)


def record_unread(workdir: Path, path: str, identity: tuple[int, int], status: Literal["unreadable", "refused"],
                  reason: str) -> LandedBatch:
    """Record a batch that is not processed (``unreadable`` or ``refused``) until its size or time (``identity``) change."""
    size, mtime_ns = identity
    with locked_state(workdir) as state:
        state.files[path] = FileRecord(status=status, reason=reason, size=size, mtime_ns=mtime_ns,
                                       at=now_utc().isoformat(), processed=_processed(state, path))
    return _not_opened(status, path, reason)


def triage_batches(workdir: Path, paths: list[str]) -> Triage:
    """Split batch files into those to open and those already settled, without reading them.

    A file whose size and modification time match a file processed before is
    known; so is one recorded as unreadable or refused (it stays so until it
    changes). Anything else is opened (and still recognised by content there).

    Returns:
        The `Triage`: ``new`` (paths) and ``skipped`` (summary entries).
    """
    state = read_state(workdir)
    new, skipped = [], []
    for path in paths:
        st = _lstat_or_none(path)
        if st is None:
            continue  # moved or deleted since it was listed
        known = state.files.get(path)
        size, mtime_ns = folder_identity(path) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)
        same = known is not None and known.size == size and known.mtime_ns == mtime_ns
        if same and known.status in ("unreadable", "refused"):
            skipped.append(skipped_entry(_not_opened(
                known.status, path, f"{known.reason} (recorded {known.at}; not read again until it changes)")))
            continue
        record = state.batches.get(known.fingerprint or "") if same else None
        if record and record.status == "done" and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            skipped.append(skipped_entry(_seen(known.fingerprint, path, record)))
        else:
            new.append(path)
    return Triage(new=new, skipped=skipped)


def _seen(fingerprint: str, path: str, record: BatchRecord) -> LandedBatch:
    return LandedBatch(skip=True, status="skipped", fingerprint=fingerprint, source=path, previous=record.entry,
                       reason=f"already processed at {record.processed_at} (from {record.source})")


def release_batch(workdir: Path, batch: LandedBatch) -> None:
    """Drop this process's claim on a batch that failed, so the next run retries it.

    A batch whose decision was already committed keeps it (``released``): the
    retry reuses it instead of counting the batch in the streak again.
    """
    with locked_state(workdir) as state:
        record = state.batches.get(batch.fingerprint)
        if record and record.status == "claimed" and record.pid == os.getpid():
            if record.decision is not None:
                state.batches[batch.fingerprint] = record.model_copy(update={"status": "released"})
            else:
                del state.batches[batch.fingerprint]


def earlier_claims(state: MonitorState, batch: LandedBatch, model: str) -> list[BatchRecord]:
    """Batches of ``model`` that landed before ``batch`` and that another live monitor claimed but has not decided.

    Landing order is the files' modification time, then name, then
    fingerprint (the order `discover_batches` lists them in). A monitor works
    on one batch at a time, so this process's own claims are never waited for.
    """
    def order(landed_ns: int, source: str, fingerprint: str) -> tuple[int, str, str]:
        return int(landed_ns), Path(source).name, fingerprint

    mine = order(batch.landed_ns, batch.source, batch.fingerprint)
    pid, host = os.getpid(), socket.gethostname()
    return [
        record for fingerprint, record in state.batches.items()
        if record.status == "claimed" and record.model == model and record.decision is None
        and fingerprint != batch.fingerprint and (record.pid, record.host) != (pid, host)
        and order(record.landed_ns or 0, record.source, fingerprint) < mine and _claim_is_live(record)
    ]


def model_history(state: MonitorState, reference: Reference) -> ModelHistory:
    """The model's streak and alerts; a new reference (retrained or promoted model) starts afresh."""
    history = state.models.get(reference.model)
    if history is None or history.reference_run_id != reference.run_id:
        return ModelHistory(reference_run_id=reference.run_id, version=reference.version, streak=0,
                            streak_batches=[], alerts=[])
    return history


def skipped_entry(opened: LandedBatch) -> BatchEntry:
    """A batch not processed this time, in the summary: its earlier result if any, with the status and reason."""
    now = {"fingerprint": opened.fingerprint, "source": opened.source, "status": opened.status,
           "reason": opened.reason, "alert": NO_ALERT, "quality_alert": NO_ALERT}
    if opened.previous is None:
        return BatchEntry(**now)
    return opened.previous.model_copy(update=now)
