"""One wiring: a training run and a sweep point run the same library stages, in the same order."""

from __future__ import annotations

import inspect
import os

import pytest

from normlab import gate, pipeline, splitting, sweep, tracking
from normlab.flows.training import training_flow
from normlab.sweep_contracts import GridPoint

pytestmark = pytest.mark.usefixtures("prefect_harness")

# The library modules whose functions the stages after the gate call.
STAGE_MODULES = (pipeline, splitting, gate)


@pytest.fixture
def calls(monkeypatch):
    """Every call of a public function of the stage modules, in order, as ``module.function``."""
    seen: list[str] = []
    for module in STAGE_MODULES:
        for name, func in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(func):
                continue

            def spy(*args, _func=func, _label=f"{module.__name__}.{name}", **kwargs):
                seen.append(_label)
                return _func(*args, **kwargs)

            monkeypatch.setattr(module, name, spy)
    return seen


def _fit_segment(seen: list[str]) -> list[str]:
    """The calls from the split to the recorded run: what `normlab.stages.fit` covers."""
    start = seen.index("normlab.splitting.prepare_splits")
    end = len(seen) - seen[::-1].index("normlab.pipeline.record_run")
    return seen[start:end]


def test_a_sweep_point_runs_the_stages_of_a_run_in_the_same_order(calls, tmp_path):
    from normlab.config import load_config
    from tests.conftest import REPO

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        cfg = load_config(REPO / "configs" / "digits.yaml", [f"workdir={tmp_path}", "train.epochs=1"])
        result = training_flow(cfg, resume=False)
    finally:
        os.chdir(cwd)
    run_calls = _fit_segment(calls)
    calls.clear()

    store = tracking.TrackingStore(cfg.tracking_uri())
    parent = tracking.start_run(store, cfg.tracking.experiment,
                                artifact_location=cfg.artifact_location(), run_name="parent",
                                tags={"normlab.kind": "sweep"})
    (tmp_path / "parent").mkdir()
    accepted = pipeline.load_batch(cfg.data, tmp_path / "parent", None)
    point = GridPoint(norm=cfg.model.norm, batch_size=cfg.train.batch_size, seed=cfg.seed)
    outcome = sweep.run_point(cfg, store, point, parent_run_id=parent, batch=accepted)
    point_calls = _fit_segment(calls)

    assert outcome.status == "finished" and result.run_id != outcome.run_id
    assert "normlab.gate.check_splits" in run_calls and "normlab.pipeline.train" in run_calls
    assert point_calls == run_calls
    # Same data, same settings, same stages: the same model.
    assert outcome.metrics["id/test/accuracy"] == result.metrics["id/test/accuracy"]
