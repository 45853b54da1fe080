"""The built-in study: known findings about normalization, checked on this data.

The study is a sweep (norms x {small batch, reference batch} x seeds, nested
MLflow runs) followed by one test per finding. Every test is fixed before the
numbers are seen, states its margin, and uses 95 % Student-t intervals over
seeds (paired by seed where two settings are compared). A finding is reported
as held only when its interval says so; a finding that does not hold here, or
that the intervals cannot decide, is reported as not held with the reason.

Findings (see REFERENCES.md):

1. ``bn_small_batch`` — BatchNorm degrades at very small batches while GroupNorm,
   LayerNorm and RMSNorm do not (Wu & He 2018).
2. ``bn_folding`` — folding BatchNorm into the preceding Linear gives the same
   outputs (to 1e-5) and a batch-1 latency close to a model without normalization.
3. ``bn_adaptation`` — re-estimating BatchNorm statistics on corrupted data
   recovers accuracy on it (Schneider et al. 2020).
4. ``rms_matches_layer`` — RMSNorm matches LayerNorm's accuracy (Zhang & Sennrich 2019).
5. ``dyt_matches_layer`` — Dynamic Tanh matches LayerNorm in an MLP (Zhu et al. 2025).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from normlab import tracking
from normlab.config import ModelConfig, PipelineConfig, TrainConfig
from normlab.intervals import mean_interval
from normlab.model_spec import ModelSpec
from normlab.sweep_contracts import Finding, MeanInterval, Measurement, PointOutcome, StudyResult, SweepSummary
from normlab.tracking import TrackingStore

if TYPE_CHECKING:
    from normlab.report import Section

STUDY_NORMS: tuple[str, ...] = ("batch", "group", "layer", "rms", "dyt")
SMALL_BATCH = 2

# Accuracy differences smaller than this count as "no change" / "matches": 2 points
# is about 5 of the 270 test images of the built-in digits.
ACCURACY_MARGIN = 0.02
# Folded outputs must equal the original's to this (REFERENCES.md: about 1e-5).
FOLD_TOLERANCE = 1e-5
# "Close to a model without normalization": at most 10 % slower at batch 1.
LATENCY_MARGIN = 1.10
# Timing rounds per model (each round times every variant, interleaved, so
# machine load hits all variants alike) and single-row calls per variant per round.
LATENCY_ROUNDS = 5
LATENCY_CALLS = 200

FULL = {"seeds": 5, "epochs": None}
QUICK = {"seeds": 3, "epochs": 5}


def study_config(
    cfg: PipelineConfig,
    *,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    workers: int | None = None,
) -> PipelineConfig:
    """The study's sweep: the study norms at batch 2 and at ``train.batch_size``, several seeds.

    Args:
        cfg: The base config (data, model family, store, training settings).
        quick: Fewer seeds and epochs (about a third of the time).
        seeds: Number of seeds (0..seeds-1); overrides the mode's.
        epochs: Training epochs; overrides the mode's (full mode: ``train.epochs``).
        workers: Local Dask worker processes.
    """
    mode = QUICK if quick else FULL
    n_seeds = seeds if seeds is not None else mode["seeds"]
    n_epochs = epochs or mode["epochs"] or cfg.train.epochs
    if n_seeds < 2:
        from normlab.errors import ConfigError

        raise ConfigError(f"--seeds {n_seeds}: the study needs at least 2 seeds for an interval")
    if cfg.train.batch_size <= SMALL_BATCH:
        from normlab.errors import ConfigError

        raise ConfigError(f"train.batch_size={cfg.train.batch_size}: the study compares it with batch "
                          f"{SMALL_BATCH}, so it must be larger")
    sweep = cfg.sweep.model_copy(update={
        "norms": list(STUDY_NORMS),
        "batch_sizes": [SMALL_BATCH, cfg.train.batch_size],
        "seeds": list(range(n_seeds)),
        "lr_scaling": "linear",
        "workers": workers or cfg.sweep.workers,
        "address": None,
    })
    train = cfg.train.model_copy(update={"epochs": n_epochs})
    track = cfg.tracking.model_copy(update={"run_name": cfg.tracking.run_name or f"{cfg.name}-study"})
    return cfg.model_copy(update={"sweep": sweep, "train": train, "tracking": track})


# Inputs of the tests ----------------------------------------------------------------------


def _metric_by_seed(points: list[PointOutcome], norm: str, batch_size: int, key: str) -> dict[int, float]:
    return {p.seed: p.metrics[key] for p in _points_of(points, norm, batch_size) if key in p.metrics}


def _paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """``a - b`` for every seed both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def _stat(label: str, values: list[float]) -> Measurement:
    return Measurement(label=label, **mean_interval(values).model_dump())


