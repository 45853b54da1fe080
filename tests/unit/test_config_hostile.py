"""Hostile configs: non-finite numbers, alias bombs, huge values in error messages."""

from __future__ import annotations

import pytest

from normlab.config import MAX_YAML_NODES, load_config, safe_yaml, short_repr
from normlab.errors import ConfigError


@pytest.mark.parametrize("override", [
    "train.lr=.inf", "train.lr=.nan", "train.weight_decay=.inf", "monitor.cooldown_minutes=.inf",
    "data.value_range=[0, .inf]", "promotion.thresholds={'id/test/accuracy': .nan}", "train.momentum=-.inf",
])
def test_non_finite_numbers_are_refused_in_one_line(override):
    key = override.split("=", 1)[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert "\n" not in message
    assert key.split(".")[-1] in message


def _bomb(levels: int, width: int = 10) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * width) + "]")
    lines.append(f"name: *l{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(30)
def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    text = _bomb(8)
    assert len(text) < 1200  # about a kilobyte that would expand to 10**8 values
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="aliases expand to more than") as err:
        load_config(path)
    assert len(str(err.value)) < 300


def test_a_recursive_alias_is_refused():
    with pytest.raises(Exception, match="contains it"):
        safe_yaml("a: &a [1, *a]\n")


def test_ordinary_anchors_still_load():
    raw = safe_yaml("base: &base {epochs: 2, lr: 0.1}\ntrain: *base\nhidden: &h [8, 8]\nother: *h\n")
    assert raw["train"] == {"epochs": 2, "lr": 0.1}
    assert raw["other"] == [8, 8]


def test_a_large_aliased_value_gives_a_bounded_one_line_error(tmp_path):
    # Below the expansion limit, but far too big to print: the message shows a short prefix only.
    width = int(MAX_YAML_NODES ** 0.5) // 2
    path = tmp_path / "big.yaml"
    path.write_text(f"row: &r [{', '.join(['1234567890'] * width)}]\n"
                    f"model:\n  hidden: [{', '.join(['*r'] * width)}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "model.hidden" in message
    assert "\n" not in message
    assert len(message) < 400


def test_short_repr_is_bounded_on_shared_and_deep_values():
    row = ["x" * 1000] * 1000
    nested = [row] * 1000
    assert len(short_repr(nested)) <= 80
    assert short_repr("abc") == "'abc'"
