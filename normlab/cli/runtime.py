"""What every normlab command sets up around Prefect: quiet user errors, no orphans after a kill.

`prepare_process` is called at the start of each command (`normlab.cli.common.prepare_environment`):

1. Prefect logs a failed task or flow run with its traceback. For a user
   error (bad data, an unreachable store: anything the CLI turns into one
   ``error:`` line) the console shows Prefect's one-line messages only; the
   traceback still goes to the flow run's logs on the Prefect server.
2. Without a configured server, Prefect starts a temporary one as a child
   process and stops it at exit; a ``kill -9`` leaves it running. Each normlab
   process puts its identity in its environment, which that server inherits,
   and the next command stops servers whose normlab process is gone (never a
   server another live normlab process uses, never one a user started).
3. A killed process leaves its flow runs ``Running``. Each normlab process
   tags its flow runs with a token and holds an exclusive lock on a lease file
   named after it (under ``PREFECT_HOME``) for its lifetime; the kernel drops
   the lock however the process ends. The next command finds leases whose lock
   it can take and marks their flow runs ``Crashed``.

Prefect is imported inside the functions that need it (nothing at import).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from normlab.errors import NormlabError

# "<pid>:<start time>" of the normlab process; inherited by the temporary server Prefect starts from it.
OWNER_VAR = "NORMLAB_PROCESS"
# Set by Prefect in the environment of its temporary server only (a `prefect server start` lacks it).
EPHEMERAL_VAR = "PREFECT__SERVER_EPHEMERAL"
# In the command line of Prefect's temporary server (uvicorn with this app factory).
SERVER_APP = "prefect.server.api.server:create_app"
TAG_PREFIX = "normlab.process:"
LEASES = Path("normlab") / "processes"
# A dead process's lease for another Prefect API is kept this long, for a later command on that API.
KEEP_FOREIGN_LEASE_S = 30 * 24 * 3600
STOP_WAIT_S = 10.0
OPEN_STATES = ("RUNNING", "PENDING")

UserErrorTest = Callable[[BaseException], Any]


# --- 1. No traceback on the console for a user error ---------------------------------------------


class UserErrorFormatter(logging.Formatter):
    """Formats like ``inner``, but without the traceback when the record's exception is a user error.

    A formatter rather than a filter: a filter would have to change the record
    itself (on Python < 3.12), which every later handler then sees.
    """

    def __init__(self, inner: logging.Formatter | None, is_user_error: UserErrorTest) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.is_user_error = is_user_error

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, NormlabError) or self.is_user_error(exc)):
            record = copy.copy(record)
            record.exc_info = None
            record.exc_text = None
        return self.inner.format(record)


def quiet_user_tracebacks(is_user_error: UserErrorTest) -> int:
    """Drop user-error tracebacks from Prefect's console handlers; the number of handlers changed.

    Sets Prefect's logging up first, so that Prefect's own later setup (on
    ``import prefect``) is incremental and keeps these handlers. The API log
    handler, which ships records to the flow run's logs, is left as it is.
    """
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    handlers = {id(h): h for logger in loggers for h in logger.handlers if isinstance(h, PrefectConsoleHandler)}
    for handler in handlers.values():
        if isinstance(handler.formatter, UserErrorFormatter):
            handler.formatter.is_user_error = is_user_error
        else:
            handler.setFormatter(UserErrorFormatter(handler.formatter, is_user_error))
    return len(handlers)


# --- 2. No temporary Prefect server left behind ---------------------------------------------------


def process_identity(pid: int | None = None) -> str:
    """``"<pid>:<start time>"``: names one process, even after its pid is reused."""
    process = psutil.Process(pid)
    return f"{process.pid}:{process.create_time():.2f}"


def is_alive(identity: str) -> bool:
    """Whether the process named by `process_identity` still runs (a zombie does not)."""
    pid, _, started = identity.partition(":")
    try:
        process = psutil.Process(int(pid))
        return f"{process.create_time():.2f}" == started and process.status() != psutil.STATUS_ZOMBIE
    except (ValueError, psutil.Error):
        return False


def orphan_servers() -> list[tuple[psutil.Process, str]]:
    """Prefect temporary servers of this user whose normlab process is gone: ``(server, owner identity)``."""
    uid = os.getuid()
    found = []
    for process in psutil.process_iter(["uids", "cmdline"]):
        try:
            if process.info["uids"] is None or process.info["uids"].real != uid:
                continue
            if SERVER_APP not in (process.info["cmdline"] or []):
                continue
            env = process.environ()
        except psutil.Error:
            continue  # gone, or not ours to read
        owner = env.get(OWNER_VAR)
        if env.get(EPHEMERAL_VAR) and owner and not is_alive(owner):
            found.append((process, owner))
    return found


def stop_orphan_servers(wait_s: float = STOP_WAIT_S) -> list[tuple[int, str]]:
    """Stop the `orphan_servers` (terminate, then kill): ``(server pid, owner identity)`` of each stopped."""
    stopped = []
    for server, owner in orphan_servers():
        with contextlib.suppress(psutil.Error):
            server.terminate()  # psutil checks first that the pid still names the same process
            stopped.append((server, owner))
    _, alive = psutil.wait_procs([server for server, _ in stopped], timeout=wait_s)
    for server in alive:
        with contextlib.suppress(psutil.Error):
            server.kill()
    psutil.wait_procs(alive, timeout=wait_s)
    return [(server.pid, owner) for server, owner in stopped]


# --- 3. Flow runs of a killed process marked Crashed ----------------------------------------------


@dataclass
class ProcessLease:
    """This process's lease: the file, locked while the process lives, and the tag of its flow runs."""

    path: Path
    tag: str
    fd: int = field(repr=False)

    def release(self) -> None:
        """Remove the lease (the process ends normally: its flow runs were closed by Prefect)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease file says: the process, its host, the tag of its flow runs, the Prefect API it used.

    Read leniently: a lease cut short or written by another version gives the fields it has (the
    others None), so a dead process's lease is always removed.
    """

    pid: int | None = None
    host: str | None = None
    tag: str | None = None
    target: str | None = None
    started: str | None = None

    @classmethod
    def parse(cls, text: bytes) -> LeaseRecord:
        """The record in a lease file's bytes (an empty one when they are not a JSON object)."""
        try:
            data = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return cls()
        if not isinstance(data, dict):
            return cls()
        pid = data.get("pid")
        text_of = {k: data[k] if isinstance(data.get(k), str) else None for k in ("host", "tag", "target", "started")}
        return cls(pid=pid if isinstance(pid, int) else None, **text_of)


