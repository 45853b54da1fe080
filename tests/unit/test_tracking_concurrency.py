"""Several processes on one fresh SQLite store at the same moment: every get-or-create must hold.

Each process is spawned (a fresh interpreter, as ``normlab run`` is) and all
start each step at once, at a barrier: open the new store (MLflow builds the
schema of a new file on first open), create the same experiment, log the same
new datasets, register the same new model name, set the same new aliases (the
quick races several times over). Without the guards in `normlab.tracking` and
`normlab.registry` the losers fail with ``table ... already exists``,
``UNIQUE constraint failed: datasets...`` or ``...: registered_model_aliases...``.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import traceback
from contextlib import closing

PROCESSES = 3
# Each race is run this many times over (a new dataset, a new alias each time): one round alone can miss it.
ROUNDS = 5
BARRIER_TIMEOUT = 120.0
FINGERPRINTS = [f"{r:02d}" * 32 for r in range(ROUNDS)]
ALIASES = [f"race-{r}" for r in range(ROUNDS)]


def _racer(uri: str, artifacts: str, barrier, results, index: int) -> None:
    try:
        import pandas as pd

        from normlab import registry, tracking

        frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "label": [0, 1, 0]})
        store = tracking.TrackingStore(uri)
        barrier.wait(BARRIER_TIMEOUT)
        client = store.client  # opens the fresh store: schema, default experiment
        barrier.wait(BARRIER_TIMEOUT)
        run_id = tracking.start_run(store, "race", artifact_location=artifacts, run_name=f"racer-{index}", tags={})
        model = client.create_logged_model(client.get_run(run_id).info.experiment_id, name="model",
                                           source_run_id=run_id)
        for fingerprint in FINGERPRINTS:
            barrier.wait(BARRIER_TIMEOUT)
            tracking.log_dataset(store, run_id, frame, name="race-data", source="builtin:digits",
                                 fingerprint=fingerprint, targets="label", context="training")
        barrier.wait(BARRIER_TIMEOUT)
        version = registry.register_version(store, "race-model", run_id, model.model_id)
        for alias in ALIASES:
            barrier.wait(BARRIER_TIMEOUT)
            registry.set_alias(store, "race-model", alias, version.version)
        results.put((index, "ok", run_id, version.version))
    except BaseException:  # noqa: BLE001 - reported to the test, which fails on it
        results.put((index, "error", traceback.format_exc(), None))
        barrier.abort()


def test_processes_racing_on_a_fresh_sqlite_store_all_finish(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=_racer, args=(uri, (tmp_path / "artifacts").as_uri(), barrier, results, i))
                 for i in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=240) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [detail for _, status, detail, _ in outcomes if status != "ok"]
    # A broken barrier only echoes the first failure; show that one.
    errors.sort(key=lambda text: "BrokenBarrierError" in text)
    assert not errors, errors[0]

    run_ids = {run_id for _, _, run_id, _ in outcomes}
    assert len(run_ids) == PROCESSES
    assert sorted(int(version) for *_, version in outcomes) == list(range(1, PROCESSES + 1))
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT name FROM experiments ORDER BY experiment_id").fetchall() == [
            ("Default",), ("race",)]
        # One dataset row per digest, linked to every run.
        assert sorted(con.execute("SELECT name, digest FROM datasets").fetchall()) == [
            ("race-data", f[:32]) for f in FINGERPRINTS]
        linked = con.execute("SELECT destination_id FROM inputs WHERE source_type = 'DATASET'").fetchall()
        assert sorted(row[0] for row in linked) == sorted([*run_ids] * ROUNDS)
        assert con.execute("SELECT name FROM registered_models").fetchall() == [("race-model",)]
        aliases = con.execute("SELECT alias, version FROM registered_model_aliases").fetchall()
        assert sorted(alias for alias, _ in aliases) == sorted(ALIASES)
        assert all(1 <= int(version) <= PROCESSES for _, version in aliases)
