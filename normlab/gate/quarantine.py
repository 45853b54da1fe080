"""Keep every rejected row, with its reasons, and prove that no row was lost.

A quarantine file holds the rejected rows exactly as they arrived (original
values and dtypes, before any repair), plus these columns:

``_normlab_row``       the row's position in the batch
``_normlab_status``    ``quarantined`` (taken out by a check) or ``blocked`` (its whole batch was rejected)
``_normlab_checks``    the checks that rejected it, ``; ``-separated (``name(column)`` for column checks)
``_normlab_reasons``   why each of those checks exists, in the same order
``_normlab_batch``     the source batch's fingerprint
``_normlab_source``    where the batch came from
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from normlab.errors import DataSourceError
from normlab.gate.results import take_rows

ROW, STATUS, CHECKS, REASONS, BATCH, SOURCE = (
    "_normlab_row", "_normlab_status", "_normlab_checks", "_normlab_reasons", "_normlab_batch", "_normlab_source",
)
QUARANTINE_COLUMNS = (ROW, STATUS, CHECKS, REASONS, BATCH, SOURCE)
_SEP = "; "


@dataclass(frozen=True)
class Accounting:
    """Where every row of a batch went (`verify_accounting`): rows_in = rows_accepted + rows_quarantined."""

    rows_in: int
    rows_accepted: int
    rows_quarantined: int


@dataclass
class Rejection:
    """Rows one check rejected, and why."""

    label: str
    reason: str
    rows: np.ndarray


def annotate(
    frame: pd.DataFrame,
    positions: np.ndarray,
    rejections: list[Rejection],
    *,
    blocked_by: list[Rejection],
    fingerprint: str,
    source: str,
) -> pd.DataFrame:
    """The rejected rows of ``frame`` with their quarantine columns.

    Args:
        frame: The batch as it arrived.
        positions: Sorted positions of every rejected row.
        rejections: Row-level rejections (each row lists every check that took it).
        blocked_by: Checks that rejected the whole batch; they are listed on every row.
        fingerprint: The batch's fingerprint.
        source: Where the batch came from.
    """
    clash = [c for c in QUARANTINE_COLUMNS if c in frame.columns]
    if clash:
        raise DataSourceError(f"the batch has a column named {clash[0]!r}, reserved for quarantine records; rename it")
    checks = np.full(positions.size, "", dtype=object)
    reasons = np.full(positions.size, "", dtype=object)
    every_row = [Rejection(r.label, r.reason, positions) for r in blocked_by]
    for rejection in [*rejections, *every_row]:
        at = np.searchsorted(positions, rejection.rows)
        checks[at] = checks[at] + (rejection.label + _SEP)
        reasons[at] = reasons[at] + (rejection.reason + _SEP)
    out = take_rows(frame, positions)
    out[ROW] = positions.astype(np.int64)
    out[STATUS] = "blocked" if blocked_by else "quarantined"
    out[CHECKS] = [c[: -len(_SEP)] for c in checks]
    out[REASONS] = [r[: -len(_SEP)] for r in reasons]
    out[BATCH] = fingerprint
    out[SOURCE] = source
    return out


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame to Parquet atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def parquet_rows(path: str | Path | None) -> int:
    """Rows in a Parquet file, read from its footer (0 for no file)."""
    if path is None:
        return 0
    import pyarrow.parquet as pq

    return int(pq.read_metadata(str(path)).num_rows)


def verify_accounting(rows_in: int, accepted_path: str | None, quarantine_path: str | None) -> Accounting:
    """Check rows_in = rows_accepted + rows_quarantined against the files written.

    Raises:
        RuntimeError: The files do not add up: a bug, never a data problem.
    """
    accepted, quarantined = parquet_rows(accepted_path), parquet_rows(quarantine_path)
    if accepted + quarantined != rows_in:
        raise RuntimeError(
            f"quarantine accounting broken: {rows_in} rows in, {accepted} accepted ({accepted_path}) "
            f"+ {quarantined} quarantined ({quarantine_path})"
        )
    return Accounting(rows_in=rows_in, rows_accepted=accepted, rows_quarantined=quarantined)