def _load_point(point: PointOutcome) -> tuple[Any, dict[str, tuple[np.ndarray, np.ndarray]], ModelSpec]:
    """The trained model of a finished grid point, its prepared splits and its model spec."""
    from normlab import pipeline, splitting

    run_dir = Path(str(point.run_dir))
    spec = ModelSpec.read(run_dir / "model.json")
    model = pipeline.load_weights(spec, run_dir / "model.pt")
    splits = splitting.load_prepared(splitting.prepared_path(run_dir))
    return model, splits, spec


def _points_of(points: list[PointOutcome], norm: str, batch_size: int) -> list[PointOutcome]:
    return [p for p in points if p.finished and p.norm == norm and p.batch_size == batch_size]


# The tests -----------------------------------------------------------------------------------


def bn_small_batch(points: list[PointOutcome], small: int, reference: int) -> Finding:
    """BatchNorm's accuracy drops from the reference batch to batch ``small``; GN, LN, RMS do not."""
    key = "id/test/accuracy"
    measured, degrades, flat = [], {}, {}
    for norm in ("batch", "group", "layer", "rms"):
        drop = _paired(_metric_by_seed(points, norm, reference, key), _metric_by_seed(points, norm, small, key))
        stat = _stat(f"{norm}: accuracy drop, batch {reference} -> {small}", drop)
        measured.append(stat)
        degrades[norm] = stat.low is not None and stat.low > ACCURACY_MARGIN
        flat[norm] = stat.high is not None and stat.high < ACCURACY_MARGIN
    others = ("group", "layer", "rms")
    held = degrades["batch"] and all(flat[n] for n in others)
    reasons = []
    reasons.append("BatchNorm degrades" if degrades["batch"] else
                   f"BatchNorm's drop is not shown to exceed {ACCURACY_MARGIN:.0%}")
    for n in others:
        if not flat[n]:
            reasons.append(f"{n}'s drop is not shown to stay below {ACCURACY_MARGIN:.0%}")
    if held:
        reasons.append("GroupNorm, LayerNorm and RMSNorm stay within the margin")
    return Finding(
        key="bn_small_batch",
        title="BatchNorm degrades at very small batches; GroupNorm, LayerNorm and RMSNorm do not",
        published="Wu & He 2018, ResNet-50 on ImageNet: at batch 2, GN's error is 10.6 points lower than BN's "
                  "(BN 76.4 -> 65.3 from batch 32 to 2; GN 75.9 -> 75.9).",
        test=f"ID test accuracy drop from batch {reference} to batch {small} (learning rate scaled linearly), "
             f"paired by seed. Held if BatchNorm's whole 95 % interval lies above {ACCURACY_MARGIN:.0%} and "
             f"each of the others' lies below {ACCURACY_MARGIN:.0%}.",
        measured=measured,
        held=held,
        verdict="; ".join(reasons) + ".",
    )


