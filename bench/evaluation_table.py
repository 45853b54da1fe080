"""The README's evaluation figures: the default run and its LayerNorm twin, measured and written down.

    python -m bench.evaluation_table          # two runs (about 3 minutes on 2 cores); rewrites the README block
    python -m bench.evaluation_table --render # rewrite the README block from the results file, no runs

Writes ``bench/results_evaluation.json`` (every metric of both runs, clocks
included, and the commit) and the block between the ``evaluation-table``
markers in README.md. ``tests/unit/test_readme.py`` checks that the block is
what this renders from the results file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from bench.same_run import _commit, run_metrics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results_evaluation.json"
README = ROOT / "README.md"
START, END = "<!-- evaluation-table:start -->", "<!-- evaluation-table:end -->"
CORRUPTIONS = ("noise", "shot", "impulse", "contrast", "brightness", "inversion", "rotation", "translation",
               "blur", "occlusion")
LABELS = {"noise": "gaussian noise", "shot": "shot noise", "impulse": "impulse noise"}
RUNS = {"batch": [], "layer": ["--set", "model.norm=layer"]}


def measure() -> dict:
    return {"commit": _commit(ROOT), "command": "normlab run [--set model.norm=layer]",
            "runs": {name: run_metrics(ROOT, extra) for name, extra in RUNS.items()}}


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def render(results: dict) -> str:
    """The README block: the default run's corruption table, with the adapted and LayerNorm columns."""
    bn, ln = results["runs"]["batch"], results["runs"]["layer"]
    lines = [
        START,
        f"Measured with the default config (MLP + BatchNorm, 10 epochs; `python -m bench.evaluation_table`, "
        f"commit {results['commit'][:12]}): ID test {_f(bn['id/test/accuracy'])} "
        f"[{_f(bn['id/test/accuracy_ci_low'])}, {_f(bn['id/test/accuracy_ci_high'])}]; the same run with "
        f"`--set model.norm=layer`: {_f(ln['id/test/accuracy'])}.",
        "",
        "| corruption | s1 | s2 | s3 | group [95% CI] | adapted (AdaBN) | LayerNorm group |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CORRUPTIONS:
        key = f"ood/{name}"
        sev = " | ".join(_f(bn[f"{key}/s{k}/accuracy"], 2) for k in (1, 2, 3))
        lines.append(f"| {LABELS.get(name, name)} | {sev} | {_f(bn[f'{key}/accuracy'])} "
                     f"[{_f(bn[f'{key}/accuracy_ci_low'])}, {_f(bn[f'{key}/accuracy_ci_high'])}] | "
                     f"{_f(bn[f'{key}/adapted/accuracy'])} | {_f(ln[f'{key}/accuracy'])} |")
    lines.append(f"| **mean** | | | | {_f(bn['ood/mean/accuracy'])} [{_f(bn['ood/mean/accuracy_ci_low'])}, "
                 f"{_f(bn['ood/mean/accuracy_ci_high'])}] | {_f(bn['ood/mean/adapted/accuracy'])} | "
                 f"{_f(ln['ood/mean/accuracy'])} |")
    lines += [
        "",
        f"Inference (same run): folding BatchNorm changed outputs by at most {bn['infer/folded/max_abs_diff']:.1e}; "
        f"int8 weights {bn['infer/int8/size_ratio']:.2f}x the size, accuracy change "
        f"{bn['infer/int8/accuracy_delta']:+.3f}; batch-1 p50 eager {bn['time/infer/eager/p50_ms']:.3f} ms, "
        f"folded {bn['time/infer/folded/p50_ms']:.3f} ms, int8 {bn['time/infer/int8/p50_ms']:.3f} ms.",
        END,
    ]
    return "\n".join(lines)


def rewrite_block(readme: Path, start: str, end: str, block: str) -> None:
    """Replace the text from ``start`` to ``end`` (markers included) with ``block``."""
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {start} ... {end} block")
    readme.write_text(pattern.sub(lambda _: block, text))


def rewrite_readme(results: dict, readme: Path = README) -> None:
    rewrite_block(readme, START, END, render(results))


def main(argv: list[str]) -> int:
    if "--render" in argv:
        results = json.loads(RESULTS.read_text())
    else:
        results = measure()
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    rewrite_readme(results)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
