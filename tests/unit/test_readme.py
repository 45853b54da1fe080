"""README figures come from results files the measuring command wrote: checked here, without rerunning."""

from __future__ import annotations

import json
import re

from bench import evaluation_table
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
EVALUATION = json.loads(evaluation_table.RESULTS.read_text())
DEFAULT_RUN = json.loads((REPO / "bench" / "results_default_run.json").read_text())


def test_the_evaluation_block_is_what_the_results_file_renders():
    block = re.search(re.escape(evaluation_table.START) + ".*?" + re.escape(evaluation_table.END), README, re.S)
    assert block is not None
    assert block.group(0) == evaluation_table.render(EVALUATION)


def test_the_evaluation_runs_and_the_default_run_agree():
    """Two measurements of the same default run (different commands, maybe commits) give the same numbers."""
    batch = EVALUATION["runs"]["batch"]
    for key, value in DEFAULT_RUN["metrics"].items():
        assert batch[key] == value, key


def tour_rows() -> dict[str, list[str]]:
    """The per-split table of the README's tour (``normlab run``'s real output)."""
    tour = README[README.index("## A tour"):README.index("## Change the norm")]
    rows = {}
    for line in tour.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if line.startswith("│ ") and len(cells) == 9:
            rows[cells[0]] = cells[2:]
    return rows


def test_the_tour_prints_the_default_runs_metrics():
    metrics = DEFAULT_RUN["metrics"]
    rows = tour_rows()
    assert "id/test" in rows and "ood/mean" in rows and len(rows) == 12
    names = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "ece", "nll", "accuracy_drop")
    for split, cells in rows.items():
        for name, cell in zip(names, cells, strict=True):
            key = f"{split}/{name}"
            assert cell == (f"{metrics[key]:.3f}" if key in metrics else ""), key


def test_the_tour_prints_the_promotion_block_once():
    tour = README[README.index("## A tour"):README.index("## Change the norm")]
    assert tour.count("gate passed:") == 1


def test_the_layernorm_contrast_claim_is_measured():
    layer = EVALUATION["runs"]["layer"]
    batch = EVALUATION["runs"]["batch"]
    claim = re.search(r"`--set model.norm=layer` keeps ([0-9.]+) on contrast-reduced digits where\s+"
                      r"BatchNorm falls to ([0-9.]+)", README)
    assert claim is not None
    assert claim.group(1) == f"{layer['ood/contrast/accuracy']:.3f}"
    assert claim.group(2) == f"{batch['ood/contrast/accuracy']:.3f}"


def _block(start: str, end: str) -> str:
    found = re.search(re.escape(start) + ".*?" + re.escape(end), README, re.S)
    assert found is not None, start
    return found.group(0)


def test_the_sweep_and_study_blocks_are_what_their_summaries_render():
    from bench import sweep_tables

    assert _block(*sweep_tables.SWEEP_BLOCK) == sweep_tables.render_sweep(json.loads(sweep_tables.SWEEP.read_text()))
    assert _block(*sweep_tables.STUDY_BLOCK) == sweep_tables.render_study(json.loads(sweep_tables.STUDY.read_text()))


def test_the_reproduction_count_is_what_its_summary_renders():
    from bench import reproduce_default

    summary = json.loads(reproduce_default.RESULTS.read_text())
    assert _block(*reproduce_default.BLOCK) == reproduce_default.render(summary)


def test_the_gate_table_is_what_the_gate_bench_wrote():
    from bench import gate

    results = json.loads(gate.RESULTS.read_text())
    assert _block(*gate.README_BLOCK) == gate.render_readme(results["results"], results["load_average"])
    assert all(r["gx_s"] is not None for r in results["results"]), "the Great Expectations baseline is recorded"