def bn_folding(points: list[PointOutcome], reference: int) -> Finding:
    """Folded BatchNorm models give the same outputs and run like models without a norm."""
    import torch

    from normlab.inference import fold_batchnorm, latency_ms, max_abs_diff

    diffs, folded_ratio, eager_ratio = [], [], []
    for point in _points_of(points, "batch", reference):
        model, splits, spec = _load_point(point)
        x = splits["id/test"][0]
        folded = fold_batchnorm(model)
        diffs.append(max_abs_diff(model, folded, x))
        plain = replace(spec, norm="none").build().eval()
        rows = torch.as_tensor(x, dtype=torch.float32)
        for _ in range(LATENCY_ROUNDS):
            times = {name: latency_ms(m, rows, iterations=LATENCY_CALLS)[0]
                     for name, m in (("eager", model), ("folded", folded), ("none", plain))}
            folded_ratio.append(times["folded"] / times["none"])
            eager_ratio.append(times["eager"] / times["none"])
    worst = max(diffs) if diffs else None
    ratio = _stat("folded BatchNorm / no-norm batch-1 latency", folded_ratio)
    equal = worst is not None and worst <= FOLD_TOLERANCE
    close = ratio.high is not None and ratio.high <= LATENCY_MARGIN
    reasons = [f"largest output difference {worst:.1e}" + (" (within" if equal else " (above") +
               f" {FOLD_TOLERANCE:g})" if worst is not None else "no BatchNorm model finished"]
    if ratio.mean is not None:
        reasons.append(f"folded latency is {ratio.mean:.2f}x the no-norm model's"
                       + ("" if close else f", not shown to stay within {LATENCY_MARGIN:.2f}x"))
    return Finding(
        key="bn_folding",
        title="Folding BatchNorm keeps the outputs and removes its inference cost",
        published="Folding W' = W*gamma/sqrt(var+eps), b' = (b-mean)*gamma/sqrt(var+eps)+beta gives outputs "
                  "equal to about 1e-5 and the latency of a model without normalization.",
        test=f"Each seed's BatchNorm model (batch {reference}) folded (normlab.inference): largest absolute output "
             f"difference on the ID test split must be <= {FOLD_TOLERANCE:g}; median batch-1 latency of the "
             f"folded model over the same network built without norm, {LATENCY_ROUNDS} interleaved rounds "
             f"of {LATENCY_CALLS} calls per seed: the 95 % interval must stay below {LATENCY_MARGIN:.2f}.",
        measured=[
            Measurement(label="largest |output difference| over seeds", n=len(diffs), mean=worst),
            ratio,
            _stat("unfolded BatchNorm / no-norm batch-1 latency", eager_ratio),
        ],
        held=equal and close,
        verdict="; ".join(reasons) + ".",
    )


def bn_adaptation(points: list[PointOutcome], reference: int) -> Finding:
    """Re-estimated BatchNorm statistics raise accuracy on corrupted data."""
    from normlab.inference import adapt_batchnorm

    gains_by_seed: list[float] = []
    per_shift: dict[str, list[float]] = {}
    for point in _points_of(points, "batch", reference):
        model, splits, _ = _load_point(point)
        gains: dict[str, list[float]] = {}
        for key, (x, y) in splits.items():
            if not key.startswith("ood/") or len(y) < 4:
                continue
            # Statistics from one half, accuracy on the other: no row is scored on itself.
            fit, score = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
            before = _accuracy(model, x[score], y[score])
            after = _accuracy(adapt_batchnorm(model, x[fit]), x[score], y[score])
            # Severity levels (ood/<name>/s<k>) count under their shift, once.
            gains.setdefault("/".join(key.split("/")[:2]), []).append(after - before)
        for shift, values in gains.items():
            per_shift.setdefault(shift, []).append(float(np.mean(values)))
        if gains:
            gains_by_seed.append(float(np.mean([np.mean(v) for v in gains.values()])))
    overall = _stat("accuracy gain, mean over the OOD splits", gains_by_seed)
    held = overall.low is not None and overall.low > 0
    verdict = f"mean gain {overall.mean:+.3f}" if overall.mean is not None else "no BatchNorm model finished"
    if overall.mean is not None:
        verdict += "; its interval is above zero" if held else "; its interval does not exclude zero or a loss"
    return Finding(
        key="bn_adaptation",
        title="Re-estimating BatchNorm statistics on corrupted data recovers accuracy",
        published="Schneider et al. 2020: ImageNet-C mCE 76.7 -> 62.2 (ResNet-50); CIFAR-10-C severity 5 "
                  "error 43.5 -> 20.4.",
        test=f"Each seed's BatchNorm model (batch {reference}); for every OOD split, statistics re-estimated on "
             "half of its rows (no labels used), accuracy on the other half before and after. Held if the 95 % "
             "interval of the gain (per seed: mean over the shifts, severities averaged) lies above zero.",
        measured=[overall, *[_stat(f"{k}: accuracy gain", v) for k, v in sorted(per_shift.items())]],
        held=held,
        verdict=verdict + ".",
    )


