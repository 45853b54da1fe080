"""Data gate speed: normlab's gate against a plain pandas pass doing the same checks.

Run from the repository root::

    python -m bench.gate                   # 10k, 100k and 1M rows x 65 columns
    python -m bench.gate 1000000           # one size
    python -m bench.gate 100000 --gx       # also time Great Expectations on the suite

The batch is clean and digits-like (the 1797 digits resampled with a +-1
pixel jitter, so rows are unique and labels agree with their neighbours),
validated with the default config and ``expectations/digits.json`` (131
expectations), with an evaluation index of 10,000 earlier rows so the
contamination check runs.

* ``gate_s``: `normlab.gate.assess` on the frame in memory: every check of the
  gate, with row-level results and the accepted rows;
* ``pandas_s``: the same checks written as a plain pandas script would
  (``isna``, ``between``, ``isin`` per expectation, ``duplicated``, hashed
  contamination lookup, scikit-learn kNN on a sample of the same size, ``value_counts``)
  ending with the accepted frame ``df[~bad]``;
* ``ratio``: gate_s / pandas_s, both the median of ``repeats`` interleaved runs
  (the machine may be shared: the ratio is the robust number);
* ``end_to_end_s``: `normlab.gate.run_gate` from the Parquet snapshot
  (read, assess, reports, accounting; nothing to rewrite on a clean batch);
* ``gx_s`` (with ``--gx``): Great Expectations itself on the suite.

Imports are done before timing (Great Expectations takes about 10 s to import).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from normlab.gate.contracts import Suite

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results_gate.json")
SUITE = REPO / "expectations" / "digits.json"
SIZES = (10_000, 100_000, 1_000_000)
INDEX_ROWS = 10_000
TARGET_SECONDS, TARGET_RATIO = 5.0, 3.0


def digits_like(rows: int, seed: int) -> pd.DataFrame:
    """Digits rows resampled with a +-1 jitter on every pixel (clipped to 0..16), with labels."""
    from normlab.data.sources import load_builtin

    digits = load_builtin("digits")
    rng = np.random.default_rng(seed)
    picked = digits.to_numpy()[rng.integers(0, len(digits), rows)]
    picked[:, :-1] = np.clip(picked[:, :-1] + rng.integers(-1, 2, (rows, picked.shape[1] - 1)), 0, 16)
    # Laid out as a frame read from Parquet is: one block, each column contiguous in memory
    # (a fragmented frame slows pandas down, strided columns slow column-wise code down).
    return pd.DataFrame(np.asfortranarray(picked), columns=digits.columns)


def pandas_pass(df: pd.DataFrame, suite: Suite, cfg: Any, index: pd.DataFrame) -> int:
    """The gate's checks as a plain pandas script; returns the number of rejected rows."""
    from sklearn.neighbors import NearestNeighbors

    label = cfg.data.label
    features = [c for c in df.columns if c != label]
    bad = pd.Series(False, index=df.index)
    table_ok = True
    for exp in suite.expectations:
        kw = exp.kwargs
        if exp.type == "expect_table_columns_to_match_set":
            table_ok &= set(df.columns) == set(kw["column_set"])
        elif exp.type == "expect_table_row_count_to_be_between":
            table_ok &= len(df) >= kw["min_value"]
        elif exp.type == "expect_column_values_to_not_be_null":
            bad |= df[kw["column"]].isna()
        elif exp.type == "expect_column_values_to_be_between":
            col = df[kw["column"]]
            bad |= col.notna() & ~col.between(kw["min_value"], kw["max_value"])
        elif exp.type == "expect_column_values_to_be_in_set":
            col = df[kw["column"]]
            bad |= col.notna() & ~col.isin(kw["value_set"])
    numeric = df.select_dtypes("number")
    bad |= ~np.isfinite(numeric).all(axis=1)
    bad |= df.duplicated()
    hashed = pd.util.hash_pandas_object(df[features], index=False)
    bad |= hashed.isin(index["feature_hash"])
    sample = df.sample(n=min(cfg.gate.label_noise.sample_rows, len(df)), random_state=cfg.seed)
    x = sample[features].to_numpy(dtype=float)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    k = cfg.gate.label_noise.k
    _, nearest = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()
    y = sample[label].to_numpy()
    noisy_share = float(((y[nearest] == y[:, None]).sum(axis=1) * 2 < k).mean())
    accepted = df[~bad]
    shares = accepted[label].value_counts(normalize=True)
    table_ok &= bool(shares.min() >= cfg.gate.class_balance.min_share)
    table_ok &= len(accepted) >= cfg.gate.row_count.min_rows
    table_ok &= noisy_share <= cfg.gate.label_noise.max_share
    return len(df) if not table_ok else int(bad.sum())


