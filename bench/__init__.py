"""Benchmarks against plain PyTorch baselines: ``python -m bench [--quick] [--only SECTION]``.

Every figure is a ratio against a baseline measured in the same run, next to
the absolute numbers and a description of the machine. This module holds what
the sections share: interleaved repeated timing with warm-up and medians,
thread pinning, target records and the machine description. Nothing here
imports torch at module level, so ``python -m bench --help`` stays fast.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Size = Literal["smoke", "quick", "full"]
SIZES: tuple[str, ...] = ("smoke", "quick", "full")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    """Seconds per call over repeated rounds: the median, the spread and every round."""

    rounds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def low(self) -> float:
        return min(self.rounds)

    @property
    def high(self) -> float:
        return max(self.rounds)


def calibrate(fn: Callable[[], object], *, min_seconds: float, max_calls: int = 1_000_000,
              sync: Callable[[], object] | None = None) -> int:
    """Calls of ``fn`` per round so that one round lasts at least ``min_seconds`` (after one warm-up call).

    Each trial count is timed three times and the fastest counts, so one stall
    of a shared machine cannot end the search at a count too small to time.
    """
    wait = sync or (lambda: None)
    fn()
    calls = 1
    while True:
        trials = []
        for _ in range(3):
            wait()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            wait()
            trials.append(time.perf_counter() - start)
        elapsed = min(trials)
        if elapsed >= min_seconds or calls >= max_calls:
            return calls
        # Aim a little past the bound so the next try usually ends the search.
        calls = min(max_calls, max(calls * 2, int(calls * 1.2 * min_seconds / max(elapsed, 1e-9))))


def time_calls(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int,
    min_seconds: float = 0.02,
    warmup: int = 3,
    sync: Callable[[], object] | None = None,
) -> dict[str, Timing]:
    """Seconds per call of each candidate, measured in interleaved rounds.

    Each candidate gets its own call count per round (calibrated to last
    ``min_seconds``), then the rounds alternate between the candidates in
    forward and reverse order, so a slow phase of a shared machine hits every
    candidate alike instead of whichever happened to run then.

    Args:
        candidates: Name to a function of no arguments.
        rounds: Timed rounds per candidate.
        min_seconds: Least duration of one round.
        warmup: Untimed calls per candidate before calibrating.
        sync: Waits for queued work before a clock is read (``torch.cuda.synchronize``
            on a GPU, where calls return before their kernels finish).
    """
    wait = sync or (lambda: None)
    calls: dict[str, int] = {}
    for name, fn in candidates.items():
        for _ in range(warmup):
            fn()
        wait()
        calls[name] = calibrate(fn, min_seconds=min_seconds, sync=wait)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn, n = candidates[name], calls[name]
            wait()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            wait()
            times[name].append((time.perf_counter() - start) / n)
    return {name: Timing(tuple(values)) for name, values in times.items()}


def time_rounds(candidates: dict[str, Callable[[], float]], *, rounds: int, warmup: int = 1) -> dict[str, Timing]:
    """Like `time_calls` for candidates that time themselves: each call returns its own seconds.

    Used where only part of a call counts (a training run without its model
    construction, a subprocess without the parsing of its output).
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(float(candidates[name]()))
    return {name: Timing(tuple(values)) for name, values in times.items()}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Pin torch's intra-op threads for a block (None: keep the current count); yields the count."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def target(name: str, value: float | None, *, at_most: float | None = None, at_least: float | None = None,
           unit: str = "", why_not: str | None = None) -> dict[str, Any]:
    """A target record: the measured value, the bound, and whether it is met.

    ``value`` None means it could not be measured; ``why_not`` then says why.
    """
    if (at_most is None) == (at_least is None):
        raise ValueError("give exactly one of at_most and at_least")
    bound = f"<= {at_most:g}{unit}" if at_most is not None else f">= {at_least:g}{unit}"
    if value is None:
        met = None
    elif at_most is not None:
        met = value <= at_most
    else:
        met = value >= at_least
    return {"name": name, "value": value, "target": bound, "unit": unit, "met": met, "why_not": why_not}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where and with what the benchmarks ran (recorded with every result)."""
    import torch

    from normlab.tracking import git_commit, git_dirty

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": git_commit(REPO),
        "git_dirty": git_dirty(REPO),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for pkg in ("numpy", "mlflow", "prefect", "great_expectations"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    return info


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, or '-' when missing."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