def matches_layer(points: list[PointOutcome], norm: str, reference: int) -> Finding:
    """``norm``'s ID accuracy equals LayerNorm's within the margin (an equivalence test)."""
    names = {"rms": ("RMSNorm", "Zhang & Sennrich 2019: RMSNorm's accuracy is comparable to LayerNorm's, "
                                "with 7-64 % less running time."),
             "dyt": ("Dynamic Tanh", "Zhu et al. 2025: DyT replaces LayerNorm with equal accuracy "
                                     "(ViT-B 82.3 -> 82.5).")}
    title, published = names[norm]
    key = "id/test/accuracy"
    mine, layer = _metric_by_seed(points, norm, reference, key), _metric_by_seed(points, "layer", reference, key)
    diff = _stat(f"{norm} - layer: ID test accuracy, batch {reference}", _paired(mine, layer))
    low, high = diff.low, diff.high
    held = low is not None and high is not None and low > -ACCURACY_MARGIN and high < ACCURACY_MARGIN
    if diff.mean is None:
        verdict = "no paired runs finished"
    elif held:
        verdict = f"difference {diff.mean:+.3f}, interval within ±{ACCURACY_MARGIN:.0%}"
    elif low is not None and high is not None and (low >= ACCURACY_MARGIN or high <= -ACCURACY_MARGIN):
        verdict = f"difference {diff.mean:+.3f}: the accuracies differ by more than {ACCURACY_MARGIN:.0%}"
    else:
        verdict = f"difference {diff.mean:+.3f}, but the interval reaches beyond ±{ACCURACY_MARGIN:.0%}"
    return Finding(
        key=f"{norm}_matches_layer",
        title=f"{title} matches LayerNorm's accuracy" + (" in an MLP" if norm == "dyt" else ""),
        published=published,
        test=f"ID test accuracy of {title} minus LayerNorm's at batch {reference}, paired by seed. Held if the "
             f"95 % interval lies within ±{ACCURACY_MARGIN:.0%}.",
        measured=[diff],
        held=held,
        verdict=verdict + ".",
    )


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.inference_mode():
        return float((model.eval()(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy() == y).mean())


def check_findings(summary: SweepSummary, *, threads: int | None) -> list[Finding]:
    """Run every finding's test on the study sweep's points.

    Args:
        summary: The sweep summary; its points carry ``run_dir`` (models are read from there).
        threads: ``train.threads`` of the study config (None: one, as the grid points trained).
    """
    import torch

    # Timings and adaptation run single-threaded, as the grid points did.
    torch.set_num_threads(threads or 1)
    small, reference = min(summary.grid.batch_sizes), max(summary.grid.batch_sizes)
    points = summary.points
    return [
        bn_small_batch(points, small, reference),
        bn_folding(points, reference),
        bn_adaptation(points, reference),
        matches_layer(points, "rms", reference),
        matches_layer(points, "dyt", reference),
    ]


# The report ------------------------------------------------------------------------------------


def plot_findings(summary: SweepSummary, findings: list[Finding], path: Path) -> Path:
    """One figure, one panel per finding."""
    from normlab.report import _pyplot, norm_color

    plt = _pyplot()
    by_key = {f.key: f for f in findings}
    fig, grid = plt.subplots(2, 2, figsize=(12, 8.5))
    axes = grid.ravel()
    held_mark = {True: "held", False: "not held"}

    ax = axes[0]
    cells = {(r.norm, r.batch_size): r.stats["id/test/accuracy"] for r in summary.aggregate}
    batch_sizes = sorted({r.batch_size for r in summary.aggregate})
    norms = [n for n in STUDY_NORMS if any((n, b) in cells for b in batch_sizes)]
    width = 0.8 / len(batch_sizes)
    for j, b in enumerate(batch_sizes):
        stats = [cells.get((n, b), MeanInterval(n=0)) for n in norms]
        xs = [i + j * width for i, s in enumerate(stats) if s.mean is not None]
        ys = [s.mean for s in stats if s.mean is not None]
        err = [(s.high - s.mean) if s.high is not None else 0 for s in stats if s.mean is not None]
        ax.bar(xs, ys, width=width, yerr=err, capsize=3, label=f"batch {b}", alpha=0.85 if j else 0.5)
    ax.set_xticks([i + width * (len(batch_sizes) - 1) / 2 for i in range(len(norms))], labels=norms)
    ax.set(ylabel="ID test accuracy", ylim=(0, 1.05),
           title=f"1. small batches ({held_mark[by_key['bn_small_batch'].held]})")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1]
    fold = by_key["bn_folding"].measured
    labels = ["folded / none", "unfolded / none"]
    ratios = [fold[1], fold[2]]
    shown = [(lab, s) for lab, s in zip(labels, ratios, strict=True) if s.mean is not None]
    ax.bar([lab for lab, _ in shown], [s.mean for _, s in shown],
           yerr=[(s.high - s.mean) if s.high is not None else 0 for _, s in shown], capsize=3,
           color=["#2ca02c", "#d62728"][: len(shown)])
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.axhline(LATENCY_MARGIN, color="grey", linestyle="--", linewidth=1, label=f"margin {LATENCY_MARGIN:.2f}x")
    ax.set(ylabel="batch-1 latency ratio",
           title=f"2. BatchNorm folding ({held_mark[by_key['bn_folding'].held]})")
    ax.legend(fontsize=8)

    ax = axes[2]
    adapt = [s for s in by_key["bn_adaptation"].measured if s.mean is not None]
    ax.errorbar([s.mean for s in adapt], range(len(adapt)),
                xerr=[[s.mean - s.low if s.low is not None else 0 for s in adapt],
                      [s.high - s.mean if s.high is not None else 0 for s in adapt]],
                fmt="o", capsize=3, color=norm_color("batch"))
    ax.set_yticks(range(len(adapt)), labels=["mean over splits" if i == 0 else s.label.split(":")[0][4:]
                                             for i, s in enumerate(adapt)])
    ax.axvline(0, color="grey", linewidth=1)
    ax.set(xlabel="accuracy gain", title=f"3. BN adaptation ({held_mark[by_key['bn_adaptation'].held]})")

    ax = axes[3]
    eq = [by_key["rms_matches_layer"], by_key["dyt_matches_layer"]]
    for i, finding in enumerate(eq):
        s = finding.measured[0]
        if s.mean is None:
            continue
        err = [[s.mean - s.low], [s.high - s.mean]] if s.low is not None and s.high is not None else None
        ax.errorbar([s.mean], [i], xerr=err, fmt="o", capsize=4, color=norm_color(finding.key.split("_")[0]))
    ax.axvspan(-ACCURACY_MARGIN, ACCURACY_MARGIN, color="#2ca02c", alpha=0.12, label=f"±{ACCURACY_MARGIN:.0%}")
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks([0, 1], labels=[f"RMS - LN ({held_mark[eq[0].held]})", f"DyT - LN ({held_mark[eq[1].held]})"])
    ax.set(xlabel="ID accuracy difference", title="4-5. matches LayerNorm?", ylim=(-0.5, 1.5))
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle("normlab study: mean and 95 % interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt_stat(stat: MeanInterval) -> str:
    from normlab.report import fmt_interval

    if stat.mean is not None and abs(stat.mean) < 1e-3 and stat.mean != 0:
        return f"{stat.mean:.1e}"
    return fmt_interval(stat)


def _model_size(model: ModelConfig) -> str:
    """The model's size in words, for the study page."""
    if model.family == "vit":
        return (f"width {model.width}, {model.depth} blocks of {model.heads} heads, {model.patch_size}x"
                f"{model.patch_size} patches, {model.norm_position}-norm")
    widths = ", ".join(map(str, model.hidden if model.family == "mlp" else model.channels))
    return f"widths {widths}" + (f", {model.blocks} blocks a stage" if model.family == "resnet" else "")


def report_sections(model: ModelConfig, train: TrainConfig, summary: SweepSummary, findings: list[Finding],
                    figure: Path, seconds: float | None) -> list[Section]:
    """The one-page study report."""
    from normlab.report import Section, Table

    held = sum(f.held for f in findings)
    grid = summary.grid
    intro = Section("What was run", text=[
        f"{held} of {len(findings)} findings held on `{summary.data.source}` "
        f"({summary.data.rows} rows) with the {model.family} model ({_model_size(model)}), "
        f"{train.epochs} epoch{'s' if train.epochs != 1 else ''} of {train.optimizer.upper()} "
        f"at learning rate {train.lr:g} for batch "
        f"{max(grid.batch_sizes)} (scaled linearly for smaller batches).",
        f"Grid: {', '.join(grid.norms)} x batch {', '.join(map(str, grid.batch_sizes))} x "
        f"{len(grid.seeds)} seeds = {len(summary.points)} runs, nested under MLflow run "
        f"`{summary.parent_run_id}`" + (f"; {seconds / 60:.1f} minutes in all." if seconds else "."),
        "Intervals are 95 % Student-t intervals over seeds, paired by seed where two settings are compared. "
        "A finding is held only when its interval says so; a finding that does not hold at this scale is "
        "reported as such.",
    ])
    verdicts = Section("Findings", tables=[Table(
        ["#", "finding", "here", "held"],
        [[str(i + 1), f.title, f.verdict, "**held**" if f.held else "**not held**"]
         for i, f in enumerate(findings)])])
    details = Section("Tests and intervals", tables=[Table(
        ["#", "published", "test here", "measured: mean [95 % interval]"],
        [[str(i + 1), f.published, f.test,
          "; ".join(f"{s.label}: {_fmt_stat(s)} (n={s.n})" for s in f.measured)]
         for i, f in enumerate(findings)])])
    plot = Section("Plot", figures=[("the findings", figure)],
                   text=[f"The full comparison of the runs is the sweep report: `{_sweep_report(summary)[0]}`."])
    return [intro, verdicts, plot, details]


def _sweep_report(summary: SweepSummary) -> tuple[str, Path]:
    """The sweep report's HTML page and its folder (`normlab.sweep.finish` wrote them)."""
    if summary.report is None or summary.output is None:
        raise ValueError(f"sweep {summary.parent_run_id}: no report written yet (normlab.sweep.finish writes it)")
    return summary.report["html"], Path(summary.output)


def finish(
    model: ModelConfig, train: TrainConfig, store: TrackingStore, summary: SweepSummary, findings: list[Finding]
) -> StudyResult:
    """Write the study page (Markdown, HTML, JSON, plot) next to the sweep report and log it.

    Args:
        model: The study config's model section (the page says what was trained).
        train: Its training section.
        store: The tracking store of the study's parent run.
        summary: The study sweep's summary.
        findings: `check_findings` output.
    """
    from normlab.report import write_pages

    run_id = summary.parent_run_id
    out = _sweep_report(summary)[1] / "study"
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_findings(summary, findings, out / "findings.png")
    # The page's run time: from the parent run's start, which opened the study.
    seconds = time.time() - store.client.get_run(run_id).info.start_time / 1000.0
    files = write_pages("normlab study: which normalization findings held on this data",
                        report_sections(model, train, summary, findings, figure, seconds), out, "study")
    result = StudyResult(
        parent_run_id=summary.parent_run_id,
        tracking_uri=summary.tracking_uri,
        held=sum(f.held for f in findings),
        findings=findings,
        report={**{k: str(v) for k, v in files.items()}, "plot": str(figure)},
        sweep=summary,
    )
    (out / "study.json").write_text(json.dumps(result.record(), indent=1, default=str))
    for path in (*files.values(), figure, out / "study.json"):
        tracking.log_artifact(store, run_id, path, "study")
    tracking.log_metrics(store, run_id, {"study/held": float(result.held), "study/findings": float(len(findings))})
    tracking.set_tags(store, run_id, {f"normlab.study.{f.key}": "held" if f.held else "not held" for f in findings})
    return result
