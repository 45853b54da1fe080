"""Does the default run still compute the same thing? ``normlab run`` on the default pipeline, compared key by key.

    python -m bench.same_run record   # run, and write bench/results_default_run.json
    python -m bench.same_run check    # run again, compare with that file; exit 1 if anything differs

A run is compared on every metric it records except the clocks (``time/*``),
and on the bytes of its trained weights and its predictions. The record names
the commit it was made at, so a refactoring can be checked against the code
before it ("behaviour unchanged" means these are identical on one machine;
another CPU or torch build may differ in the last bits).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results_default_run.json"
UNTIMED = ("time/",)


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _run(root: Path, extra: list[str], read) -> object:
    """Run ``normlab run`` from ``root`` (a checkout) into a fresh work folder; ``read(run_dir)`` of its run."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(root)}
        code = "import sys; from normlab.cli import main; sys.argv = ['normlab', *sys.argv[1:]]; main()"
        subprocess.run([sys.executable, "-c", code, "run", "--set", f"workdir={tmp}/work", *extra], cwd=root,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)
        (run_dir,) = Path(tmp, "work", "runs").iterdir()
        return read(run_dir)


def run_metrics(root: Path, extra: list[str] | None = None) -> dict[str, float]:
    """Every metric a ``normlab run`` (with ``extra`` arguments) records, clocks included."""
    return _run(root, extra or [], lambda run_dir: json.loads((run_dir / "metrics.json").read_text()))


def default_run(root: Path) -> dict:
    """What the default run computed: its metrics but the clocks, and the digests of its weights and predictions."""

    def read(run_dir: Path) -> dict:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {
            "commit": _commit(root),
            "metrics": {k: v for k, v in sorted(metrics.items()) if not k.startswith(UNTIMED)},
            "sha256": {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
                       for name in ("model.pt", "predictions.npz")},
        }

    return _run(root, [], read)


def compare(recorded: dict, now: dict) -> list[str]:
    """One line per difference."""
    lines = []
    before, after = recorded["metrics"], now["metrics"]
    for key in sorted(set(before) | set(after)):
        if key not in after:
            lines.append(f"{key}: missing now")
        elif key not in before:
            lines.append(f"{key}: new")
        elif before[key] != after[key]:
            lines.append(f"{key}: {before[key]!r} -> {after[key]!r}")
    for name, digest in recorded["sha256"].items():
        if now["sha256"].get(name) != digest:
            lines.append(f"{name}: bytes differ")
    return lines


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else Path(__file__).resolve().parents[1]
    if not argv or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    now = default_run(root)
    if argv[0] == "record":
        RESULTS.write_text(json.dumps(now, indent=1) + "\n")
        print(f"recorded {len(now['metrics'])} metrics at {now['commit'][:12]} in {RESULTS}")
        return 0
    recorded = json.loads(RESULTS.read_text())
    diffs = compare(recorded, now)
    files = [d for d in diffs if d.endswith("bytes differ")]
    print(f"recorded at {recorded['commit'][:12]}, now {now['commit'][:12]}: "
          f"{len(recorded['metrics']) - (len(diffs) - len(files))} of {len(recorded['metrics'])} metrics identical; "
          f"weights and predictions {'differ' if files else 'identical'}")
    for line in diffs:
        print("  " + line)
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