def api_target() -> str:
    """A short hash naming the Prefect API (its URL, or the database of the temporary server)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    where = settings.api.url
    if not where:
        db = settings.server.database.connection_url
        where = "ephemeral " + (db.get_secret_value() if db is not None else "")
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:16]


def lease_folder() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home) / LEASES


def take_lease(folder: Path, target: str) -> ProcessLease:
    """Write and lock this process's lease; the lock is held until the process ends."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = uuid.uuid4().hex[:12]
    # Locked before it gets its final name: no other process ever sees it unlocked while this one lives.
    partial = folder / f".{token}.partial"
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    record = LeaseRecord(pid=os.getpid(), host=socket.gethostname(), tag=TAG_PREFIX + token, target=target,
                         started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    os.write(fd, json.dumps(asdict(record)).encode("utf-8"))
    path = folder / f"{token}.json"
    os.replace(partial, path)
    return ProcessLease(path=path, tag=TAG_PREFIX + token, fd=fd)


@contextlib.contextmanager
def dead_leases(folder: Path) -> Iterator[list[tuple[Path, LeaseRecord]]]:
    """The leases whose process is gone, each locked (by this process) until the block ends."""
    held: list[tuple[Path, LeaseRecord, int]] = []
    try:
        for path in sorted(folder.glob("*.json")):
            fd = _try_lock(path)
            if fd is None:
                continue  # its process lives, or another command is closing it
            held.append((path, _read_lease(fd), fd))
        yield [(path, record) for path, record, _ in held]
    finally:
        for _, _, fd in held:
            os.close(fd)


def crash_flow_runs(client: Any, tag: str, message: str) -> list[str]:
    """Mark the open flow runs tagged ``tag`` (and their open task runs) Crashed; the flow run names."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    open_types = [StateType[name] for name in OPEN_STATES]
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        tags=FlowRunFilterTags(all_=[tag]), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_types))))
    if not runs:
        return []
    tasks = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in runs])),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=open_types))))
    for task_run in tasks:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    for run in runs:
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return [run.name for run in runs]


def close_dead_runs(folder: Path, target: str, get_client: Callable[[], Any]) -> list[tuple[str, LeaseRecord]]:
    """Crash the open flow runs of dead processes on this API and remove their leases.

    ``get_client`` opens a Prefect client (a context manager); it is called
    only when a dead lease names this API. Leases for another API stay for a
    later command on it, up to `KEEP_FOREIGN_LEASE_S`. Returns
    ``(flow run name, lease)`` for each run marked Crashed.
    """
    crashed: list[tuple[str, LeaseRecord]] = []
    with dead_leases(folder) as leases:
        ours = [(path, record) for path, record in leases if record.target == target]
        for path, record in leases:
            if record.target != target and time.time() - _mtime(path) > KEEP_FOREIGN_LEASE_S:
                path.unlink(missing_ok=True)
        if not ours:
            return crashed
        with get_client() as client:
            for path, record in ours:
                if record.tag:
                    message = (f"normlab process {record.pid} on {record.host} ended without "
                               f"finishing this run (killed?); marked Crashed by process {os.getpid()}")
                    crashed += [(name, record) for name in crash_flow_runs(client, record.tag, message)]
                path.unlink(missing_ok=True)
    return crashed


# --- All three, once per process ------------------------------------------------------------------


@dataclass
class _Process:
    lease: ProcessLease | None
    tags: contextlib.ExitStack


_current: _Process | None = None


def prepare_process(is_user_error: UserErrorTest) -> list[str]:
    """Set this normlab process up (see the module docstring); one line for each thing cleaned up.

    Idempotent: a second call in the same process only looks for orphans again.
    """
    global _current
    notes = []
    os.environ[OWNER_VAR] = process_identity()
    for pid, owner in stop_orphan_servers():
        notes.append(f"stopped Prefect's temporary server (pid {pid}) left running by normlab process "
                     f"{owner.partition(':')[0]}, which ended without stopping it")
    quiet_user_tracebacks(is_user_error)
    target = api_target()
    if _current is None:
        from prefect import tags

        try:
            lease = take_lease(lease_folder(), target)
        except OSError:
            lease = None  # PREFECT_HOME not writable: no crash detection for this process
        stack = contextlib.ExitStack()
        if lease is not None:
            stack.enter_context(tags(lease.tag))  # every flow and task run of this process carries the tag
            atexit.register(lease.release)
        _current = _Process(lease=lease, tags=stack)
    import httpx

    try:
        crashed = close_dead_runs(lease_folder(), target, _prefect_client)
    except (OSError, RuntimeError, httpx.HTTPError) as exc:
        # The API is down or the temporary server did not start: the leases stay for the next command.
        notes.append(f"could not mark the flow runs of killed normlab processes Crashed yet ({type(exc).__name__})")
        crashed = []
    for name, record in crashed:
        notes.append(f"flow run '{name}' marked Crashed: its normlab process {record.pid} was killed")
    return notes


def _prefect_client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None (locked elsewhere, or removed)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # removed by another command after this one opened it
        os.close(fd)
        return None
    return fd


def _read_lease(fd: int) -> LeaseRecord:
    os.lseek(fd, 0, os.SEEK_SET)
    return LeaseRecord.parse(os.read(fd, 1 << 16))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
