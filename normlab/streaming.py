"""Batches read from memory-mapped arrays: the training loop's path for splits over ``data.memory_budget_mb``.

`normlab.splitting.prepare_splits` writes splits larger than the budget as
``.npy`` files and `normlab.splitting.load_prepared` maps them; the training
loop (`normlab.training.train_model`) then reads each batch from disk through
a `torch.utils.data.DataLoader` instead of holding the arrays as tensors.

`EpochBatches` draws the very index batches the in-memory loop draws (one
``torch.randperm`` of the loop's generator per epoch, sliced into batches, a
trailing batch smaller than ``min_batch`` skipped), so a streamed run does the
same arithmetic as an in-memory one and resumes from the same checkpointed
generator state. Each DataLoader item is one whole batch: `MemmapRows` reads
it with one fancy index of the map (reading the rows in file order and putting
them back in batch order was about 10x slower on page-cached data).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# Loader processes when streaming to a CUDA device: reading batch k+1 overlaps the step on batch k.
CUDA_WORKERS = 2


def _reopenable(array: np.ndarray) -> tuple | None:
    """How to map ``array`` again in another process, or None when it is not a whole ``.npy`` map."""
    # A view into a map (a slice) reports its parent's file and offset: only the map itself can be reopened.
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename:
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        return (array.filename, array.dtype.str, array.offset, array.shape, order)
    return None


def _reopen(spec: tuple) -> np.memmap:
    filename, dtype, offset, shape, order = spec
    return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape, order=order)


class MemmapRows(Dataset):
    """Rows of (features, labels) arrays, typically memory-mapped; an item is one whole batch.

    An index is a 1-D tensor of row positions (a training batch, from
    `EpochBatches`) or a slice (a validation chunk); the item is the float32
    features and int64 labels of those rows, in that order, as tensors. A
    loader worker in another process maps the files again instead of
    receiving a pickled copy of the data.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            raise ValueError(f"features have {len(x)} rows, labels {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, slice):
            # A slice of a map is a view of the file: copy it into memory torch can own.
            x, y = np.array(self.x[index], dtype=np.float32), np.array(self.y[index], dtype=np.int64)
        else:
            rows = np.asarray(index)
            # A fancy index reads the rows into a new array (a copy, in the batch's order).
            x, y = self.x[rows].astype(np.float32, copy=False), self.y[rows].astype(np.int64, copy=False)
        return torch.from_numpy(x), torch.from_numpy(y)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("x", "y"):
            spec = _reopenable(state[name])
            if spec is not None:
                state[name] = ("reopen", spec)
        return state

    def __setstate__(self, state: dict) -> None:
        for name in ("x", "y"):
            value = state[name]
            if isinstance(value, tuple) and value and value[0] == "reopen":
                state[name] = _reopen(value[1])
        self.__dict__.update(state)


class EpochBatches(Sampler[torch.Tensor]):
    """The index batches of one epoch per iteration, drawn as `normlab.training.train_model` draws them.

    Each iteration takes one ``torch.randperm(n, generator=generator)`` and
    yields its slices of ``batch_size``, skipping a trailing one shorter than
    ``min_batch`` (2 for BatchNorm models). The generator is the training
    loop's own: its checkpointed state resumes the order. ``device``: where the
    permutation lives (the in-memory loop indexes arrays kept on the device).
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, *, min_batch: int = 1,
                 device: torch.device | None = None) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.min_batch, self.device = min_batch, device

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.min_batch else 0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator function: the permutation is drawn at the first batch, not when an iterator is made. A
        # DataLoader with workers makes (and drops) one extra iterator per epoch; each must not cost a draw.
        order = torch.randperm(self.n, generator=self.generator)
        if self.device is not None:
            order = order.to(self.device)
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) >= self.min_batch:
                yield idx


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` rows covering ``n`` rows (the validation pass's chunks)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def loader_workers(device: torch.device) -> int:
    """Default loader processes: none on the CPU (the step and the read share its cores), a few for CUDA."""
    return CUDA_WORKERS if device.type == "cuda" else 0


def batch_loader(dataset: MemmapRows, sampler: Sampler | list[slice], *, device: torch.device, seed: int,
                 num_workers: int | None = None) -> DataLoader:
    """A DataLoader of whole batches: one ``dataset[index]`` per index ``sampler`` yields, in its order.

    Pinned memory on CUDA (the host-to-device copy can then run asynchronously).
    Workers persist across epochs (no process start per epoch). The loader's
    own generator, seeded with ``seed``, draws its worker seed each epoch:
    without it the DataLoader draws from torch's global generator, which
    dropout also draws from, and the streamed run would differ.
    """
    workers = loader_workers(device) if num_workers is None else num_workers
    return DataLoader(
        dataset, batch_size=None, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
