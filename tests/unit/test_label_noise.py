"""The label-noise check transfers from the profiled history to batches of any size.

The kNN disagreement of a batch scored within itself depends on its size, and
a noisy-label task disagrees a lot by nature, so a threshold fitted on one
file used to block clean batches of another size. Now a batch is scored
against a reference (the training rows), the threshold is fitted the way
`normlab init` does (`gate_settings` -> `fit_label_noise`) and the decision is
a one-sided binomial test.

Measured on weather_frame(846, seed=0) as history (fitted max_share 0.442;
leave-one-out 0.422, held-out 0.42), 5 unseen batches per size, scored
against the history; share (p-value) range over the 5 batches:

    rows   clean share     clean p        30 % flipped share   flipped p
    100    0.34..0.45      0.47..0.99     0.53..0.63           0.048..0.0001
    250    0.364..0.436    0.60..0.99     0.532..0.612         0.0026..<1e-6
    1000   0.403..0.435    0.68..0.99     0.546..0.607         <1e-6
    5000   0.401..0.412    >0.9999        0.564..0.578         <1e-6
    history itself, no reference (leave-one-out): clean 0.422 (p 0.89), flipped 0.700 (p < 1e-6)

100 rows is near the limit of what a 5-NN vote can tell on a task this noisy:
over 200 fresh batches of 100 rows, 1.5 % of clean ones were blocked and 88 %
of the 30 %-flipped ones; at 250 rows, 0 % and 100 %.

Digits (846-row history, fitted max_share 0.066): clean batches 0.03..0.056,
flipped 0.31..0.34 (p < 1e-6); history leave-one-out clean 0.043, flipped 0.459.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normlab import label_noise
from normlab.data.sources import load_builtin
from normlab.data.weather import FEATURES, LABEL, flip_labels, weather_frame
from normlab.profiling import fit_label_noise, gate_settings

WEATHER_FEATURES = list(FEATURES)
SIZES = (100, 250, 1000, 5000)
SEEDS = range(5)


def _check(frame, features, label, max_share, reference=None):
    return label_noise.check_label_noise(frame, features, label, k=5, max_share=max_share, sample_rows=5000, seed=0,
                                reference=reference).result


@pytest.fixture(scope="module")
def weather():
    history = weather_frame(846, seed=0)
    return history, gate_settings(history, LABEL).label_noise.max_share


def test_the_fitted_threshold_sits_between_clean_and_flipped_weather(weather):
    history, max_share = weather
    fit = fit_label_noise(history, WEATHER_FEATURES, LABEL, k=5, sample_rows=5000)
    assert fit is not None and fit.max_share == max_share
    assert max(fit.leave_one_out, fit.held_out) < max_share < 0.5
    assert 0.3 < fit.leave_one_out < 0.5  # a noisy-label task


@pytest.mark.parametrize("size", SIZES)
def test_unseen_clean_weather_batches_pass_and_flipped_ones_block(weather, size):
    history, max_share = weather
    for seed in SEEDS:
        batch = weather_frame(size, seed=1000 * size + seed)
        clean = _check(batch, WEATHER_FEATURES, LABEL, max_share, reference=history)
        assert clean.success, (size, seed, clean.observed, clean.details)
        assert clean.details["reference_used"] and clean.details["scored_rows"] == size
        assert clean.details["reference_rows"] == len(history)
        flipped = _check(flip_labels(batch, 0.3, seed=seed), WEATHER_FEATURES, LABEL, max_share, reference=history)
        assert not flipped.success, (size, seed, flipped.observed, flipped.details)
        assert flipped.details["p_value"] < 0.05 and flipped.observed > clean.observed


def test_the_share_against_a_reference_does_not_depend_on_batch_size(weather):
    history, _ = weather
    means = [np.mean([_check(weather_frame(size, seed=1000 * size + s), WEATHER_FEATURES, LABEL, 1.0,
                             reference=history).observed for s in SEEDS]) for size in SIZES]
    assert max(means) - min(means) < 0.04


def test_the_weather_history_passes_its_own_threshold_and_flipped_history_blocks(weather):
    history, max_share = weather
    own = _check(history, WEATHER_FEATURES, LABEL, max_share)
    assert own.success and not own.details["reference_used"] and own.details["scored_rows"] == len(history)
    flipped = _check(flip_labels(history, 0.3, seed=0), WEATHER_FEATURES, LABEL, max_share)
    assert not flipped.success and flipped.details["p_value"] < 0.05


def _flip_digits(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    rows = rng.choice(len(out), size=round(share * len(out)), replace=False)
    out.loc[rows, "label"] = (out.loc[rows, "label"] + rng.integers(1, 10, rows.size)) % 10
    return out


def test_digits_still_pass_clean_and_block_flipped():
    digits = load_builtin("digits")
    features = [c for c in digits.columns if c != "label"]
    order = np.random.default_rng(0).permutation(len(digits))
    history = digits.iloc[order[:846]].reset_index(drop=True)
    unseen = digits.iloc[order[846:]].reset_index(drop=True)
    max_share = gate_settings(history, "label").label_noise.max_share
    assert max_share < 0.15
    for size in (100, 250, len(unseen)):
        for seed in SEEDS if size < len(unseen) else [0]:
            picked = np.sort(np.random.default_rng(seed).choice(len(unseen), size, replace=False))
            batch = unseen.iloc[picked].reset_index(drop=True)
            assert _check(batch, features, "label", max_share, reference=history).success
            assert not _check(_flip_digits(batch, 0.3, seed), features, "label", max_share, reference=history).success
    assert _check(history, features, "label", max_share).success
    assert not _check(_flip_digits(history, 0.3, 0), features, "label", max_share).success


def test_a_small_batch_needs_stronger_evidence_than_a_large_one():
    assert label_noise.exceeds_share(6, 10, 0.4) > 0.05  # 60 % of 10 rows: could be chance
    assert label_noise.exceeds_share(600, 1000, 0.4) < 1e-6  # 60 % of 1000: not chance
    assert label_noise.exceeds_share(0, 10, 0.0) == 1.0 and label_noise.exceeds_share(1, 10, 0.0) == 0.0


def test_labels_are_coded_jointly_and_a_label_unknown_to_the_reference_disagrees():
    reference = pd.DataFrame({"x": [0.0, 0.1, 0.2, 10.0, 10.1, 10.2], "y": ["a", "a", "a", "b", "b", "b"]})
    # The batch's own factorization would code "b" first: the codes must still match the reference's.
    batch = pd.DataFrame({"x": [10.05, 0.05, 0.15, 5.0], "y": ["b", "a", "b", "c"]})
    result = label_noise.check_label_noise(batch, ["x"], "y", k=3, max_share=0.0, sample_rows=100, seed=0,
                                  reference=reference)
    assert result.rows.tolist() == [2, 3]
    assert result.result.observed == 0.5 and not result.result.success
    assert result.result.details["reference_used"] and result.result.details["disagreeing_rows"] == 2


def test_the_reference_is_sampled_and_a_batch_row_may_be_its_own_neighbour():
    history = weather_frame(400, seed=3)
    capped = label_noise.check_label_noise(history, WEATHER_FEATURES, LABEL, k=1, max_share=1.0, sample_rows=150, seed=0,
                                  reference=history).result
    assert capped.details["reference_rows"] == 150 and capped.details["scored_rows"] == 150
    whole = label_noise.check_label_noise(history, WEATHER_FEATURES, LABEL, k=1, max_share=0.0, sample_rows=400, seed=0,
                                 reference=history).result
    assert whole.observed == 0.0 and whole.success  # each row finds itself (or an identical row) first


def test_a_reference_without_the_label_falls_back_to_the_batch_itself():
    batch = weather_frame(200, seed=4)
    result = _check(batch, WEATHER_FEATURES, LABEL, 1.0, reference=batch.drop(columns=[LABEL]))
    assert not result.details["reference_used"] and "reference_skipped" in result.details


def test_knn_disagreement_against_a_reference():
    reference = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    reference_labels = np.array([0, 0, 0, 1, 1, 1])
    x = np.array([[0.05], [10.0], [0.1]])
    y = np.array([0, 0, 1])
    assert label_noise.knn_disagreement(x, y, 3, reference, reference_labels).tolist() == [False, True, True]
    with pytest.raises(ValueError):
        label_noise.knn_disagreement(x, y, 3, reference)
