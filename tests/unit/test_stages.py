"""The stages after the gate are sequenced once (`normlab.stages.fit`); the run and the sweep call nothing else."""

from __future__ import annotations

import ast
import dataclasses

from normlab import stages
from tests.conftest import REPO

# What the training flow may call besides `fit`: the run's lifecycle, the gate before it, the registry after it.
FLOW_TASKS = {
    "start_run", "load_batch", "end_run",
    "validate_batch", "log_validation", "enforce_validation",
    "register_model", "gate_model", "publish_decision",
}


def _function(path, name: str) -> ast.FunctionDef:
    tree = ast.parse(path.read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def _called(func: ast.FunctionDef) -> list[str]:
    """The names called in a function body: ``f(...)`` as ``f``, ``m.f(...)`` as ``m.f``."""
    names = []
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.append(node.func.id)
            elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                names.append(f"{node.func.value.id}.{node.func.attr}")
    return names


def test_the_training_flow_runs_the_stages_after_the_gate_only_through_fit():
    called = _called(_function(REPO / "flows" / "training.py", "training_flow"))
    assert called.count("fit") == 1
    tasks = {name.split(".", 1)[1] for name in called if name.split(".")[0] in {"t", "g", "r"}}
    unexpected = tasks - FLOW_TASKS
    assert not unexpected, f"add these stages to normlab.stages.Stages and fit, so sweeps run them: {unexpected}"
    assert not tasks & set(stages.STAGE_NAMES)


def test_a_sweep_point_runs_the_stages_only_through_fit():
    called = _called(_function(REPO / "normlab" / "sweep.py", "run_point"))
    assert called.count("fit") == 1
    direct = {n for n in called if n.split(".")[-1] in stages.STAGE_NAMES}
    assert not direct, f"a sweep point calls stages outside fit: {direct}"


def test_the_flow_s_tasks_cover_every_stage():
    from normlab.tasks.training import STAGES

    for field in dataclasses.fields(stages.Stages):
        task = getattr(STAGES, field.name)
        assert getattr(task, "name", None), f"{field.name} is not a Prefect task"


def test_fit_runs_every_stage_once_in_order():
    seen = []

    def stage(name, value=None):
        def run(*args):
            seen.append(name)
            return value
        return run

    from normlab.contracts import Evaluation, Recorded, RunHandle, Splits, Trained, TrainingResult
    from normlab.model_spec import ModelSpec

    prepared = Splits(path="p", encoder="e", reference="r", features=["a"], n_features=1, classes=["0", "1"],
                      counts={}, ood_thresholds={}, eval_frames={}, populations={})
    spec = ModelSpec(family="mlp", in_features=1, num_classes=2, norm="none", image_shape=None, hidden=(2,),
                     channels=(), groups=1, dropout=0.0)
    trained = Trained(model_path="m", spec=spec, result=TrainingResult(history=[]))
    evaluation = Evaluation(metrics={"id/test/accuracy": 1.0}, predictions="d/predictions.npz",
                            confusion="d/confusion_id_test.npy")
    fake = stages.Stages(prepare_splits=stage("prepare_splits", prepared), check_splits=stage("check_splits"),
                         train=stage("train", trained), evaluate=stage("evaluate", evaluation),
                         record_run=stage("record_run", Recorded(model_uri="models:/m")))
    fitted = stages.fit(fake, None, None, RunHandle(run_id="r", run_dir="d"), None)
    assert seen == list(stages.STAGE_NAMES)
    assert fitted.metrics == {"id/test/accuracy": 1.0} and fitted.recorded.model_uri == "models:/m"
