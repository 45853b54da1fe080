"""Monitoring new batches: discovery, exactly-once bookkeeping, and the per-batch stages.

Each stage is a plain function over files that returns a small JSON-able
dict, which is what a Prefect task passes on (see ``flows/monitoring.py``).

Work folder layout (``<workdir>/monitoring/``)::

    state.json                  batches seen (by fingerprint), per-model streaks and alerts
    state.lock                  serializes read-modify-write of state.json across processes
    batches/<fp16>/             one folder per batch: batch.parquet (snapshot), gate report,
                                accepted.parquet, drift.json, report samples, evidently/report.*
    references/<run_id>/        reference artifacts downloaded from MLflow when the run folder is gone
    retrain/<stamp>/data.parquet  reference + accepted new rows for a retraining run

A batch is identified by its content fingerprint, so a renamed or re-uploaded
copy is recognised. It is *claimed* before processing and marked *done* only
when every stage finished; a failed batch is released and retried on the next
run, and a claim left by a process that died is taken over. State writes are
atomic (write, then rename) under an exclusive file lock, so the state
survives restarts and concurrent monitors.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from normlab import drift
from normlab.config import PipelineConfig, flatten
from normlab.data.fingerprint import fingerprint_frame
from normlab.data.sources import read_table
from normlab.errors import DataSourceError, NormlabError, TrackingError
from normlab.registry import CHAMPION, registry_name

BATCH_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_STATE_VERSION = 1
# A claim older than this is taken over even when its process seems alive (pid reuse).
_CLAIM_TIMEOUT_S = 6 * 3600
_LEVEL_CODE = {"none": 0, "suspected": 1, "detected": 2}
_QUALITY_CODE = {"ok": 0, "quarantined": 1, "blocked": 2}
NO_ALERT: dict[str, Any] = {"due": False, "sent": False, "targets": 0, "delivered": 0}
_INFERENCE_ROWS = 8192


class NoReferenceError(NormlabError):
    """No training run with a drift reference exists yet."""


# Names and folders ---------------------------------------------------------------------


def monitor_dir(cfg: PipelineConfig) -> Path:
    """``<workdir>/monitoring`` (created)."""
    path = cfg.workdir_path() / "monitoring"
    path.mkdir(parents=True, exist_ok=True)
    return path


def monitoring_experiment(cfg: PipelineConfig) -> str:
    """The MLflow experiment of monitoring runs."""
    return cfg.monitor.experiment or f"{cfg.tracking.experiment}-monitoring"


def workspace_dir(cfg: PipelineConfig) -> Path:
    """The Evidently workspace folder."""
    if cfg.monitor.workspace:
        return Path(cfg.monitor.workspace).expanduser().resolve()
    return cfg.workdir_path() / "evidently"


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# 1. Discovery --------------------------------------------------------------------------


def discover_batches(data: str | Path) -> list[str]:
    """The batch files at ``data``: the file itself, or a landing folder's table files.

    In a folder, files are taken oldest first (modification time, then name);
    hidden files and names starting with ``_`` are skipped, so a writer can
    upload as ``_part.parquet`` and rename when done.

    Raises:
        DataSourceError: ``data`` does not exist or is a file of another type.
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise DataSourceError(f"--data {str(path)!r} does not exist; give a batch file or a landing folder")
    if path.is_file():
        if not path.name.lower().endswith(BATCH_SUFFIXES):
            raise DataSourceError(f"--data {str(path)!r}: batch files end with {', '.join(BATCH_SUFFIXES)}")
        return [str(path.resolve())]
    files = [
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.name.lower().endswith(BATCH_SUFFIXES)
    ]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [str(p.resolve()) for p in files]


# State ---------------------------------------------------------------------------------


def _empty_state() -> dict[str, Any]:
    return {"version": _STATE_VERSION, "files": {}, "batches": {}, "models": {}}


