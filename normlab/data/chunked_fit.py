"""The encoders fitted on training rows that arrive in chunks: to the bit, what `FeatureEncoder.fit` and `LabelEncoder.fit` give on all rows at once.

A numeric column's mean and std are `normlab.data.encoding.mean_std`'s:
``np.nanmean`` and ``np.nanstd``, whose float64 sums numpy adds pairwise.
Summing chunk by chunk in another order would move the last bits (and so,
now and then, an encoded float32), so `PairwiseSums` rebuilds numpy's own
sum from pieces. `FeatureFit` takes up to three passes over the same chunks:

1. counts, largest magnitudes and categories (and the sum of an integer or
   boolean column: integers below 2**53 add exactly in any order);
2. the sums of the other numeric columns (and of the pooled values), only
   when there are such columns;
3. the squared deviations from the means, for the stds (none when
   ``scale=False``).

`LabelFit` counts the label column's rows and missing values and keeps its
distinct values, all `LabelEncoder.fit` reads of it. `encode` is
`FeatureEncoder.transform` with the numeric columns taken as one block: the
same array, without pandas calls per column, which dominate a chunk of a few
thousand rows of thousands of pixel columns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import pandas as pd

from normlab.data.encoding import (
    _SAFE_PEAK,
    FLOAT32_MAX,
    CategoricalColumn,
    FeatureEncoder,
    LabelEncoder,
    NumericColumn,
    _category_text,
    _is_categorical,
    _is_numeric,
    _require_columns,
    check_feature_names,
    no_finite_values,
    numeric_column,
    pooled,
    unencodable,
)

# numpy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src): an array longer than this is
# summed as two halves, the first a multiple of _UNROLL long; one this long or shorter in _UNROLL lanes.
_BLOCK = 128
_UNROLL = 8
# Integers add exactly in float64 while every partial sum stays below this.
_EXACT = 2.0**53


class PairwiseSums:
    """``np.sum`` of each of ``width`` float64 streams of ``n`` values, the values fed a piece at a time.

    ``np.sum`` of a contiguous array halves it recursively (the first half a
    multiple of 8 long) down to blocks of at most 128 values. Any node of that
    tree whose values have all arrived is summed with ``np.sum`` itself (its
    result for those values is that node's); the nodes are then added up the
    tree as numpy adds them. At most one unfinished block (under 128 values a
    stream) is held between pieces.
    """

    def __init__(self, n: int, width: int = 1) -> None:
        self.n, self.width = n, width
        self._front: deque[tuple[int, int]] = deque([(0, n)] if n else [])  # nodes still to sum, in order
        self._done: dict[tuple[int, int], np.ndarray] = {}
        self._held = np.zeros((width, 0))
        self._held_from = 0  # stream position of the first held value

    def add(self, values: np.ndarray) -> None:
        """The next values of every stream: shape (width, m), or (m,) for one stream."""
        values = np.asarray(values, dtype=np.float64).reshape(self.width, -1)
        held = np.concatenate([self._held, values], axis=1) if self._held.shape[1] else values
        arrived = self._held_from + held.shape[1]
        if arrived > self.n:
            raise ValueError(f"PairwiseSums: {arrived} values added to streams of {self.n}")
        while self._front:
            start, size = self._front[0]
            if start + size <= arrived:
                at = start - self._held_from
                self._done[(start, size)] = np.sum(held[:, at : at + size], axis=1)
                self._front.popleft()
            elif start < arrived and size > _BLOCK:
                self._front.popleft()
                half = _half(size)
                self._front.extendleft([(start + half, size - half), (start, half)])
            else:
                break
        keep = self._front[0][0] if self._front else arrived
        self._held = held[:, keep - self._held_from :].copy()  # a copy: the piece itself is not kept
        self._held_from = keep

    def total(self) -> np.ndarray:
        """The ``width`` sums, once every stream's ``n`` values were added."""
        if self._front:
            raise ValueError(f"PairwiseSums: {self._front[0][0]} of {self.n} values added")
        # np.sum starts from the identity, 0.0 (so a sum of -0.0 is 0.0).
        return 0.0 + self._node(0, self.n) if self.n else np.zeros(self.width)

    def _node(self, start: int, size: int) -> np.ndarray:
        if (start, size) in self._done:
            return self._done[(start, size)]
        half = _half(size)
        return self._node(start, half) + self._node(start + half, size - half)


def _half(size: int) -> int:
    half = size // 2
    return half - half % _UNROLL


class FeatureFit:
    """`FeatureEncoder.fit` of training rows given in chunks, over the passes `next_pass` asks for.

    Feed every chunk of training rows to `observe`, then call `next_pass`;
    while it returns True, feed the same chunks, in the same order, again.
    `encoder` then gives the fitted encoder.

    Args:
        empty: A frame with the data's columns and dtypes (no rows needed): the
            features' kinds are read from it, so an unencodable one fails here.
        features: Column names to encode, in output order.
        scale: As in `FeatureEncoder.fit`.
    """

    def __init__(self, empty: pd.DataFrame, features: Sequence[str], *, scale: bool | str = True) -> None:
        self.names = check_feature_names(features)
        _require_columns(empty, self.names)
        for name in self.names:
            dtype = empty[name].dtype
            if not (_is_numeric(dtype) or _is_categorical(dtype)):
                raise unencodable(name, dtype)
        self.scale = scale
        self.numeric = [n for n in self.names if _is_numeric(empty[n].dtype)]
        self._integral = np.array([pd.api.types.is_integer_dtype(empty[n].dtype)
                                   or pd.api.types.is_bool_dtype(empty[n].dtype) for n in self.numeric], dtype=bool)
        self._categories: dict[str, set[str]] = {n: set() for n in self.names if n not in self.numeric}
        k = len(self.numeric)
        self.rows, self._count, self._peak, self._sum = 0, np.zeros(k, np.int64), np.zeros(k), np.zeros(k)
        self._pass = 1
        self._sums: _Streams | None = None
        self._squares: _Streams | None = None
        # Per column and pooled: the scale (the largest magnitude past _SAFE_PEAK, else 1) and the scaled mean.
        self._scale, self._pool_scale = np.ones(k), 1.0
        self._mean, self._pool_mean = np.zeros(k), 0.0
        self._pooled = scale == "global" and k > 0

    def observe(self, train: pd.DataFrame) -> None:
        """The next chunk of training rows."""
        if self._pass == 1:
            self.rows += len(train)
            for name, seen in self._categories.items():
                seen.update(pd.unique(_category_text(train[name])))
        if not self.numeric or len(train) == 0:
            return
        block = train[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        if self._pass == 1:
            finite = np.isfinite(block)
            self._count += finite.sum(axis=0)
            self._peak = np.maximum(self._peak, np.abs(np.where(finite, block, 0.0)).max(axis=0))
            self._sum[self._integral] += np.where(finite, block, 0.0)[:, self._integral].sum(axis=0)
        elif self._pass == 2 and self._sums is not None:
            self._sums.add(block)
        elif self._pass == 3 and self._squares is not None:
            self._squares.add(block)

    def next_pass(self) -> bool:
        """End a pass over the chunks; True when another one is needed.

        Raises:
            DataSourceError: After the first pass: a numeric feature has no finite value.
        """
        if self._pass == 1:
            for name, count in zip(self.numeric, self._count, strict=True):
                if count == 0:
                    raise no_finite_values(name)
            self._scale = np.where(self._peak >= _SAFE_PEAK, self._peak, 1.0)
            self._pool_scale = float(self._peak.max()) if self.numeric and self._peak.max() >= _SAFE_PEAK else 1.0
            exact = self._integral & (self._peak * self._count < _EXACT)
            pool_exact = bool(exact.all()) and float(self._peak.max(initial=0.0)) * self._count.sum() < _EXACT
            sums = _Streams(self._count, self.rows, self._scale, self._pool_scale, columns=~exact,
                            pooled=self._pooled and not pool_exact)
            self._mean = np.where(exact, self._sum / np.maximum(self._count, 1), 0.0)
            self._pool_mean = float(self._sum.sum() / self._count.sum()) if pool_exact and self._pooled else 0.0
            self._pass, self._sums = 2, sums
            if sums.any:
                return True
        if self._pass == 2:
            self._finish_sums()
            columns = np.full(len(self.numeric), self.scale is True)
            self._squares = _Streams(self._count, self.rows, self._scale, self._pool_scale, columns=columns,
                                     pooled=self._pooled, means=(self._mean, self._pool_mean))
            self._pass = 3
            if self._squares.any:
                return True
        self._pass = 4
        return False

    def _finish_sums(self) -> None:
        if self._sums is None or not self._sums.any:
            return
        column_sums, pool_sum = self._sums.totals()
        chosen = self._sums.columns
        self._mean[chosen] = column_sums[chosen] / self._count[chosen]
        if self._sums.pooled:
            self._pool_mean = pool_sum / float(self._count.sum())

    def encoder(self) -> FeatureEncoder:
        """The fitted encoder, after the last pass."""
        if self._pass != 4:
            raise ValueError("FeatureFit.encoder: the passes are not finished (call next_pass until it is False)")
        stds, pool_std = (np.ones(len(self.numeric)), 1.0)
        if self._squares is not None and self._squares.any:
            squares, pool_squares = self._squares.totals()
            stds = np.sqrt(squares / np.maximum(self._count, 1)) * self._scale
            pool_std = float(np.sqrt(pool_squares / self._count.sum())) * self._pool_scale
        numeric = dict(zip(self.numeric, zip(self._mean * self._scale, stds, strict=True), strict=True))
        specs: list[NumericColumn | CategoricalColumn] = []
        for name in self.names:
            if name in numeric:
                mean, std = numeric[name]
                specs.append(numeric_column(name, float(mean), float(std), scale=self.scale))
            else:
                specs.append(CategoricalColumn(name=name, categories=tuple(sorted(self._categories[name]))))
        if self._pooled:
            specs = pooled(specs, self._pool_mean * self._pool_scale, pool_std)
        return FeatureEncoder(columns=tuple(specs), scale=self.scale if self.scale == "global" else bool(self.scale))


class _Streams:
    """The `PairwiseSums` of one pass: per chosen numeric column (of its finite values) and of the pooled ones.

    A column whose every training value is finite shares one multi-stream sum
    with the others like it; any other column gets its own. With ``means`` the
    streams are the squared deviations of the scaled values from them (the
    std pass); without, the scaled values themselves (the mean pass).
    """

    def __init__(self, count: np.ndarray, rows: int, scale: np.ndarray, pool_scale: float, *, columns: np.ndarray,
                 pooled: bool, means: tuple[np.ndarray, float] | None = None) -> None:
        self.columns, self.pooled, self.means = columns, pooled, means
        self.scale, self.pool_scale = scale, pool_scale
        self.dense = np.flatnonzero(columns & (count == rows))
        self.sparse = np.flatnonzero(columns & (count < rows))
        self._dense = PairwiseSums(rows, len(self.dense)) if self.dense.size else None
        self._sparse = {int(j): PairwiseSums(int(count[j])) for j in self.sparse}
        self._pool = PairwiseSums(int(count.sum())) if pooled else None
        self.any = bool(columns.any()) or pooled

    def _values(self, values: np.ndarray, columns: np.ndarray | int | None) -> np.ndarray:
        """Scaled values of those columns (None: pooled), or their squared deviations in the std pass.

        ``values`` is a copy this call may overwrite: numpy's own steps (divide, subtract, multiply) in place.
        """
        scale = self.pool_scale if columns is None else self.scale[columns]
        np.divide(values, scale, out=values)
        if self.means is not None:
            np.subtract(values, self.means[1] if columns is None else self.means[0][columns], out=values)
            np.multiply(values, values, out=values)
        return values

    def add(self, block: np.ndarray) -> None:
        # Each stream gets a copy of its values (fancy and boolean indexing copy): ``block`` stays as it is.
        if self._dense is not None:
            self._dense.add(np.ascontiguousarray(self._values(block[:, self.dense], self.dense).T))
        for j, sums in self._sparse.items():
            column = block[:, j]
            sums.add(self._values(column[np.isfinite(column)], j))
        if self._pool is not None:
            self._pool.add(self._values(block[np.isfinite(block)], None))

    def totals(self) -> tuple[np.ndarray, float]:
        """Per numeric column (0 where not chosen) and pooled (0 when not), the sums."""
        out = np.zeros(len(self.columns))
        if self._dense is not None:
            out[self.dense] = self._dense.total()
        for j, sums in self._sparse.items():
            out[j] = sums.total()[0]
        return out, float(self._pool.total()[0]) if self._pool is not None else 0.0


class LabelFit:
    """`LabelEncoder.fit` of a label column given in chunks: rows, missing labels and distinct values."""

    def __init__(self, name: str) -> None:
        self.name, self.rows, self.missing = name, 0, 0
        self._unique: list[np.ndarray] = []

    def observe(self, labels: pd.Series) -> None:
        """The next chunk of the column."""
        self.rows += len(labels)
        self.missing += int(labels.isna().sum())
        self._unique.append(np.asarray(pd.unique(labels)))

    def encoder(self) -> LabelEncoder:
        """The fitted encoder; raises as `LabelEncoder.fit`."""
        unique = pd.unique(np.concatenate(self._unique)) if self._unique else np.zeros(0)
        return LabelEncoder.from_unique(self.name, unique, rows=self.rows, missing=self.missing)


def encode(encoder: FeatureEncoder, frame: pd.DataFrame) -> np.ndarray:
    """``encoder.transform(frame)``, the numeric columns of a numeric dtype encoded together; the same array.

    The others (categories, numbers stored as text) go through ``transform`` itself.
    """
    specs = encoder.columns
    widths = [1 if isinstance(s, NumericColumn) else len(s.categories) for s in specs]
    starts = np.cumsum([0, *widths[:-1]]).astype(np.int64)
    _require_columns(frame, encoder.features)
    # One dtype test a distinct dtype, not a column: frame[name] costs a Series, and pixels are thousands of columns.
    dtypes = dict(zip(frame.columns, frame.dtypes, strict=True))
    numeric_dtype = {dtype: _is_numeric(dtype) for dtype in set(dtypes.values())}
    block = [i for i, s in enumerate(specs) if isinstance(s, NumericColumn) and numeric_dtype[dtypes[s.name]]]
    chosen = set(block)
    rest = [i for i in range(len(specs)) if i not in chosen]
    out = np.zeros((len(frame), encoder.n_outputs), dtype=np.float32)
    if block:
        numeric = [specs[i] for i in block]
        values = frame[[s.name for s in numeric]].to_numpy(dtype=np.float64, copy=True, na_value=np.nan)
        fill, mean, std = (np.array([getattr(s, key) for s in numeric]) for key in ("fill", "mean", "std"))
        # transform's arithmetic, in place: missing values filled, divided first, saturated at the float32 limits.
        np.copyto(values, np.broadcast_to(fill, values.shape), where=np.isnan(values))
        np.divide(values, std, out=values)
        np.subtract(values, mean / std, out=values)
        out[:, starts[block]] = np.clip(values, -FLOAT32_MAX, FLOAT32_MAX, out=values)
    if rest:
        others = FeatureEncoder(columns=tuple(specs[i] for i in rest), scale=encoder.scale).transform(frame)
        out[:, np.concatenate([np.arange(starts[i], starts[i] + widths[i]) for i in rest])] = others
    return out
