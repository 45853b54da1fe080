"""``normlab reproduce`` on the default run: how many metrics came back identical, written down.

    python -m bench.reproduce_default            # a default run, then its reproduction (a few minutes)
    python -m bench.reproduce_default --render   # rewrite the README sentence from the results file

Writes ``bench/results_reproduce.json`` (the reproduce command's own
``--summary``) and the README block between the ``reproduce-count`` markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.evaluation_table import README, rewrite_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results_reproduce.json"
BLOCK = ("<!-- reproduce-count:start -->", "<!-- reproduce-count:end -->")


def _normlab(args: list[str]) -> None:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    code = "import sys; from normlab.cli import main; sys.argv = ['normlab', *sys.argv[1:]]; main()"
    subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)


def measure() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = ["--set", f"workdir={tmp}/work"]
        _normlab(["run", *work, "--summary", f"{tmp}/run.json"])
        run_id = json.loads(Path(tmp, "run.json").read_text())["run_id"]
        _normlab(["reproduce", run_id, *work, "--summary", f"{tmp}/reproduce.json"])
        return json.loads(Path(tmp, "reproduce.json").read_text())


def render(summary: dict) -> str:
    compared, differ, rounding = summary["compared"], len(summary["differ"]), len(summary["rounding"])
    return (f"{BLOCK[0]}On this machine the default `normlab run` reproduced with {compared - differ} of {compared} "
            f"metrics equal at every logged step ({compared - differ - rounding} bit for bit; "
            f"`python -m bench.reproduce_default`).{BLOCK[1]}")


def main(argv: list[str]) -> int:
    if "--render" not in argv:
        RESULTS.write_text(json.dumps(measure(), indent=1) + "\n")
    summary = json.loads(RESULTS.read_text())
    rewrite_block(README, *BLOCK, render(summary))
    print(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
