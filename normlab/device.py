"""Where training runs and in which precision: ``train.device`` and ``train.precision``, resolved once.

`resolve_device` turns the configured name into a `torch.device` and
`resolve_precision` says how the forward pass and loss run on it (autocast's
dtype, and whether gradients are scaled: fp16 only). A device torch cannot see,
or a precision it cannot autocast to there, is refused with a one-line
`ConfigError` (exit 2) instead of falling back to something else in silence:
a run that asked for bf16 and trained in fp32 would record the wrong thing.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from normlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The device ``train.device`` names; auto: cuda when torch sees one, else cpu (never mps)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise ConfigError(f"train.device is 'cuda' but torch sees no CUDA device "
                              f"(torch {torch.__version__}, {built}); use cpu or auto")
        return torch.device("cuda")
    if name == "mps":
        if not torch.backends.mps.is_available():
            built = "built with MPS" if torch.backends.mps.is_built() else "built without MPS"
            raise ConfigError(f"train.device is 'mps' but torch sees no MPS device "
                              f"(torch {torch.__version__}, {built}); use cpu or auto")
        return torch.device("mps")
    raise ConfigError(f"train.device {name!r} is not one of {', '.join(DEVICES)}")


@dataclass(frozen=True)
class Precision:
    """How a step runs: autocast to ``dtype`` (None: plain fp32, no autocast), gradients scaled when ``scaled``."""

    name: str
    dtype: torch.dtype | None
    scaled: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context the forward pass and loss run in (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A fresh gradient scaler for fp16; None otherwise."""
        return torch.amp.GradScaler(device.type) if self.scaled else None


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``train.precision`` on ``device``; `ConfigError` when torch cannot run it there as asked."""
    if name not in _DTYPES:
        raise ConfigError(f"train.precision {name!r} is not one of {', '.join(PRECISIONS)}")
    dtype = _DTYPES[name]
    precision = Precision(name=name, dtype=dtype, scaled=name == "fp16")
    if dtype is None:
        return precision
    where = f"{device.type} (torch {torch.__version__})"
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision is 'bf16' but this CUDA device has no bf16 support; use fp16 or fp32")
    if not _autocasts(device.type, dtype):
        raise ConfigError(f"train.precision is {name!r} but torch cannot autocast to {dtype} on {where}; use fp32")
    if precision.scaled and not _scales(device.type):
        raise ConfigError(f"train.precision is {name!r} but torch has no gradient scaler on {where}; use bf16 or fp32")
    return precision


def _autocasts(device_type: str, dtype: torch.dtype) -> bool:
    """Whether autocast to ``dtype`` is really on inside its context (torch disables it, with a warning, when not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.autocast(device_type, dtype=dtype):
                return torch.is_autocast_enabled(device_type)
        except (RuntimeError, ValueError):
            return False


def _scales(device_type: str) -> bool:
    """Whether a gradient scaler works on ``device_type`` (torch disables it, with a warning, when not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.amp.GradScaler(device_type).is_enabled()
        except (RuntimeError, ValueError):
            return False
