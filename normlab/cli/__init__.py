"""The ``normlab`` command line: one Typer app.

Exit codes: 0 success, 1 unexpected error, 2 bad config or input, 3 data
blocked by the gate, 4 tracking store unreachable, 5 drift found (only with
``normlab monitor --fail-on-drift``), 6 a reproduction differs from its run,
7 a retraining started by ``normlab monitor`` failed (every batch is still recorded).
"""

from __future__ import annotations

# Each command module registers its commands on `app` when imported (it only
# defines functions; nothing runs). Imported in the order `normlab --help` lists them.
# isort: off
from normlab.cli import run, sweep, study, reproduce, deploy, monitor, gate, registry  # noqa: F401
# isort: on
from normlab.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