@contextmanager
def locked_state(cfg: PipelineConfig) -> Iterator[dict[str, Any]]:
    """The monitoring state under an exclusive lock; changes are written back atomically."""
    folder = monitor_dir(cfg)
    path = folder / "state.json"
    with open(folder / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _read_state_file(path)
            yield state
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(cfg: PipelineConfig) -> dict[str, Any]:
    """A consistent copy of the monitoring state (read-only)."""
    folder = monitor_dir(cfg)
    with open(folder / "state.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return _read_state_file(folder / "state.json")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return _empty_state()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataSourceError(
            f"monitoring state {path} is unreadable ({exc.__class__.__name__}); "
            "restore it from a backup or move it away to start over (every batch will be processed again)"
        ) from None
    if state.get("version") != _STATE_VERSION:
        raise DataSourceError(
            f"monitoring state {path} has version {state.get('version')!r}; this normlab reads {_STATE_VERSION}"
        )
    return state


def _claim_is_live(claim: dict[str, Any]) -> bool:
    """True while the process that claimed a batch may still be working on it."""
    if time.time() - float(claim.get("claimed_ts", 0)) > _CLAIM_TIMEOUT_S:
        return False
    if claim.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(claim["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# 2. Open and claim a batch -------------------------------------------------------------


def open_batch(cfg: PipelineConfig, path: str) -> dict[str, Any]:
    """Fingerprint a batch file and claim it, or say why it is skipped.

    A file that cannot be read is skipped and left in place (it is tried
    again on the next run).

    Returns:
        ``skip`` (bool), ``status`` and ``fingerprint`` (None for an unreadable
        file), ``source``; when skipped also ``reason`` and ``previous`` (the
        earlier record); otherwise ``path`` (the snapshot), ``rows``,
        ``columns`` and ``batch_dir``.
    """
    stat = Path(path).stat()
    try:
        frame = read_table(path)
    except DataSourceError as exc:
        return {"skip": True, "status": "unreadable", "fingerprint": None, "source": path, "previous": None,
                "reason": f"unreadable, left in place: {exc}"}
    fingerprint = fingerprint_frame(frame)
    with locked_state(cfg) as state:
        state["files"][path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fingerprint": fingerprint}
        record = state["batches"].get(fingerprint)
        if record and record.get("status") == "done":
            return _seen(fingerprint, path, record)
        if record and record.get("status") == "claimed" and _claim_is_live(record):
            return {"skip": True, "status": "skipped", "fingerprint": fingerprint, "source": path, "previous": None,
                    "reason": f"being processed by pid {record['pid']} on {record['host']}"}
        state["batches"][fingerprint] = {"status": "claimed", "source": path, "pid": os.getpid(),
                                         "host": socket.gethostname(), "claimed_ts": time.time()}
    opened = {"skip": False, "status": "claimed", "fingerprint": fingerprint, "source": path,
              "rows": int(len(frame)), "columns": [str(c) for c in frame.columns]}
    try:
        batch_dir = monitor_dir(cfg) / "batches" / fingerprint[:16]
        batch_dir.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(batch_dir / "batch.parquet", index=False)
    except BaseException:
        release_batch(cfg, opened)
        raise
    return {**opened, "path": str(batch_dir / "batch.parquet"), "batch_dir": str(batch_dir)}


def triage_batches(cfg: PipelineConfig, paths: list[str]) -> dict[str, Any]:
    """Split batch files into those to open and those already processed, without reading them.

    A file whose size and modification time match a file processed before is
    known; anything else is opened (and still recognised by content there).

    Returns:
        ``new`` (paths) and ``skipped`` (summary entries).
    """
    state = read_state(cfg)
    new, skipped = [], []
    for path in paths:
        stat = Path(path).stat()
        known = state["files"].get(path)
        record = state["batches"].get(known["fingerprint"]) if known else None
        if (record and record.get("status") == "done" and known["size"] == stat.st_size
                and known["mtime_ns"] == stat.st_mtime_ns):
            skipped.append(skipped_entry(_seen(known["fingerprint"], path, record)))
        else:
            new.append(path)
    return {"new": new, "skipped": skipped}


def _seen(fingerprint: str, path: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"skip": True, "status": "skipped", "fingerprint": fingerprint, "source": path, "previous": record,
            "reason": f"already processed at {record['processed_at']} (from {record['source']})"}


def release_batch(cfg: PipelineConfig, batch: dict[str, Any]) -> None:
    """Drop this process's claim on a batch that failed, so the next run retries it."""
    with locked_state(cfg) as state:
        record = state["batches"].get(batch["fingerprint"])
        if record and record.get("status") == "claimed" and record.get("pid") == os.getpid():
            del state["batches"][batch["fingerprint"]]


# 3. The data gate ----------------------------------------------------------------------


def gate_batch(cfg: PipelineConfig, batch: dict[str, Any], out_dir: str | Path,
               reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data gate in its monitoring context: report what changed, never hide the drift.

    Checks that protect a training set only (contamination, label noise, class
    balance, duplicates, row count) warn here (`normlab.gate.MONITOR_DEFAULTS`);
    rows quarantined for their values stay in the drift analysis
    (``typed_path``); only rows that cannot be read and typed are left out.

    Returns:
        ``accepted_path`` (None when blocked: a blocked batch never trains),
        ``quarantine_path``, ``typed_path`` (the rows drift is measured on),
        ``rows_in``, ``rows_accepted``, ``rows_quarantined``, ``rows_typed``,
        ``rows_untyped``, ``blocked``, ``failed`` (a line per failed check),
        ``problems`` (failed checks with their columns and row counts),
        ``missing_features`` (model features the batch lacks) and ``report_path``.
    """
    from normlab.gate import run_gate

    gated = run_gate(cfg, batch, out_dir, context="monitor",
                     reference_path=reference["reference"] if reference else None)
    problems = [{"check": c["name"], "column": c["column"], "outcome": c["outcome"], "rows": c["rows_flagged"],
                 "label": c["name"] + (f":{c['column']}" if c["column"] else "")}
                for c in gated["report"]["checks"] if c["outcome"] in ("blocked", "quarantined")]
    missing: list[str] = []
    if reference is not None:
        encoders = json.loads(Path(reference["encoder"]).read_text(encoding="utf-8"))
        missing = [c for c in encoders["features"]["features"] if c not in batch["columns"]]
    # The full report stays in its file; tasks pass on the counts and paths.
    kept = {k: gated[k] for k in ("accepted_path", "quarantine_path", "typed_path", "rows_in", "rows_accepted",
                                  "rows_quarantined", "rows_typed", "rows_untyped", "blocked", "failed",
                                  "report_path")}
    return {**kept, "problems": problems, "missing_features": missing}


def quality_of(cfg: PipelineConfig, gated: dict[str, Any]) -> dict[str, Any]:
    """The batch's data-quality verdict: ``blocked``, ``quarantined`` (share above monitor.quality_share) or ``ok``.

    Returns:
        ``level``, ``share`` (quarantined rows / rows in), ``checks`` (failed
        check labels, e.g. ``range:temp_c``), ``columns`` (the top offending
        columns by rows flagged) and ``reason`` (one line).
    """
    share = gated["rows_quarantined"] / gated["rows_in"] if gated["rows_in"] else 0.0
    problems = gated["problems"]
    per_column: dict[str, int] = {}
    for p in problems:
        if p["column"]:
            per_column[p["column"]] = per_column.get(p["column"], 0) + int(p["rows"] or 0)
    columns = sorted(per_column, key=lambda c: per_column[c], reverse=True)[: cfg.monitor.top_columns]
    checks = sorted({p["label"] for p in problems})
    if gated["blocked"]:
        level = "blocked"
        reason = f"blocked by the data gate: {'; '.join(gated['failed'][:3]) or 'a blocking check failed'}"
    elif problems and share > cfg.monitor.quality_share:
        level = "quarantined"
        reason = (f"{gated['rows_quarantined']} of {gated['rows_in']} rows quarantined (share {share:.2f} > "
                  f"monitor.quality_share {cfg.monitor.quality_share:g})")
    else:
        level, reason = "ok", "data quality ok"
    if gated["missing_features"]:
        level = "blocked"
        reason = f"batch lacks the model's feature columns: {gated['missing_features'][:10]}"
    return {"level": level, "share": round(share, 6), "checks": checks, "columns": columns, "reason": reason,
            "column_rows": {c: per_column[c] for c in columns}}


# 4. The drift reference ----------------------------------------------------------------


def resolve_reference(cfg: PipelineConfig) -> dict[str, Any]:
    """The drift reference: the training data of the ``champion`` model, else of the latest run.

    Returns:
        ``run_id``, ``model``, ``version`` (None without a registry),
        ``selected_by``, and local paths ``reference``, ``encoder`` and
        either ``model_spec``/``model_weights`` (the run folder) or
        ``model_uri`` (MLflow), plus ``reference_accuracy``.

    Raises:
        NoReferenceError: No champion and no finished run with a reference.
        TrackingError: The store cannot be reached.
    """
    from mlflow.exceptions import MlflowException

    from normlab import tracking

    uri, name = cfg.tracking_uri(), registry_name(cfg)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # Opening a missing SQLite store would create an empty one; there is nothing to monitor against.
        raise NoReferenceError(f"no drift reference: no tracking store at {uri}; train a model first with "
                               "`normlab run` (same workdir or tracking.uri)")
    client = tracking.client_for(uri)
    run_id, version, selected_by = None, None, "latest run"
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
        run_id, version, selected_by = mv.run_id, str(mv.version), "champion"
    except MlflowException as exc:
        # No registered model, or no champion alias yet: fall back to the latest run.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise TrackingError(f"tracking store {uri}: {str(exc).splitlines()[0]}") from None
    if run_id is None:
        run_id = _latest_run_with_reference(client, cfg)
    run = client.get_run(run_id)
    paths = _reference_files(cfg, run_id)
    return {
        "run_id": run_id,
        "model": name,
        "version": version,
        "selected_by": selected_by,
        "reference_accuracy": run.data.metrics.get("id/test/accuracy"),
        **paths,
    }


def _latest_run_with_reference(client: Any, cfg: PipelineConfig) -> str:
    uri = cfg.tracking_uri()
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        for run in runs:
            if any(a.path == "drift/reference.parquet" for a in client.list_artifacts(run.info.run_id, "drift")):
                return run.info.run_id
    raise NoReferenceError(
        f"no drift reference: no champion of '{registry_name(cfg)}' and no finished run with drift/reference.parquet "
        f"in experiment '{cfg.tracking.experiment}' at {uri}; train one first with `normlab run`"
    )


def _reference_files(cfg: PipelineConfig, run_id: str) -> dict[str, str]:
    """Reference, encoder and model files: from the run folder, else downloaded from MLflow."""
    run_dir = cfg.workdir_path() / "runs" / run_id
    local = {k: run_dir / f for k, f in (("reference", "reference.parquet"), ("encoder", "encoder.json"),
                                         ("model_spec", "model.json"), ("model_weights", "model.pt"))}
    if all(p.is_file() for p in local.values()):
        return {k: str(p) for k, p in local.items()}
    import mlflow.artifacts

    dest = monitor_dir(cfg) / "references" / run_id
    dest.mkdir(parents=True, exist_ok=True)
    uri = cfg.tracking_uri()
    fetched = {}
    for key, artifact in (("reference", "drift/reference.parquet"), ("encoder", "model_inputs/encoder.json")):
        target = dest / artifact
        if not target.is_file():
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dest),
                                                tracking_uri=uri)
        fetched[key] = str(target)
    return {**fetched, "model_uri": f"runs:/{run_id}/model"}


def load_reference_model(cfg: PipelineConfig, reference: dict[str, Any]):
    """The reference run's model (eval mode) and its feature and label encoders."""
    from normlab.data.encoding import FeatureEncoder, LabelEncoder

    encoders = json.loads(Path(reference["encoder"]).read_text(encoding="utf-8"))
    features, labels = FeatureEncoder.from_dict(encoders["features"]), LabelEncoder.from_dict(encoders["labels"])
    if reference.get("model_spec"):
        from normlab.pipeline import load_trained

        spec = json.loads(Path(reference["model_spec"]).read_text(encoding="utf-8"))
        model = load_trained({"spec": spec, "model_path": reference["model_weights"]})
    else:
        import mlflow.pytorch

        from normlab import tracking

        with tracking.tracking_uri(cfg.tracking_uri()):
            model = mlflow.pytorch.load_model(reference["model_uri"], map_location="cpu").eval()
    return model, features, labels, encoders.get("label_column", cfg.data.label)


# 5. Drift analysis (the decision path) -------------------------------------------------


def analyze_batch(
    cfg: PipelineConfig, reference: dict[str, Any], gated: dict[str, Any], batch: dict[str, Any]
) -> dict[str, Any]:
    """Score data drift, prediction drift and (with labels) performance of every typed row.

    Drift is measured on every row that could be read and typed, quarantined
    rows included (rows out of range are the drift); rows with unparseable
    values are left out and counted by the gate (``rows_untyped``).

    Writes ``drift.json`` (every column's score) and the row samples the
    Evidently report draws from into the batch folder.

    Returns:
        ``rows``, ``decidable``, ``drifted`` (None when not decidable),
        ``drifted_columns``, ``drift`` (share and top columns), ``prediction``,
        ``performance`` (None without labels), ``drift_json``, ``report_inputs``
        (the samples) and ``report_columns`` (the columns the report draws).
    """
    from normlab.evaluation import classification_metrics, predict_proba

    mon = cfg.monitor
    out = Path(batch["batch_dir"])
    current = pd.read_parquet(gated["typed_path"])
    ref = drift.sample_rows(pd.read_parquet(reference["reference"]), mon.reference_rows, cfg.seed)
    model, encoder, labels, label_column = load_reference_model(cfg, reference)
    features = encoder.features
    missing = [c for c in features if c not in current.columns]
    if missing:
        raise DataSourceError(f"batch {batch['fingerprint'][:12]} lacks the model's feature columns: {missing[:10]}")

    scores = drift.score_columns(ref, current, features, alpha=mon.alpha, effect_floor=mon.effect_floor)
    data = drift.summarize_columns(scores, drift_share=mon.drift_share, top=mon.top_columns)
    # Eval mode makes outputs independent of the chunking: large chunks, fewer Python round trips.
    chunk = max(cfg.eval.batch_size, _INFERENCE_ROWS)
    ref_proba = predict_proba(model, encoder.transform(ref), batch_size=chunk)
    cur_proba = predict_proba(model, encoder.transform(current), batch_size=chunk)
    prediction = drift.prediction_drift(ref_proba, cur_proba, classes=labels.classes, alpha=mon.alpha,
                                        effect_floor=mon.effect_floor)
    performance = None
    if label_column in current.columns and current[label_column].notna().all():
        try:
            y = labels.transform(current[label_column])
        except DataSourceError:
            y = None  # labels the model never saw: accuracy is undefined, the drift is not
        if y is not None:
            m = classification_metrics(y, cur_proba, n_classes=labels.n_classes, ece_bins=cfg.eval.ece_bins)
            performance = {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "ece": m["ece"]}
            if reference.get("reference_accuracy") is not None:
                performance["reference_accuracy"] = reference["reference_accuracy"]
                performance["accuracy_drop"] = reference["reference_accuracy"] - m["accuracy"]

    decidable = len(current) >= mon.min_rows
    drifted = bool(data["drifted"] or (mon.prediction and prediction["drifted"])) if decidable else None
    drifted_columns = data["drifted_columns"] + ([drift.PREDICTION_COLUMN] if prediction["drifted"] else [])

    # Samples for the report, with the model's outputs as two more columns.
    # Seeded by the batch content: the same batch always gets the same sample.
    seed = int(batch["fingerprint"][:8], 16)
    for frame, proba, name in ((ref, ref_proba, "reference"), (current, cur_proba, "current")):
        outputs = {drift.PREDICTION_COLUMN: proba.argmax(axis=1).astype(str),
                   drift.CONFIDENCE_COLUMN: proba.max(axis=1)}
        picked = drift.sample_rows(frame[features].assign(**outputs), mon.report_rows, seed)
        picked.to_parquet(out / f"report_{name}.parquet", index=False)

    full = {"fingerprint": batch["fingerprint"], "reference_run_id": reference["run_id"], "rows": len(current),
            "decidable": decidable, "drifted": drifted, "drifted_columns": drifted_columns, "data": data,
            "prediction": prediction, "performance": performance,
            "columns": [s.to_dict() for s in scores]}
    (out / "drift.json").write_text(json.dumps(full, indent=1, default=float), encoding="utf-8")
    return {
        "rows": int(len(current)),
        "decidable": decidable,
        "drifted": drifted,
        "drifted_columns": drifted_columns,
        "drift": {k: data[k] for k in ("share", "n_columns", "n_drifted", "drifted", "columns")},
        "prediction": prediction,
        "performance": performance,
        "drift_json": str(out / "drift.json"),
        "report_inputs": {"reference": str(out / "report_reference.parquet"),
                          "current": str(out / "report_current.parquet")},
        "report_columns": [s.column for s in sorted(scores, key=lambda s: s.score, reverse=True)][: mon.report_columns],
    }


# 6. The Evidently report ---------------------------------------------------------------


def build_report(
    cfg: PipelineConfig, reference: dict[str, Any], batch: dict[str, Any], analysis: dict[str, Any]
) -> dict[str, Any]:
    """Evidently report (HTML + JSON) on the sampled rows, added to the Evidently workspace.

    The report covers ``monitor.report_rows`` sampled rows of batch and
    reference, counts drifted columns over every feature, and draws the
    ``monitor.report_columns`` top-scoring features plus the predicted class
    and confidence.
    """
    started = time.perf_counter()
    ref = pd.read_parquet(analysis["report_inputs"]["reference"])
    cur = pd.read_parquet(analysis["report_inputs"]["current"])
    # The samples hold the model's features and its two outputs, nothing else.
    features = [c for c in ref.columns if c not in (drift.PREDICTION_COLUMN, drift.CONFIDENCE_COLUMN)]
    numeric = [c for c in features if drift.is_numeric(ref[c]) and drift.is_numeric(cur[c])]
    categorical = [c for c in features if c not in numeric]
    drawn = analysis["report_columns"]
    version = reference["version"] or "none"
    snapshot = drift.evidently_report(
        ref, cur,
        numeric=[*numeric, drift.CONFIDENCE_COLUMN],
        categorical=[*categorical, drift.PREDICTION_COLUMN],
        drawn=[*drawn, drift.PREDICTION_COLUMN, drift.CONFIDENCE_COLUMN],
        name=f"batch {batch['fingerprint'][:12]}",
        metadata={"fingerprint": batch["fingerprint"], "source": batch["source"], "model": reference["model"],
                  "model_version": version, "reference_run_id": reference["run_id"]},
        tags=[reference["model"], f"version-{version}"],
    )
    paths = drift.save_report(snapshot, Path(batch["batch_dir"]) / "evidently")
    ws = drift.add_to_workspace(snapshot, workspace_dir(cfg), project=reference["model"])
    return {**paths, **ws, "rows_sampled": {"reference": len(ref), "current": len(cur)},
            "seconds": round(time.perf_counter() - started, 3)}


# 7. The decision -----------------------------------------------------------------------


def model_history(state: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The model's streak and alerts; a new reference (retrained or promoted model) starts afresh."""
    history = state["models"].get(reference["model"])
    if not history or history.get("reference_run_id") != reference["run_id"]:
        return {"reference_run_id": reference["run_id"], "version": reference["version"], "streak": 0,
                "streak_batches": [], "alerts": []}
    return history


def decide_batch(
    cfg: PipelineConfig, reference: dict[str, Any], analysis: dict[str, Any] | None, gated: dict[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The batch's drift level and data-quality level, and which alerts are due (nothing is written).

    A batch the gate blocked is still judged for drift and counts towards the
    streak when its drift test fires; `finish_batch` commits.
    """
    when = now or now_utc()
    history = model_history(read_state(cfg), reference)
    mon = cfg.monitor
    quality = quality_of(cfg, gated)
    if analysis is None:
        why = quality["reason"] if quality["level"] == "blocked" else "no row could be read and typed"
        decision = {"level": drift.BLOCKED, "streak": history["streak"], "alert": False,
                    "reason": f"no drift decision: {why}"}
    else:
        decision = drift.decide(
            analysis["drifted"], analysis["drifted_columns"], history,
            consecutive=mon.consecutive, cooldown_minutes=mon.cooldown_minutes,
            dedup_overlap=mon.dedup_overlap, min_level=cfg.alerts.min_level, now=when,
        )
    quality_alert, quality_reason = False, quality["reason"]
    if quality["level"] != "ok":
        repeat = drift.repeated_alert(quality["checks"], history.get("quality_alerts", []),
                                      cooldown_minutes=mon.cooldown_minutes, dedup_overlap=mon.dedup_overlap,
                                      now=when)
        quality_alert = repeat is None
        if repeat is not None:
            quality_reason += (f"; repeats the data-quality alert of {repeat['at']} (same checks, "
                               f"cooldown {mon.cooldown_minutes:g} min)")
    quality = {**quality, "alert": quality_alert, "reason": quality_reason}
    return {**decision, "quality": quality, "decided_at": when.isoformat()}


# 8. MLflow -----------------------------------------------------------------------------


def log_monitoring_run(
    cfg: PipelineConfig,
    batch: dict[str, Any],
    gated: dict[str, Any],
    reference: dict[str, Any],
    analysis: dict[str, Any] | None,
    report: dict[str, Any] | None,
    decision: dict[str, Any],
) -> str:
    """One MLflow run per batch in the monitoring experiment: drift metrics, the reports, the gate's result."""
    from normlab import tracking

    uri = cfg.tracking_uri()
    tags = {
        "normlab.data.fingerprint": batch["fingerprint"],
        "normlab.data.source": batch["source"],
        "normlab.model": reference["model"],
        "normlab.model.version": reference["version"] or "",
        "normlab.reference_run_id": reference["run_id"],
        "normlab.drift.level": decision["level"],
        "normlab.data.quality": decision["quality"]["level"],
    }
    run_id = tracking.start_run(uri, monitoring_experiment(cfg), artifact_location=cfg.artifact_location(),
                                run_name=f"batch-{batch['fingerprint'][:12]}", tags=tags)
    try:
        tracking.log_params(uri, run_id, {**flatten(cfg.monitor, "monitor."), "reference.selected_by":
                                          reference["selected_by"], "data.fingerprint": batch["fingerprint"]})
        metrics: dict[str, float] = {
            "rows/in": gated["rows_in"], "rows/accepted": gated["rows_accepted"],
            "rows/quarantined": gated["rows_quarantined"], "rows/typed": gated["rows_typed"],
            "rows/untyped": gated["rows_untyped"], "drift/streak": decision["streak"],
            "quality/level": _QUALITY_CODE[decision["quality"]["level"]],
            "quality/quarantined_share": decision["quality"]["share"],
        }
        if decision["level"] in _LEVEL_CODE:
            metrics["drift/level"] = _LEVEL_CODE[decision["level"]]
        if analysis is not None:
            full = json.loads(Path(analysis["drift_json"]).read_text(encoding="utf-8"))
            metrics.update({
                "drift/share": analysis["drift"]["share"],
                "drift/n_drifted": analysis["drift"]["n_drifted"],
                "drift/n_columns": analysis["drift"]["n_columns"],
                "prediction/class_shift": analysis["prediction"]["class"]["score"],
                "prediction/confidence_shift": analysis["prediction"]["confidence"]["score"],
                "prediction/mean_confidence": analysis["prediction"]["confidence"]["current_mean"],
            })
            metrics.update({f"drift/column/{c['column']}": c["score"] for c in full["columns"]})
            for key, value in (analysis["performance"] or {}).items():
                metrics[f"performance/{key}"] = value
            tracking.log_artifact(uri, run_id, analysis["drift_json"])
        tracking.log_metrics(uri, run_id, metrics)
        tracking.log_artifact(uri, run_id, gated["report_path"], "gate")
        tracking.log_dict(uri, run_id, decision, "decision.json")
        if report is not None:
            tracking.log_artifact(uri, run_id, report["html"], "evidently")
            tracking.log_artifact(uri, run_id, report["json"], "evidently")
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    return run_id


# 9. Commit -----------------------------------------------------------------------------


def finish_batch(
    cfg: PipelineConfig,
    batch: dict[str, Any],
    gated: dict[str, Any],
    reference: dict[str, Any],
    analysis: dict[str, Any] | None,
    report: dict[str, Any] | None,
    decision: dict[str, Any],
    alert: dict[str, Any],
    quality_alert: dict[str, Any],
    monitor_run_id: str,
) -> dict[str, Any]:
    """Mark the batch done and update the model's streak and alert histories, in one atomic write.

    Returns:
        The batch's entry in the monitor summary.
    """
    from normlab import tracking

    # The store first: a commit that follows it cannot be left half done by an unreachable server.
    tracking.set_tags(cfg.tracking_uri(), monitor_run_id, {
        "normlab.alert.sent": alert["sent"], "normlab.alert.delivered": alert["delivered"],
        "normlab.quality_alert.sent": quality_alert["sent"],
    })
    entry = batch_entry(batch, gated, analysis, report, decision, alert, monitor_run_id, quality_alert)
    with locked_state(cfg) as state:
        if state["batches"].get(batch["fingerprint"], {}).get("status") == "done":
            return state["batches"][batch["fingerprint"]]["entry"]  # a retried commit counts the batch once
        history = model_history(state, reference)
        if decision["level"] in _LEVEL_CODE:
            history["streak"] = decision["streak"]
            if decision["level"] == "none":
                history["streak_batches"] = []
            else:
                history["streak_batches"] = [*history["streak_batches"], gated["accepted_path"]][-50:]
        if decision["alert"]:
            # An alert that reached nobody because none is configured still starts the cooldown (it
            # also gates retraining); one that failed to reach a configured target does not.
            if alert["sent"] or alert["targets"] == 0:
                history["alerts"] = [*history["alerts"], {"at": decision["decided_at"], "level": decision["level"],
                                                          "columns": analysis["drifted_columns"] if analysis else [],
                                                          "fingerprint": batch["fingerprint"],
                                                          "delivered": alert["delivered"]}][-100:]
        quality = decision["quality"]
        if quality["alert"] and (quality_alert["sent"] or quality_alert["targets"] == 0):
            history["quality_alerts"] = [*history.get("quality_alerts", []), {
                "at": decision["decided_at"], "level": quality["level"], "columns": quality["checks"],
                "fingerprint": batch["fingerprint"], "delivered": quality_alert["delivered"]}][-100:]
        state["models"][reference["model"]] = history
        state["batches"][batch["fingerprint"]] = {
            "status": "done", "source": batch["source"], "processed_at": now_utc().isoformat(),
            "monitor_run_id": monitor_run_id, "reference_run_id": reference["run_id"], "entry": entry,
        }
    return entry


def batch_entry(
    batch: dict[str, Any],
    gated: dict[str, Any],
    analysis: dict[str, Any] | None,
    report: dict[str, Any] | None,
    decision: dict[str, Any],
    alert: dict[str, Any],
    monitor_run_id: str,
    quality_alert: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One batch in the summary JSON."""
    entry: dict[str, Any] = {
        "fingerprint": batch["fingerprint"],
        "source": batch["source"],
        "status": "processed",
        "rows_in": gated["rows_in"],
        "rows_accepted": gated["rows_accepted"],
        "rows_quarantined": gated["rows_quarantined"],
        "rows_typed": gated["rows_typed"],
        "rows_untyped": gated["rows_untyped"],
        "quarantine_path": gated["quarantine_path"],
        "gate_report": gated["report_path"],
        "quality": {**decision["quality"],
                    "alert_sent": bool((quality_alert or {}).get("sent")),
                    "alert_reason": (quality_alert or {}).get("reason")},
        "drift": {"level": decision["level"], "reason": decision["reason"], "streak": decision["streak"],
                  "share": None, "n_drifted": None, "n_columns": None, "columns": []},
        "prediction": None,
        "performance": None,
        "alert": {k: alert[k] for k in ("due", "sent", "targets", "delivered", "reason") if k in alert},
        "quality_alert": {k: v for k, v in (quality_alert or NO_ALERT).items()
                          if k in ("due", "sent", "targets", "delivered", "reason")},
        "report": {k: report[k] for k in ("html", "json", "snapshot_id")} if report else None,
        "monitor_run_id": monitor_run_id,
    }
    if analysis is not None:
        entry["drift"].update({k: analysis["drift"][k] for k in ("share", "n_drifted", "n_columns", "columns")})
        pred = analysis["prediction"]
        entry["prediction"] = {"drifted": pred["drifted"], "class_shift": pred["class"]["score"],
                               "confidence_shift": pred["confidence"]["score"]}
        entry["performance"] = analysis["performance"]
    return entry


def skipped_entry(opened: dict[str, Any]) -> dict[str, Any]:
    """A batch seen before, in the summary JSON: its earlier result, marked skipped."""
    previous = (opened.get("previous") or {}).get("entry") or {}
    return {
        **previous,
        "fingerprint": opened["fingerprint"],
        "source": opened["source"],
        "status": opened["status"],
        "reason": opened["reason"],
        "alert": dict(NO_ALERT),
        "quality_alert": dict(NO_ALERT),
    }


# 10. Alerts ----------------------------------------------------------------------------


def alert_batch(
    cfg: PipelineConfig,
    batch: dict[str, Any],
    reference: dict[str, Any],
    analysis: dict[str, Any] | None,
    report: dict[str, Any] | None,
    decision: dict[str, Any],
    monitor_run_id: str,
    retrain: bool,
    config_hint: str = "",
) -> dict[str, Any]:
    """Send the drift alert when the decision calls for one.

    Returns:
        ``sent``, ``targets``, ``delivered`` and, when nothing was sent, ``reason``.
    """
    from normlab import alerts

    if not decision["alert"] or analysis is None:
        return {**NO_ALERT, "reason": decision["reason"]}
    title, body = alerts.drift_message(
        model=reference["model"], version=reference["version"], reference_run_id=reference["run_id"],
        fingerprint=batch["fingerprint"], source=batch["source"], level=decision["level"],
        drift=analysis["drift"], prediction=analysis["prediction"], performance=analysis["performance"],
        rows=analysis["rows"], report_html=report["html"] if report else None, monitor_run_id=monitor_run_id,
        tracking_uri=cfg.redacted().tracking_uri(), retrain=retrain, config_hint=config_hint,
    )
    return {"due": True, **alerts.send(alerts.alert_urls(cfg), title, body)}


def quality_alert_batch(
    cfg: PipelineConfig,
    batch: dict[str, Any],
    reference: dict[str, Any],
    gated: dict[str, Any],
    decision: dict[str, Any],
    monitor_run_id: str,
) -> dict[str, Any]:
    """Send the data-quality alert (a blocked batch, or too many rows quarantined) when one is due."""
    from normlab import alerts

    quality = decision["quality"]
    if not quality["alert"]:
        return {**NO_ALERT, "reason": quality["reason"]}
    title, body = alerts.quality_message(
        model=reference["model"], version=reference["version"], fingerprint=batch["fingerprint"],
        source=batch["source"], quality=quality, drift_level=decision["level"], rows_in=gated["rows_in"],
        rows_quarantined=gated["rows_quarantined"], rows_untyped=gated["rows_untyped"], failed=gated["failed"],
        quarantine_path=gated["quarantine_path"], monitor_run_id=monitor_run_id,
        tracking_uri=cfg.redacted().tracking_uri(),
    )
    return {"due": True, **alerts.send(alerts.alert_urls(cfg), title, body)}


def retraining_failed_alert(cfg: PipelineConfig, reference: dict[str, Any], retrained: dict[str, Any]) -> dict[str, Any]:
    """Tell the alert targets that a retraining started by monitoring failed."""
    from normlab import alerts

    title, body = alerts.retraining_failed_message(
        model=reference["model"], version=reference["version"], error=retrained["error"] or "unknown error",
        data=retrained.get("data"), rows_reference=retrained["rows_reference"], rows_new=retrained["rows_new"],
        tracking_uri=cfg.redacted().tracking_uri(),
    )
    return {"due": True, **alerts.send(alerts.alert_urls(cfg), title, body)}


def wants_retraining(cfg: PipelineConfig, decision: dict[str, Any], retrain: bool | None) -> bool:
    """Retrain on a new (not held back) `detected` drift when enabled in the config or by the caller."""
    enabled = cfg.monitor.retrain_on_drift if retrain is None else retrain
    return bool(enabled and decision["level"] == "detected" and decision["alert"])


def batch_markdown(entry: dict[str, Any], reference: dict[str, Any]) -> str:
    """A short Markdown summary of one batch (the Prefect artifact)."""
    d = entry["drift"]
    which = f"{reference['model']} v{reference['version']}" if reference["version"] else reference["model"]
    lines = [
        f"### Batch `{entry['fingerprint'][:12]}`: drift **{d['level']}**",
        "",
        f"- source: `{entry['source']}`",
        f"- model: {which} (reference run `{reference['run_id']}`)",
        f"- rows: {entry['rows_in']} in, {entry['rows_accepted']} accepted, {entry['rows_quarantined']} quarantined, "
        f"{entry['rows_untyped']} unreadable (left out of the drift)",
        f"- data quality: **{entry['quality']['level']}** ({entry['quality']['reason']})",
        f"- decision: {d['reason']}",
    ]
    if d["share"] is not None:
        lines.append(f"- drifted columns: {d['n_drifted']} of {d['n_columns']} (share {d['share']:.2f})")
        lines += ["", "| column | test | score | p-value | drifted |", "|---|---|---|---|---|"]
        lines += [f"| {c['column']} | {c['test']} | {c['score']:.3f} | {c['p_value']:.2g} | {c['drifted']} |"
                  for c in d["columns"]]
    if entry.get("performance"):
        lines.append(f"\n- accuracy on the batch: {entry['performance']['accuracy']:.3f}")
    alert = entry["alert"]
    lines.append(f"- alert: {'sent' if alert['sent'] else 'not sent'}"
                 + (f" ({alert['reason']})" if alert.get("reason") else ""))
    if entry.get("report"):
        lines.append(f"- report: `{entry['report']['html']}`")
    return "\n".join(lines)


# 11. Retraining ------------------------------------------------------------------------


def retraining_data(cfg: PipelineConfig, reference: dict[str, Any]) -> dict[str, Any]:
    """Write the reference rows plus the accepted rows of the drifted batches as one Parquet file.

    Only batches with the label column can train; others are left out and counted.

    Returns:
        ``path`` (None when no new labelled rows exist), ``rows_reference``,
        ``rows_new``, ``batches_used``, ``batches_unlabelled``.
    """
    history = model_history(read_state(cfg), reference)
    ref = pd.read_parquet(reference["reference"])
    new, unlabelled = [], 0
    for path in history["streak_batches"]:
        if not path or not Path(path).is_file():
            continue
        frame = pd.read_parquet(path)
        if cfg.data.label not in frame.columns or frame[cfg.data.label].isna().any():
            unlabelled += 1
            continue
        new.append(frame[list(ref.columns)] if set(ref.columns) <= set(frame.columns) else frame)
    out = {"rows_reference": int(len(ref)), "rows_new": int(sum(len(f) for f in new)), "batches_used": len(new),
           "batches_unlabelled": unlabelled, "path": None}
    if not new:
        return out
    combined = pd.concat([ref, *new], ignore_index=True)
    folder = monitor_dir(cfg) / "retrain" / now_utc().strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(parents=True, exist_ok=True)
    combined.to_parquet(folder / "data.parquet", index=False)
    return {**out, "path": str(folder / "data.parquet")}


def record_retraining(cfg: PipelineConfig, reference: dict[str, Any], data: dict[str, Any],
                      result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    """Note the retraining in the model's history and return its summary entry."""
    entry = {"at": now_utc().isoformat(), "data": data.get("path"), "rows_reference": data["rows_reference"],
             "rows_new": data["rows_new"], "run_id": (result or {}).get("run_id"), "error": error}
    if result:
        entry.update({"model_uri": result["model_uri"], "rows": result["data"]["rows"],
                      "rows_accepted": result["validation"]["rows_accepted"], "registry": result.get("registry")})
    with locked_state(cfg) as state:
        history = model_history(state, reference)
        history["retrained"] = [*history.get("retrained", []), entry][-20:]
        state["models"][reference["model"]] = history
    return entry
