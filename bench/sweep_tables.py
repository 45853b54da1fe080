"""The README's sweep table and study verdicts, from the summaries the commands themselves wrote.

    python -m bench.sweep_tables            # normlab sweep and normlab study (minutes); rewrites both README blocks
    python -m bench.sweep_tables --render   # rewrite the blocks from the results files, no runs

The results files are the commands' own ``--summary`` output:
``bench/results_sweep_default.json`` (``normlab sweep``, the default grid) and
``bench/results_study.json`` (``normlab study``). ``tests/unit/test_readme.py``
checks that the README blocks are what this renders from them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.evaluation_table import README, rewrite_block

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "bench" / "results_sweep_default.json"
STUDY = ROOT / "bench" / "results_study.json"
SWEEP_BLOCK = ("<!-- sweep-table:start -->", "<!-- sweep-table:end -->")
STUDY_BLOCK = ("<!-- study-table:start -->", "<!-- study-table:end -->")


def _normlab(args: list[str], summary: Path) -> float:
    """Run a ``normlab`` command from the checkout into a fresh work folder; its wall-clock seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}
        code = "import sys; from normlab.cli import main; sys.argv = ['normlab', *sys.argv[1:]]; main()"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *args, "--set", f"workdir={tmp}/work", "--summary", str(summary)],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=3600)
        return time.perf_counter() - started


def slim(summary: dict) -> dict:
    """The summary without every point's full metric set (the aggregate holds what the tables show)."""
    keep = ("norm", "batch_size", "seed", "run_id", "status", "error")
    out = {**summary, "points": [{k: p[k] for k in keep if k in p} for p in summary.get("points", [])]}
    if "sweep" in out:
        out["sweep"] = slim(out["sweep"])
    return out


def _load(record: dict) -> str:
    low, high = record.get("load_average", [0, 0])
    return f"load average {low:g} to {high:g}"


def _cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    if stat["low"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def render_sweep(summary: dict) -> str:
    """Norms by batch sizes, ID test accuracy and mean OOD accuracy: mean [95 % interval] over seeds."""
    grid = summary["grid"]
    rows = {(r["norm"], r["batch_size"]): r for r in summary["aggregate"]}
    points = len(summary["points"])
    lines = [SWEEP_BLOCK[0],
             f"The default sweep ({points} runs, `normlab sweep`, {len(grid['seeds'])} seeds; "
             f"`python -m bench.sweep_tables`: {summary.get('seconds', 0):.0f} s on this 2-core machine, {_load(summary)}), "
             "mean [95 % interval] over seeds:", ""]
    for key, title in (("id/test/accuracy", "ID test accuracy"), ("ood/mean/accuracy", "mean OOD accuracy")):
        lines += [f"*{title}*", "", "| norm | " + " | ".join(f"batch {b}" for b in grid["batch_sizes"]) + " |",
                  "|---|" + "---|" * len(grid["batch_sizes"])]
        for norm in grid["norms"]:
            lines.append(f"| {norm} | " + " | ".join(_cell(rows[(norm, b)][key]) for b in grid["batch_sizes"]) + " |")
        lines.append("")
    ood = {(r["norm"], r["batch_size"]): r["ood/mean/accuracy"]["mean"] for r in summary["aggregate"]}
    others = [v for (norm, _), v in ood.items() if norm != "batch"]
    bn_id = rows[("batch", min(grid["batch_sizes"]))]["id/test/accuracy"]["mean"]
    bn_ood = ", ".join(f"{ood[('batch', b)]:.3f} at batch {b}" for b in grid["batch_sizes"])
    lines.append(f"BatchNorm reaches {bn_id:.3f} ID test accuracy at batch {min(grid['batch_sizes'])}; on the "
                 f"corrupted splits its mean accuracy is {bn_ood}, every other norm {min(others):.3f} to "
                 f"{max(others):.3f}.")
    lines.append(SWEEP_BLOCK[1])
    return "\n".join(lines)


def render_study(result: dict) -> str:
    """One row per finding: what was tested here, and whether it held."""
    lines = [STUDY_BLOCK[0],
             f"{result['held']} of {len(result['findings'])} findings held in the full study "
             f"(`normlab study`, `python -m bench.sweep_tables`: {result.get('seconds', 0):.0f} s on this 2-core machine, "
             f"{_load(result)}):",
             "", "| finding | test here | result |", "|---|---|---|"]
    for finding in result["findings"]:
        held = "held" if finding["held"] else "**not held**"
        lines.append(f"| {finding['title']} | {finding['test']} | {held}: {finding['verdict']} |".replace("\n", " "))
    lines.append(STUDY_BLOCK[1])
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if "--render" not in argv:
        for path, args in ((SWEEP, ["sweep"]), (STUDY, ["study"])):
            load_before = os.getloadavg()[0]
            seconds = _normlab(args, path)
            data = slim(json.loads(path.read_text()))
            path.write_text(json.dumps({**data, "seconds": round(seconds, 1),
                                        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]},
                                       indent=1) + "\n")
    sweep, study = json.loads(SWEEP.read_text()), json.loads(STUDY.read_text())
    rewrite_block(README, *SWEEP_BLOCK, render_sweep(sweep))
    rewrite_block(README, *STUDY_BLOCK, render_study(study))
    print(render_sweep(sweep))
    print(render_study(study))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
