"""Real servers for end-to-end tests, started and always stopped here.

- `prefect_api`: one ``prefect server start`` for the session, so each
  ``normlab run`` subprocess skips starting a temporary server of its own.
- `mlflow_server`: one ``mlflow server`` for the session (SQLite backend,
  artifacts served by the server), on 127.0.0.1 and a free port.
- `start_mlflow`: more MLflow servers for tests that stop or restart one.

Every server runs in its own process group, which teardown terminates (then
kills), so nothing is left listening after the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

SERVER_START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A server process started by a test, with its URL and log file."""

    url: str
    process: subprocess.Popen
    log: Path
    command: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server's process group, then kill it if it lingers."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_server(command: list[str], health_url: str, url: str, log: Path, env: dict[str, str]) -> Server:
    """Start ``command`` in a new process group and wait until ``health_url`` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True, cwd=log.parent)
    handle.close()
    server = Server(url=url, process=process, log=log, command=command)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{server.log_tail()}")
        if _healthy(health_url):
            return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"{' '.join(command)} not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{server.log_tail()}")


def base_env() -> dict[str, str]:
    """The environment of every process the e2e tests start: offline, unbuffered."""
    env = dict(os.environ)
    env.update({
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def executable(name: str) -> str:
    """A console script of this environment (``mlflow``, ``prefect``, ``normlab``)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        found = shutil.which(name)
        if found is None:
            raise RuntimeError(f"{name} is not installed next to {sys.executable}")
        return found
    return str(path)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """The URL of a Prefect API server for the session's ``normlab`` subprocesses."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**base_env(), "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    env.pop("PREFECT_API_URL", None)
    url = f"http://127.0.0.1:{port}/api"
    server = start_server([executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                          f"{url}/health", url, home / "server.log", env)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its schema in place.

    Creating the schema takes about 10 s; servers and stores start from a copy.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{db}", str(folder / "artifacts"))
    store.engine.dispose()
    return db


def mlflow_server_command(folder: Path, port: int) -> list[str]:
    return [executable("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts", "--workers", "1"]


def _mlflow_env() -> dict[str, str]:
    # The job runner (trace jobs) adds a dozen processes and nothing these tests use.
    return {**base_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@pytest.fixture(scope="session")
def start_mlflow(mlflow_template_db) -> Iterator[Callable[..., Server]]:
    """Start an MLflow server on a folder (its database and artifacts); all are stopped at the end.

    ``start(folder, port=None)`` reuses the folder's database when present, so a
    server can be stopped and started again on the same store and port.
    """
    servers: list[Server] = []

    def start(folder: Path, port: int | None = None) -> Server:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "mlflow.db").exists():
            shutil.copyfile(mlflow_template_db, folder / "mlflow.db")
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(mlflow_server_command(folder, port), f"{url}/health", url,
                              folder / f"server-{port}-{len(servers)}.log", _mlflow_env())
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def mlflow_server(start_mlflow, tmp_path_factory) -> Server:
    """One MLflow tracking server for the session (SQLite backend, served artifacts)."""
    return start_mlflow(tmp_path_factory.mktemp("mlflow-server"))


def normlab_env(prefect_api: str, **extra: str) -> dict[str, str]:
    """The environment of a ``normlab`` subprocess: the session's Prefect API, offline settings."""
    return {**base_env(), "PREFECT_API_URL": prefect_api, **extra}


def start_normlab(args: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    """Start ``normlab ARGS`` in ``cwd`` (default: the repository root), its output going to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        return subprocess.Popen([executable("normlab"), *args], cwd=cwd, env=env,
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    """Wait for a ``normlab`` subprocess and return its output (kills it on timeout)."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(
            f"normlab did not finish in {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}"
        ) from None
    return log.read_text(errors="replace")


def run_normlab(args: list[str], env: dict[str, str], log: Path, timeout: float = 240,
                cwd: Path = REPO) -> tuple[int, str]:
    """Run ``normlab ARGS`` to the end: (exit code, output)."""
    process = start_normlab(args, env, log, cwd)
    output = finish(process, log, timeout)
    return process.returncode, output


def small_run_args(workdir: Path, *extra: str) -> list[str]:
    """``normlab run`` on the default config, shrunk: two epochs, one torch thread, a private work folder."""
    return ["run", "--set", f"workdir={workdir}", "--set", "train.epochs=2", "--set", "train.threads=1", *extra]


@dataclass
class ServerRuns:
    """Two ``normlab run`` processes that ran at once against the session's MLflow server."""

    server: Server
    workdir: Path
    run_names: list[str]
    summaries: list[dict]
    outputs: list[str]
    secrets: list[str]


# What a user might put in a tracking URI and the alert variable: never to be recorded or shown.
TRACKING_PASSWORD = "pw-Zq8-never-logged"
ALERT_TOKEN = "tok-Xk4-never-logged"


@pytest.fixture(scope="session")
def server_runs(mlflow_server, prefect_api, tmp_path_factory) -> ServerRuns:
    """Train BatchNorm and GroupNorm models at the same time, tracked over HTTP with credentials in the URI."""
    import json

    out = tmp_path_factory.mktemp("server-runs")
    host = mlflow_server.url.removeprefix("http://")
    env = normlab_env(prefect_api, NORMLAB_ALERT_URLS=f"json://127.0.0.1:9/hook?token={ALERT_TOKEN}")
    names = ["digits-batchnorm", "digits-groupnorm"]
    processes = []
    # The second URI's scheme is in upper case: credentials leave every form of URI.
    for name, norm, scheme in zip(names, ["batch", "group"], ["http", "HTTP"], strict=True):
        args = small_run_args(out / "work", "--set", f"tracking.uri={scheme}://alice:{TRACKING_PASSWORD}@{host}",
                              "--set", f"tracking.run_name={name}", "--set", f"model.norm={norm}",
                              "--summary", str(out / f"{name}.json"))
        processes.append(start_normlab(args, env, out / f"{name}.log"))
    outputs = [finish(p, out / f"{name}.log") for p, name in zip(processes, names, strict=True)]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    summaries = [json.loads((out / f"{name}.json").read_text()) for name in names]
    return ServerRuns(mlflow_server, out / "work", names, summaries, outputs, [TRACKING_PASSWORD, ALERT_TOKEN])
