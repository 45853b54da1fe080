"""Sweep scaling: the same 8-point sweep on 1 and on 2 local Dask workers.

Run from the repository root::

    python -m bench.sweep            # prints both times and the speed-up

Each point is a full grid point (split, 10 epochs of training at batch size 8,
evaluation, MLflow logging of metrics, plots and the model). Times are end to
end: the parent run, the data gate, starting and stopping the Dask cluster, the
grid and the report, so the fixed costs count against the speed-up.
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


def run(workers: int, points: int = 8, *, epochs: int = 10, batch_size: int = 8) -> dict[str, Any]:
    """Time one sweep of ``points`` grid points on ``workers`` local Dask worker processes.

    Returns:
        ``workers``, ``points``, ``seconds`` (wall time of the whole sweep flow) and
        ``train_seconds`` (the points' training time summed).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.sweep import sweep_flow
    from normlab.config import load_config

    with tempfile.TemporaryDirectory(prefix="normlab-bench-") as tmp:
        cfg = load_config(None, [
            f"workdir={tmp}", f"train.epochs={epochs}", f"sweep.batch_sizes=[{batch_size}]",
            "sweep.lr_scaling=none", f"sweep.workers={workers}", *grid_overrides(points),
        ])
        start = time.perf_counter()
        summary = sweep_flow(cfg)
        seconds = time.perf_counter() - start
    finished = [p for p in summary["points"] if p["status"] == "finished"]
    if len(finished) != points:
        raise RuntimeError(f"{points - len(finished)} of {points} points failed")
    return {"workers": workers, "points": points, "seconds": seconds,
            "train_seconds": sum(p["metrics"]["time/train_seconds"] for p in finished)}


def main() -> None:
    """Measure 8 points on 1 and on 2 workers, print the ratio, save the numbers."""
    points = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    one = run(1, points)
    two = run(2, points)
    result = {"cpus": os.cpu_count(), "one_worker": one, "two_workers": two,
              "speedup": one["seconds"] / two["seconds"]}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{points} points: 1 worker {one['seconds']:.1f} s, 2 workers {two['seconds']:.1f} s, "
          f"speed-up {result['speedup']:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
