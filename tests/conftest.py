"""Shared fixtures: offline settings and the real default config, shrunk."""

from __future__ import annotations

import os

# Before anything imports Prefect or Great Expectations: no network here.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root(monkeypatch) -> Path:
    """Run from the repository root, where configs/ and expectations/ live."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture
def tiny_config(tmp_path, repo_root):
    """The real default config, shrunk: few epochs, a private work folder."""
    from normlab.config import load_config

    def make(*overrides: str):
        return load_config(
            REPO / "configs" / "digits.yaml",
            [f"workdir={tmp_path / 'work'}", "train.epochs=2", *overrides],
        )

    return make


@pytest.fixture
def webhook():
    """An HTTP server on 127.0.0.1 recording every JSON body posted to it: (port, received)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, received
    server.shutdown()
    server.server_close()
