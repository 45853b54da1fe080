"""The OOD suite in the config: severity groups, the corruption_suite shorthand, one-line errors."""

from __future__ import annotations

import pytest

from normlab.config import load_config, validate_config
from normlab.data.shifts import CORRUPTIONS
from normlab.errors import ConfigError


def _ood(*entries: str) -> list[str]:
    return [f"splits.ood=[{', '.join(entries)}]"]


def test_default_config_is_the_whole_suite_at_three_severities(repo_root):
    cfg = load_config()
    assert len(cfg.splits.ood) == 10
    assert {s.corruption for s in cfg.splits.ood} == set(CORRUPTIONS)
    assert all(s.severity == [1, 2, 3] for s in cfg.splits.ood)
    noise = next(s for s in cfg.splits.ood if s.name == "noise")
    assert noise.leaves() == [("noise/s1", 1), ("noise/s2", 2), ("noise/s3", 3)]


def test_the_suite_shorthand_expands_when_loaded(repo_root):
    cfg = load_config(None, _ood("{kind: corruption_suite, corruptions: [blur, contrast], severity: [2, 4]}",
                                 "{name: noise, kind: corruption, corruption: gaussian_noise}"))
    assert [(s.name, s.corruption, s.severity) for s in cfg.splits.ood] == [
        ("blur", "blur", [2, 4]), ("contrast", "contrast", [2, 4]), ("noise", "gaussian_noise", 3)]
    every = load_config(None, _ood("{kind: corruption_suite}"))
    assert [s.name for s in every.splits.ood] == list(CORRUPTIONS)
    # The resolved config a rerun reads has no shorthand left.
    assert validate_config(every.model_dump(mode="json")).splits.ood == every.splits.ood


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{kind: corruption_suite, corruptions: [fog]}", "unknown corruption 'fog'"),
        ("{kind: corruption_suite, severity: [6]}", "splits.ood[0].corruption_suite.severity[0]=6"),
        ("{name: x, kind: corruption, corruption: blur, severity: [1, 1]}", "list each severity once"),
        ("{name: x, kind: corruption, corruption: blur, severity: []}", "list each severity once"),
        ("{name: mean, kind: corruption, corruption: blur}", "OOD split name 'mean'"),
        ("{name: a/b, kind: corruption, corruption: blur}", "OOD split name 'a/b'"),
    ],
)
def test_bad_suite_entries_fail_in_one_line(repo_root, entry, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, _ood(entry))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_suite_names_clash_with_named_splits(repo_root):
    with pytest.raises(ConfigError, match="repeated: blur"):
        load_config(None, _ood("{name: blur, kind: corruption, corruption: blur}", "{kind: corruption_suite}"))