def run(rows: int, *, repeats: int | None = None, gx: bool = False) -> dict[str, Any]:
    """Time the gate and the pandas pass on one clean ``rows`` x 65 batch.

    Args:
        rows: Batch rows.
        repeats: Interleaved runs of each (default: 5 below 1M rows, else 3).
        gx: Also time Great Expectations on the suite (minutes at 1M rows).

    Returns:
        ``rows``, ``columns``, ``gate_s``, ``pandas_s``, ``ratio``,
        ``end_to_end_s``, ``gx_s`` (None without ``gx``), ``rows_rejected``
        (both passes agree on it) and whether the targets (gate <= 5 s,
        ratio <= 3) are met.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import sklearn.neighbors  # noqa: F401 - imported before timing: a fixed cost per process

    from normlab import gate
    from normlab.config import load_config
    from normlab.contracts import Batch
    from normlab.data.fingerprint import fingerprint_frame
    from normlab.gate import checks
    from normlab.gate.expectations import evaluate_suite, load_suite

    repeats = repeats or (5 if rows < 1_000_000 else 3)
    frame = digits_like(rows, seed=2)
    earlier = digits_like(INDEX_ROWS, seed=3)
    features = [c for c in frame.columns if c != "label"]
    suite = load_suite(SUITE)
    out: dict[str, Any] = {"rows": rows, "columns": frame.shape[1], "expectations": len(suite.expectations),
                           "cpus": os.cpu_count(), "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="normlab-bench-gate-") as tmp:
        cfg = load_config(REPO / "configs" / "digits.yaml", [f"workdir={tmp}/work", f"data.expectations={SUITE}"])
        index = pd.DataFrame({"feature_hash": checks.content_hashes(earlier, features), "row_hash": np.uint64(0),
                              "salt": cfg.splits.salt})
        scope = gate.GateScope.from_config(cfg)
        index_dir = scope.evaluation_index
        index_dir.mkdir(parents=True)
        index.to_parquet(index_dir / "earlier.parquet", index=False)
        # The baseline looks rows up by pandas' own row hash (same dtypes on both sides).
        pandas_index = pd.DataFrame({"feature_hash": pd.util.hash_pandas_object(earlier[features], index=False)})

        gate_times, pandas_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            assessment = gate.assess(frame, scope, suite, evaluation_index=index)
            gate_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            pandas_rejected = pandas_pass(frame, suite, cfg, pandas_index)
            pandas_times.append(time.perf_counter() - start)
        gate_rejected = rows - int(assessment.accepted.size)
        if gate_rejected != pandas_rejected:
            raise RuntimeError(f"the gate rejected {gate_rejected} rows, the pandas pass {pandas_rejected}")

        snapshot = Path(tmp) / "batch.parquet"
        frame.to_parquet(snapshot, index=False)
        batch = Batch(path=str(snapshot), source="bench", fingerprint=fingerprint_frame(frame), rows=rows,
                      columns=list(frame.columns))
        start = time.perf_counter()
        result = gate.run_gate(scope, batch, Path(tmp) / "run")
        out["end_to_end_s"] = round(time.perf_counter() - start, 3)
        out["blocked"] = result.blocked

        out["gx_s"] = None
        if gx:
            import great_expectations  # noqa: F401 - imported before timing

            start = time.perf_counter()
            evaluate_suite(frame, suite, engine="gx")
            out["gx_s"] = round(time.perf_counter() - start, 3)

    out["gate_s"] = round(statistics.median(gate_times), 3)
    out["pandas_s"] = round(statistics.median(pandas_times), 3)
    out["gate_runs_s"] = [round(t, 3) for t in gate_times]
    out["pandas_runs_s"] = [round(t, 3) for t in pandas_times]
    out["ratio"] = round(out["gate_s"] / out["pandas_s"], 3)
    out["rows_rejected"] = gate_rejected
    out["meets_targets"] = out["gate_s"] <= TARGET_SECONDS and out["ratio"] <= TARGET_RATIO
    return out


def main() -> None:
    """Measure every size (or the sizes given), print gate, pandas and the ratio, save the numbers."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sizes = [int(a) for a in args] or list(SIZES)
    load_before = os.getloadavg()[0]
    results = [run(n, gx="--gx" in sys.argv) for n in sizes]
    load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    print(f"{'rows':>9} {'gate s':>8} {'pandas s':>9} {'ratio':>6} {'end-to-end s':>13} {'GX s':>7}  targets "
          f"(gate <= {TARGET_SECONDS:g} s, ratio <= {TARGET_RATIO:g})")
    for r in results:
        gx = f"{r['gx_s']:.2f}" if r["gx_s"] is not None else "-"
        print(f"{r['rows']:>9} {r['gate_s']:>8.3f} {r['pandas_s']:>9.3f} {r['ratio']:>6.2f} "
              f"{r['end_to_end_s']:>13.2f} {gx:>7}  {'met' if r['meets_targets'] else 'NOT met'}")
    RESULTS.write_text(json.dumps({"results": results, "load_average": load}, indent=2) + "\n")
    from bench.evaluation_table import README, rewrite_block

    rewrite_block(README, *README_BLOCK, render_readme(results, load))


README_BLOCK = ("<!-- gate-table:start -->", "<!-- gate-table:end -->")


def render_readme(results: list[dict[str, Any]], load: list[float]) -> str:
    """The README's gate table (and Great Expectations' own time, where measured), from the results file."""
    lines = [README_BLOCK[0], f"Load average {load[0]:g} to {load[1]:g} while measured "
             "(`bench/results_gate.json`).", "", "| rows x 65 | gate | plain pandas | ratio | `run_gate` from Parquet | Great Expectations |",
             "|---|---|---|---|---|---|"]
    for r in results:
        gx = f"{r['gx_s']:.1f} s" if r.get("gx_s") is not None else "not measured"
        lines.append(f"| {r['rows']:,} | {r['gate_s']:.2f} s | {r['pandas_s']:.2f} s | {r['ratio']:.2f} | "
                     f"{r['end_to_end_s']:.2f} s | {gx} |")
    lines.append(README_BLOCK[1])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
