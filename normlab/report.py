"""Comparison reports of sweeps: CSV files, plots, and one Markdown and one HTML page.

A report is a list of sections (text, tables, figures) rendered twice: Markdown
that links its PNG files, and a self-contained HTML page with the same figures
embedded, so the page can be mailed or opened from the MLflow UI on its own.
"""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from normlab.norms import NORM_NAMES
from normlab.sweep_contracts import AggregateRow, MeanInterval, PointOutcome, SweepSummary

NORM_ORDER: tuple[str, ...] = NORM_NAMES

# Column titles of the summary metrics in tables.
METRIC_TITLES: dict[str, str] = {
    "id/test/accuracy": "ID test accuracy",
    "ood/mean/accuracy": "OOD accuracy (mean over OOD splits)",
    "ood/mean/accuracy_drop": "ID-to-OOD accuracy drop",
    "id/test/ece": "ID test calibration error (ECE)",
    "train/epochs_to_target": "epochs to the target val accuracy",
    "time/train_seconds": "training time (s)",
    "time/infer/eager/p50_ms": "batch-1 inference latency (ms, median)",
}


@dataclass
class Table:
    """A table of preformatted cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """A heading with paragraphs, tables and figures (caption, PNG path)."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


def fmt_interval(stat: MeanInterval, digits: int = 3) -> str:
    """``mean [low, high]``; the mean alone when there is no interval; an em dash when no value."""
    if stat.mean is None:
        return "—"
    if stat.low is None or stat.high is None:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} [{stat.low:.{digits}f}, {stat.high:.{digits}f}]"


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    """The report as Markdown; figures are linked relative to ``base``."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for para in section.text:
            lines += [para, ""]
        for table in section.tables:
            lines.append("| " + " | ".join(table.header) + " |")
            lines.append("|" + "|".join("---" for _ in table.header) + "|")
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
            lines.append("")
        for caption, path in section.figures:
            lines += [f"![{caption}]({Path(path).relative_to(base).as_posix()})", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} img{max-width:100%} code{background:#f3f3f3;padding:0 3px}
.held{color:#17692b;font-weight:bold} .not-held{color:#a31515;font-weight:bold}
"""


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page (figures embedded as PNG data)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for para in section.text:
            parts.append(f"<p>{_inline(para)}</p>")
        for table in section.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        for caption, path in section.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape text, keeping the two Markdown marks reports use: **bold** and `code`."""
    out, bold, code = [], False, False
    for i, chunk in enumerate(html.escape(text).split("**")):
        if i:
            bold = not bold
            out.append("<b>" if bold else "</b>")
        pieces = chunk.split("`")
        for j, piece in enumerate(pieces):
            if j:
                code = not code
                out.append("<code>" if code else "</code>")
            out.append(piece)
    return "".join(out)


def write_pages(title: str, sections: list[Section], out: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` into ``out``."""
    md, page = out / f"{stem}.md", out / f"{stem}.html"
    md.write_text(render_markdown(title, sections, out), encoding="utf-8")
    page.write_text(render_html(title, sections), encoding="utf-8")
    return {"markdown": md, "html": page}


# CSV ------------------------------------------------------------------------------------


def write_results_csv(results: list[PointOutcome], path: Path) -> Path:
    """One row per grid point: the point, its run, its status and every metric."""
    keys = sorted({k for r in results for k in r.metrics})
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["norm", "batch_size", "seed", "run_id", "status", "error", *keys])
        for r in results:
            writer.writerow([r.norm, r.batch_size, r.seed, r.run_id or "", r.status,
                             r.error if r.error is not None else "", *[r.metrics.get(k, "") for k in keys]])
    return path


def write_aggregate_csv(rows: list[AggregateRow], path: Path) -> Path:
    """One row per (norm, batch size): n, and mean/low/high of each summary metric."""
    metrics = list(rows[0].stats) if rows else []
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["norm", "batch_size", "points", "finished",
                         *[f"{m}:{s}" for m in metrics for s in ("mean", "low", "high")]])
        for row in rows:
            cells = [getattr(row.stats[m], s) for m in metrics for s in ("mean", "low", "high")]
            writer.writerow([row.norm, row.batch_size, row.points, row.finished,
                             *["" if c is None else c for c in cells]])
    return path


