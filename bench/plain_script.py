"""The default pipeline's work as a plain script: no Prefect, no data gate, no MLflow.

It does what ``normlab run`` does on ``configs/digits.yaml`` minus
orchestration, validation and tracking, and is what `bench.pipeline` measures
``normlab run`` against: the same splits (`normlab.splitting.prepare_splits`),
the same model, optimizer, batch size and epochs, trained with the loop a user
writes (per-step running loss and accuracy, a validation pass and a printed line
per epoch), the weights saved once at the end, and the same evaluation stage
(`normlab.pipeline.evaluate`, so every metric, interval and timing normlab
reports is computed here too). Left out: the flow and its server, the data gate
and quarantine, per-epoch checkpoints, MLflow logging, the model registry and
promotion.

Run from the repository root::

    python -m bench.plain_script --epochs 10 --workdir /tmp/plain --out /tmp/plain/result.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from normlab import pipeline, splitting
from normlab.config import load_config
from normlab.contracts import Batch, Trained, TrainingResult
from normlab.training import set_seeds


def train_by_hand(model, optimizer, train, val, *, epochs: int, batch_size: int, seed: int) -> dict:
    """A user's training loop; returns the history in the shape the evaluation stage reads."""
    x, y = torch.as_tensor(train[0]), torch.as_tensor(train[1])
    x_val, y_val = torch.as_tensor(val[0]), torch.as_tensor(val[1])
    generator = torch.Generator().manual_seed(seed)
    history, epoch_ends, train_seconds = [], [], 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=generator)
        running_loss, correct, seen = 0.0, 0, 0
        for first in range(0, len(x), batch_size):
            idx = order[first:first + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one row
                continue
            optimizer.zero_grad()
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            seen += len(idx)
        train_seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            val_logits = model(x_val)
            val_loss = F.cross_entropy(val_logits, y_val).item()
            val_accuracy = (val_logits.argmax(1) == y_val).float().mean().item()
        seconds = time.perf_counter() - start
        history.append({"epoch": epoch, "train_loss": running_loss / seen, "train_accuracy": correct / seen,
                        "val_loss": val_loss, "val_accuracy": val_accuracy, "seconds": seconds})
        print(f"epoch {epoch}/{epochs}  loss {running_loss / seen:.4f}  val acc {val_accuracy:.4f}", flush=True)
        epoch_ends.append(time.time())
    return {"history": history, "epochs_to_target": None, "seconds_to_target": None,
            "train_seconds": train_seconds, "samples_per_second": epochs * len(x) / train_seconds,
            "resumed_from_epoch": 0, "epoch_ends": epoch_ends}


def main(argv: list[str] | None = None) -> dict:
    """Run the plain pipeline; write its phase times and epoch end times as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's train.epochs")
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the splits and the model")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the timings")
    imported = time.time()  # the caller knows when it started the process: the difference is start-up
    args = parser.parse_args(argv)

    overrides = [f"workdir={args.workdir}"] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(None, overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    folder = args.workdir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    loaded = pipeline.read_batch(cfg.data)
    frame, source = loaded.frame, loaded.source
    frame.to_parquet(folder / "batch.parquet", index=False)
    batch = Batch(path=str(folder / "batch.parquet"), source=source, fingerprint="",  # a plain script: no fingerprint
                  rows=len(frame), columns=[str(c) for c in frame.columns])
    prepared = splitting.prepare_splits(cfg.data, cfg.splits, cfg.eval, cfg.seed, batch, folder)
    splits = splitting.load_prepared(prepared)
    spec = pipeline.model_spec(cfg.model, prepared, cfg.data.image_shape)
    set_seeds(cfg.seed)
    model = spec.build()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    data_ready = time.time()

    result = train_by_hand(model, optimizer, splits["id/train"], splits["id/val"], epochs=cfg.train.epochs,
                           batch_size=cfg.train.batch_size, seed=cfg.seed)
    torch.save(model.state_dict(), folder / "model.pt")
    trained = Trained(model_path=str(folder / "model.pt"), spec=spec,
                      result=TrainingResult.model_validate({k: v for k, v in result.items() if k != "epoch_ends"}))
    trained_at = time.time()

    metrics = pipeline.evaluate(cfg.eval, prepared, trained, folder, seed=cfg.seed).metrics
    done = time.time()
    timings = {
        "epochs": cfg.train.epochs,
        "imported_at": imported,
        "data_seconds": data_ready - imported,
        "train_seconds": trained_at - data_ready,
        "evaluate_seconds": done - trained_at,
        "epoch_ends": result["epoch_ends"],
        "id_test_accuracy": metrics.get("id/test/accuracy", float(np.nan)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(timings, indent=1))
    return timings


if __name__ == "__main__":
    main()
