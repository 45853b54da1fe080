"""The promotion section: gated metric keys are checked against the configured splits when loaded."""

from __future__ import annotations

import pytest

from normlab.config import load_config
from normlab.errors import ConfigError
from normlab.registry import registry_name


def test_defaults_and_registry_name(repo_root):
    cfg = load_config()
    assert cfg.promotion.enabled
    assert cfg.promotion.thresholds == {"id/test/accuracy": 0.9, "ood/mean/accuracy": 0.3}
    assert cfg.promotion.compare == ["id/test/accuracy", "ood/mean/accuracy", "ood/*/accuracy"]
    assert registry_name(cfg) == "normlab-digits"
    assert registry_name(load_config(None, ["model.registry_name=houses"])) == "houses"


def test_valid_keys_load(repo_root):
    cfg = load_config(None, ["promotion.thresholds={ood/noise/s2/f1_macro: 0.1, id/test/accuracy_ci_low: 0.9, "
                             "ood/*/recall_macro: 0.05, id/val/accuracy: 0.9}",
                             "promotion.compare=[ood/blur/precision_macro, ood/noise/s1/accuracy]"])
    assert len(cfg.promotion.thresholds) == 4


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("promotion.thresholds={id/test/acc: 0.9}", "'id/test/acc' is not a gated metric"),
        ("promotion.thresholds={id/test/ece: 0.1}", "'id/test/ece' is not a gated metric"),
        ("promotion.thresholds={ood/fog/accuracy: 0.1}", "'ood/fog/accuracy' names no OOD split"),
        ("promotion.thresholds={ood/noise/s5/accuracy: 0.1}", "split 'noise' has no severity s5"),
        ("promotion.compare=[id/val/accuracy]", "'id/val/accuracy' cannot be compared"),
        ("promotion.compare=[id/test/accuracy_ci_low]", "'id/test/accuracy_ci_low' cannot be compared"),
        ("promotion.tolerance=-0.1", "promotion.tolerance=-0.1"),
    ],
)
def test_bad_keys_fail_in_one_line(repo_root, override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value) and "\n" not in str(info.value)