# Plots ----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def norm_color(norm: str) -> str:
    """One colour per norm, the same in every plot."""
    palette = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    return palette[NORM_ORDER.index(norm) % len(palette)] if norm in NORM_ORDER else "#000000"


def _cells(aggregate: list[AggregateRow], key: str) -> dict[str, list[tuple[int, MeanInterval]]]:
    by_norm: dict[str, list[tuple[int, MeanInterval]]] = {}
    for row in aggregate:
        if row.stats[key].mean is not None:
            by_norm.setdefault(row.norm, []).append((row.batch_size, row.stats[key]))
    return {n: sorted(v, key=lambda cell: cell[0]) for n, v in by_norm.items()}


def plot_accuracy_vs_batch(aggregate: list[AggregateRow], path: Path) -> Path:
    """ID and OOD accuracy against batch size, one line per norm, 95 % intervals as bars."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, key in zip(axes, ("id/test/accuracy", "ood/mean/accuracy"), strict=True):
        for norm, cells in _cells(aggregate, key).items():
            xs = [b for b, _ in cells]
            ys = [s.mean for _, s in cells]
            err = [[s.mean - s.low if s.low is not None else 0 for _, s in cells],
                   [s.high - s.mean if s.high is not None else 0 for _, s in cells]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=norm, color=norm_color(norm))
        ax.set_xscale("log", base=2)
        batch_sizes = sorted({row.batch_size for row in aggregate})
        ax.set_xticks(batch_sizes, labels=[str(b) for b in batch_sizes])
        ax.set(xlabel="training batch size", ylabel="accuracy", title=METRIC_TITLES[key])
        ax.grid(alpha=0.3)
    axes[0].legend(title="norm", fontsize=8)
    fig.suptitle("Accuracy against batch size (mean and 95 % interval over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_convergence(results: list[PointOutcome], path: Path) -> Path:
    """Validation accuracy per epoch, mean over seeds, one panel per batch size."""
    plt = _pyplot()
    finished = [r for r in results if r.finished and r.curve]
    batch_sizes = sorted({r.batch_size for r in finished}) or [0]
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(4.2 * len(batch_sizes), 3.8), squeeze=False)
    for ax, batch_size in zip(axes[0], batch_sizes, strict=True):
        norms = [n for n in NORM_ORDER if any(r.norm == n and r.batch_size == batch_size for r in finished)]
        for norm in norms:
            curves = [r.curve["val_accuracy"] for r in finished
                      if r.norm == norm and r.batch_size == batch_size]
            length = min(len(c) for c in curves)
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
            ax.plot(range(1, length + 1), mean, marker=".", label=norm, color=norm_color(norm))
        ax.set(xlabel="epoch", ylabel="val accuracy", title=f"batch size {batch_size}", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(title="norm", fontsize=8)
    fig.suptitle("Convergence: validation accuracy per epoch (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_time_latency(aggregate: list[AggregateRow], results: list[PointOutcome], path: Path) -> Path:
    """Training time per norm and batch size, and batch-1 inference latency per norm."""
    from normlab.inference import LATENCY_KEY
    from normlab.intervals import mean_interval

    plt = _pyplot()
    fig, (ax_time, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    norms = [n for n in NORM_ORDER if any(row.norm == n for row in aggregate)]
    batch_sizes = sorted({row.batch_size for row in aggregate})
    width = 0.8 / max(len(batch_sizes), 1)
    for j, batch_size in enumerate(batch_sizes):
        cells = {row.norm: row.stats["time/train_seconds"] for row in aggregate if row.batch_size == batch_size}
        xs = [i + j * width for i, n in enumerate(norms) if n in cells and cells[n].mean is not None]
        ys = [cells[n].mean for n in norms if n in cells and cells[n].mean is not None]
        ax_time.bar(xs, ys, width=width, label=f"batch {batch_size}")
    ax_time.set_xticks([i + width * (len(batch_sizes) - 1) / 2 for i in range(len(norms))], labels=norms)
    ax_time.set(ylabel="seconds", title="training time (mean over seeds)")
    ax_time.set_yscale("log")
    ax_time.legend(fontsize=8)
    stats = {n: mean_interval([r.metrics.get(LATENCY_KEY) for r in results if r.norm == n and r.finished])
             for n in norms}
    shown = [n for n in norms if stats[n].mean is not None]
    means = [stats[n].mean for n in shown]
    errs = [stats[n].high - stats[n].mean if stats[n].high is not None else 0 for n in shown]
    ax_lat.bar(shown, means, yerr=errs, capsize=3, color=[norm_color(n) for n in shown])
    ax_lat.set(ylabel="milliseconds", title="batch-1 inference latency (mean, 95 % interval)")
    for ax in (ax_time, ax_lat):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# The sweep report ----------------------------------------------------------------------


def metric_table(aggregate: list[AggregateRow], key: str, digits: int = 3) -> Table:
    """Rows: norms; columns: batch sizes; cells: mean [95 % interval] of ``key``."""
    batch_sizes = sorted({row.batch_size for row in aggregate})
    cells = {(row.norm, row.batch_size): row for row in aggregate}
    norms = [n for n in NORM_ORDER if any(row.norm == n for row in aggregate)]
    rows = []
    for norm in norms:
        line = [norm]
        for b in batch_sizes:
            row = cells.get((norm, b))
            line.append(fmt_interval(row.stats[key], digits) if row else "")
        rows.append(line)
    return Table(["norm", *[f"batch {b}" for b in batch_sizes]], rows)


def write_sweep_report(summary: SweepSummary, results: list[PointOutcome], out: Path) -> dict[str, Path]:
    """Write the sweep's CSVs, plots and Markdown/HTML pages into ``out``.

    Returns:
        Name to path of every file written (what gets logged to the parent run).
    """
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    aggregate = summary.aggregate
    files: dict[str, Path] = {
        "results_csv": write_results_csv(results, out / "results.csv"),
        "aggregate_csv": write_aggregate_csv(aggregate, out / "aggregate.csv"),
        "accuracy_plot": plot_accuracy_vs_batch(aggregate, plots / "accuracy_vs_batch_size.png"),
        "convergence_plot": plot_convergence(results, plots / "convergence.png"),
        "time_plot": plot_time_latency(aggregate, results, plots / "time_and_latency.png"),
    }
    grid, data = summary.grid, summary.data
    failed = [r for r in results if not r.finished]
    overview = Section("Sweep", text=[
        f"Parent run `{summary.parent_run_id}`; data `{data.source}` "
        f"({data.rows} rows, fingerprint `{data.fingerprint[:12]}`).",
        f"Grid: norms {', '.join(grid.norms)}; batch sizes {', '.join(map(str, grid.batch_sizes))}; "
        f"seeds {', '.join(map(str, grid.seeds))}; learning rate scaled with batch size: {grid.lr_scaling}.",
        f"{len(results) - len(failed)} of {len(results)} grid points finished. Cells give the mean over seeds "
        "and its 95 % Student-t interval in brackets.",
    ])
    if failed:
        overview.tables.append(Table(["grid point", "run", "error"], [
            [f"{r.norm} / batch {r.batch_size} / seed {r.seed}", r.run_id or "", r.error or ""]
            for r in failed]))
    sections = [
        overview,
        Section("Accuracy against batch size", figures=[("accuracy against batch size", files["accuracy_plot"])],
                tables=[metric_table(aggregate, "id/test/accuracy"), metric_table(aggregate, "ood/mean/accuracy")],
                text=["First table: ID test accuracy. Second: mean accuracy over the OOD splits."]),
        Section("Convergence", figures=[("convergence", files["convergence_plot"])],
                tables=[metric_table(aggregate, "train/epochs_to_target", 1)],
                text=["Table: epochs until the validation accuracy reached the target (only runs that reached it)."]),
        Section("Training time and inference latency", figures=[("time and latency", files["time_plot"])],
                tables=[metric_table(aggregate, "time/train_seconds", 2),
                        metric_table(aggregate, "time/infer/eager/p50_ms", 4)],
                text=["First table: training seconds. Second: batch-1 inference latency in milliseconds."]),
        Section("Files", text=["`results.csv`: every grid point and metric. `aggregate.csv`: the means and "
                               "intervals above. Child runs are nested under the parent run in the MLflow UI."]),
    ]
    files.update(write_pages("Normalization sweep", sections, out, "report"))
    return files
