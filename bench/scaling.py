"""Scaling: the data gate and the drift check at growing row counts, and the sweep on 1 and 2 Dask workers.

The work itself lives in `bench.gate`, `bench.drift` and `bench.sweep`, next to
the features they exercise: ``bench.gate.run(rows)`` and ``bench.drift.run(rows)``
process a batch of ``rows`` rows, ``bench.sweep.run(workers, points)`` runs a
sweep of ``points`` grid points. This section times each call from the
outside (wall clock, the call's own report kept alongside), fits how the gate
and drift costs grow with rows (the log-log slope: 1 is linear) from the
figure each report gives for the check itself, and compares
the sweep's wall time on 1 and 2 workers. A module that does not exist yet is
reported as not available, with no number.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import Any

from bench import Size, fmt, target

# A slope of the cost against rows above this is not linear any more.
TARGET_SLOPE = 1.1

# The figure of each module's report that is the check's own cost (its report
# also times baselines and set-up, which are not the check); wall time otherwise.
COST_KEYS = {"gate": "gate_s", "drift": "batch_s"}

_PLAN: dict[str, dict[str, Any]] = {
    "smoke": {"rows": (1_000, 4_000), "sweep_points": None},
    "quick": {"rows": (10_000, 100_000), "sweep_points": 2},
    "full": {"rows": (10_000, 100_000, 1_000_000), "sweep_points": 8},
}


def load_module(name: str) -> tuple[Any, str | None]:
    """``bench.<name>`` with a ``run`` function, or None and why it is not available."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.{name}":
            raise  # the module exists but one of its own imports is missing: a real error
        return None, f"bench/{name}.py does not exist yet"
    if not callable(getattr(module, "run", None)):
        return None, f"bench/{name}.py has no run()"
    return module, None


def json_safe(value: Any) -> Any:
    """What a section's ``run`` returned, reduced to JSON (numbers, text, lists, dicts)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def loglog_slope(rows: list[int], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) against log(rows); None with fewer than two sizes."""
    if len(rows) < 2:
        return None
    xs = [math.log(r) for r in rows]
    ys = [math.log(max(s, 1e-9)) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def _rows_scaling(name: str, sizes: tuple[int, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    module, why = load_module(name)
    if module is None:
        return ({"check": name, "status": "not available", "reason": why},
                [target(f"{name}: cost grows linearly with rows (log-log slope)", None, at_most=TARGET_SLOPE,
                        why_not=why)])
    points = []
    for rows in sizes:
        start = time.perf_counter()
        report = json_safe(module.run(rows))
        wall = time.perf_counter() - start
        cost = report.get(COST_KEYS[name]) if isinstance(report, dict) else None
        source = COST_KEYS[name] if isinstance(cost, (int, float)) else "wall time of run()"
        points.append({"rows": rows, "seconds": cost if source != "wall time of run()" else wall,
                       "cost": source, "wall_seconds": wall, "report": report})
    slope = loglog_slope([p["rows"] for p in points], [p["seconds"] for p in points])
    return ({"check": name, "status": "ok", "points": points, "slope": slope},
            [target(f"{name}: cost grows linearly with rows (log-log slope, {sizes[0]:,} to {sizes[-1]:,})",
                    slope, at_most=TARGET_SLOPE)])


def _sweep(points: int | None) -> dict[str, Any]:
    if points is None:
        return {"check": "sweep", "status": "skipped", "reason": "not run at smoke size (a Dask cluster per call)"}
    module, why = load_module("sweep")
    if module is None:
        return {"check": "sweep", "status": "not available", "reason": why}
    runs = []
    for workers in (1, 2):
        start = time.perf_counter()
        report = module.run(workers, points)
        runs.append({"workers": workers, "points": points, "seconds": time.perf_counter() - start,
                     "report": json_safe(report)})
    return {"check": "sweep", "status": "ok", "runs": runs, "speedup": runs[0]["seconds"] / runs[1]["seconds"]}


def run(size: Size = "quick", threads: int | None = None) -> dict[str, Any]:
    """Gate and drift at growing row counts, sweep on 1 and 2 workers; what is missing says so."""
    plan = _PLAN[size]
    results: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for name in ("gate", "drift"):
        result, checks = _rows_scaling(name, plan["rows"])
        results.append(result)
        targets += checks
    results.append(_sweep(plan["sweep_points"]))
    table: list[dict[str, Any]] = []
    for r in results:
        if r["status"] != "ok":
            table.append({"check": r["check"], "size": "-", "seconds": "-", "per unit": "-",
                          "scaling": f"{r['status']}: {r['reason']}"})
        elif r["check"] == "sweep":
            for run_ in r["runs"]:
                table.append({"check": "sweep", "size": f"{run_['points']} points, {run_['workers']} worker(s)",
                              "seconds": fmt(run_["seconds"]), "per unit": f"{fmt(run_['seconds'] / run_['points'])} s/point",
                              "scaling": f"speed-up on 2 workers {r['speedup']:.2f}x"})
        else:
            for p in r["points"]:
                table.append({"check": r["check"], "size": f"{p['rows']:,} rows",
                              "seconds": f"{fmt(p['seconds'])} ({p['cost']})",
                              "per unit": f"{fmt(p['seconds'] / p['rows'] * 1e6)} us/row",
                              "scaling": f"log-log slope {fmt(r['slope'])}"})
    notes = [("Cost = the module's own figure for the check (gate: gate_s, the gate on the frame in memory; "
              "drift: batch_s, one batch end to end through monitoring), else the wall time of the call; "
              "slope 1 = linear, below 1 = fixed costs still dominate. Each module's full report is in results.json.")]
    available = any(r["status"] == "ok" for r in results)
    return {"status": "ok" if available else "not available", "rows": results, "table": table,
            "targets": targets, "notes": notes}
