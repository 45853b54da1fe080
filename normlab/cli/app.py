"""The Typer app every command registers on, the consoles, and the options commands share."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="normlab",
    help="Governed, reproducible training pipelines with the normalization layer as an experiment axis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Off a terminal (CI logs, pipes) Rich assumes 80 columns; the metric table needs more.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="Pipeline YAML (default: configs/digits.yaml, else built-in defaults).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a setting, e.g. --set model.norm=group (repeatable)."),
]
DataOpt = Annotated[str | None, typer.Option(
    "--data", help="CSV or Parquet file, or a folder of images, to use instead of data.path."
)]
SummaryOpt = Annotated[Path | None, typer.Option("--summary", help="Write a JSON summary of the run here.")]
