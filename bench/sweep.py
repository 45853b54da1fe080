"""Sweep scaling: the same 8-point sweep on 1 and on 2 local Dask workers.

Run from the repository root::

    python -m bench.sweep [POINTS]      # prints both times and the speed-up

Each point is a full grid point of the default digits pipeline (split, 10
epochs of training, evaluation of every OOD split, MLflow logging of metrics,
plots and the model) at batch size 2, the small-batch end of the default grid
where a sweep spends most of its time; four norms x two seeds. Two times are
reported per sweep:

- ``seconds``: the whole sweep flow, end to end: the parent run, the data gate,
  starting the Dask cluster (worker processes importing torch, MLflow and
  Prefect), the grid, stopping the cluster and the report. The fixed costs count
  against the speed-up here.
- ``grid_seconds``: from the first child run's start to the last one's end, as
  MLflow recorded them: the part the workers share.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NORMS = ("batch", "layer", "group", "rms")
RESULTS = Path(__file__).with_name("results_sweep.json")


def grid_overrides(points: int) -> list[str]:
    """A grid of exactly ``points`` points: four norms x points/4 seeds, else one norm x points seeds."""
    if points % len(NORMS) == 0:
        norms, seeds = NORMS, range(points // len(NORMS))
    else:
        norms, seeds = NORMS[:1], range(points)
    return [f"sweep.norms=[{','.join(norms)}]", f"sweep.seeds=[{','.join(map(str, seeds))}]"]


def run(workers: int, points: int = 8, *, epochs: int = 10, batch_size: int = 2) -> dict[str, Any]:
    """Time one sweep of ``points`` grid points on ``workers`` local Dask worker processes.

    Returns:
        ``workers``, ``points``, ``seconds`` (wall time of the whole sweep flow),
        ``grid_seconds`` (first child run start to last child run end) and
        ``train_seconds`` (the points' training time, summed).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from normlab.config import load_config
    from normlab.flows.sweep import sweep_flow
    from normlab.tracking import TrackingStore

    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as tmp:
        cfg = load_config(None, [
            f"workdir={tmp}", f"train.epochs={epochs}", f"sweep.batch_sizes=[{batch_size}]",
            "sweep.lr_scaling=linear", f"sweep.workers={workers}", *grid_overrides(points),
        ])
        start = time.perf_counter()
        summary = sweep_flow(cfg)
        seconds = time.perf_counter() - start
        client = TrackingStore(cfg.tracking_uri()).client
        children = [client.get_run(p.run_id).info for p in summary.points]
    finished = [p for p in summary.points if p.finished]
    if len(finished) != points:
        raise RuntimeError(f"{points - len(finished)} of {points} points failed")
    grid_ms = max(c.end_time for c in children) - min(c.start_time for c in children)
    return {"workers": workers, "points": points, "seconds": seconds, "grid_seconds": grid_ms / 1000.0,
            "train_seconds": sum(p.metrics["time/train_seconds"] for p in finished)}


def main() -> None:
    """Measure the sweep on 1 and on 2 workers, print the ratios, save the numbers."""
    points = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    one = run(1, points)
    two = run(2, points)
    result = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "one_worker": one, "two_workers": two,
              "speedup": one["seconds"] / two["seconds"],
              "grid_speedup": one["grid_seconds"] / two["grid_seconds"]}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{points} points: 1 worker {one['seconds']:.1f} s (grid {one['grid_seconds']:.1f} s), "
          f"2 workers {two['seconds']:.1f} s (grid {two['grid_seconds']:.1f} s); speed-up "
          f"{result['speedup']:.2f}x end to end, {result['grid_speedup']:.2f}x on the grid (target >= 1.7x); "
          f"load average {result['load_average'][0]:.1f} on {result['cpus']} CPUs")


if __name__ == "__main__":
    main()
