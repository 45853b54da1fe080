"""Turn table columns into a float32 feature matrix and labels into class indices.

Both encoders are fitted on training rows only and saved as plain JSON next to
the model (``to_dict`` / ``from_dict``), never pickled, so a saved model can be
loaded without trusting or matching the code that wrote it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from normlab.errors import ConfigError, DataSourceError

# Category that stands for a missing value in a categorical column.
NA_CATEGORY = "<NA>"

_FEATURE_FORMAT = "normlab.FeatureEncoder"
_LABEL_FORMAT = "normlab.LabelEncoder"
_FORMAT_VERSION = 1
# Values quoted in an error message before it is cut short.
_MAX_QUOTED = 5
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Beyond this magnitude sums and squares of a column may overflow float64: mean and std are taken on a rescaled copy.
_SAFE_PEAK = 1e150


@dataclass(frozen=True)
class NumericColumn:
    """How one numeric column is encoded: ``(value - mean) / std``, missing -> ``fill``."""

    name: str
    fill: float
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalColumn:
    """How one categorical column is encoded: one indicator per category seen in fit."""

    name: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class FeatureEncoder:
    """Encode feature columns as float32: standardized numbers and one-hot categories.

    * Numeric columns (bool, int, float) are standardized with the training
      mean and population std (a constant column gets std 1); with
      ``scale=False`` they pass through unchanged. A missing value becomes the
      training mean (0 after scaling) so one gap does not poison a batch;
      blocking on missing values is the data checks' job.
    * Categorical columns (object, string, category) become one indicator per
      category seen in fit, in sorted order of their text form. Missing values
      count as the category ``"<NA>"``. A value not seen in fit (including
      ``"<NA>"`` when fit saw no missing values) encodes as all zeros for that
      column: the model sees "none of the known categories" rather than an error.

    Build one with `FeatureEncoder.fit` or `FeatureEncoder.from_dict`.
    """

    columns: tuple[NumericColumn | CategoricalColumn, ...]
    scale: bool | str = True

    @classmethod
    def fit(cls, df: pd.DataFrame, features: Sequence[str], *, scale: bool | str = True) -> FeatureEncoder:
        """Learn the encoding of ``features`` from training rows.

        Args:
            df: Training rows.
            features: Column names to encode, in output order.
            scale: Standardize numeric columns (False keeps raw values). ``"global"``
                standardizes every numeric column with one mean and std pooled over
                all of them: right for pixels, where a per-pixel std near 0 at the
                border would turn any brightness or contrast shift into a huge one.

        Returns:
            The fitted encoder.

        Raises:
            ConfigError: ``features`` is empty, repeats a name, or names a column
                whose dtype is neither numeric nor categorical (e.g. datetime).
            DataSourceError: A feature column is missing, or a numeric column
                has no values.
        """
        names = check_feature_names(features)
        _require_columns(df, names)
        if len(df) == 0:
            raise DataSourceError("training frame has no rows; fit the encoder on training rows")
        specs: list[NumericColumn | CategoricalColumn] = []
        for name in names:
            series = df[name]
            if _is_numeric(series.dtype):
                specs.append(_fit_numeric(series, name, scale=scale))
            elif _is_categorical(series.dtype):
                # Hash-based unique first: sorting only the few distinct values is cheap.
                categories = tuple(sorted(pd.unique(_category_text(series))))
                specs.append(CategoricalColumn(name=name, categories=categories))
            else:
                raise unencodable(name, series.dtype)
        if scale == "global":
            specs = _pool_numeric(df, specs)
        return cls(columns=tuple(specs), scale=scale if scale == "global" else bool(scale))

    @property
    def features(self) -> list[str]:
        """Input column names, in order."""
        return [spec.name for spec in self.columns]

    @property
    def output_names(self) -> list[str]:
        """One name per output column: the feature name, or ``feature=category``."""
        names: list[str] = []
        for spec in self.columns:
            if isinstance(spec, NumericColumn):
                names.append(spec.name)
            else:
                names.extend(f"{spec.name}={category}" for category in spec.categories)
        return names

    @property
    def n_outputs(self) -> int:
        """Number of output columns."""
        return sum(1 if isinstance(s, NumericColumn) else len(s.categories) for s in self.columns)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode rows into a float32 matrix of shape (len(df), n_outputs).

        Raises:
            DataSourceError: A feature column is missing, or a numeric feature
                holds text that is not a number.
        """
        _require_columns(df, self.features)
        out = np.zeros((len(df), self.n_outputs), dtype=np.float32)
        offset = 0
        for spec in self.columns:
            series = df[spec.name]
            if isinstance(spec, NumericColumn):
                values = _numeric_values(series, spec.name)
                values = np.where(np.isnan(values), spec.fill, values)
                # Divided first: values near the float64 limit must not overflow in the subtraction.
                scaled = values / spec.std - spec.mean / spec.std
                out[:, offset] = np.clip(scaled, -FLOAT32_MAX, FLOAT32_MAX)  # float32 saturates, never inf
                offset += 1
            else:
                codes = pd.Categorical(_category_text(series), categories=spec.categories).codes
                rows = np.flatnonzero(codes >= 0)
                out[rows, offset + codes[rows].astype(np.int64)] = 1.0
                offset += len(spec.categories)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable description that `from_dict` restores exactly."""
        columns: list[dict[str, Any]] = []
        for spec in self.columns:
            if isinstance(spec, NumericColumn):
                columns.append(
                    {
                        "name": spec.name,
                        "kind": "numeric",
                        "fill": spec.fill,
                        "mean": spec.mean,
                        "std": spec.std,
                    }
                )
            else:
                columns.append(
                    {"name": spec.name, "kind": "categorical", "categories": list(spec.categories)}
                )
        return {
            "format": _FEATURE_FORMAT,
            "version": _FORMAT_VERSION,
            "scale": self.scale,
            "columns": columns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoder:
        """Rebuild an encoder from `to_dict` output.

        Raises:
            ConfigError: ``data`` is not a saved FeatureEncoder of a known version.
        """
        _check_header(data, _FEATURE_FORMAT)
        try:
            specs: list[NumericColumn | CategoricalColumn] = []
            for item in data["columns"]:
                if item["kind"] == "numeric":
                    specs.append(
                        NumericColumn(
                            name=str(item["name"]),
                            fill=float(item["fill"]),
                            mean=float(item["mean"]),
                            std=float(item["std"]),
                        )
                    )
                elif item["kind"] == "categorical":
                    categories = tuple(str(c) for c in item["categories"])
                    specs.append(CategoricalColumn(name=str(item["name"]), categories=categories))
                else:
                    raise ValueError(f"unknown column kind {item['kind']!r}")
            return cls(columns=tuple(specs), scale=data["scale"] if data["scale"] == "global" else bool(data["scale"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"saved FeatureEncoder is malformed ({type(exc).__name__}: {exc}); re-save it with to_dict"
            ) from exc


def check_feature_names(features: Sequence[str]) -> list[str]:
    """``features`` as a list, or ConfigError when it is empty, holds a non-string or repeats a name."""
    names = list(features)
    if not names:
        raise ConfigError("features is empty; list at least one column to encode")
    not_text = [n for n in names if not isinstance(n, str)]
    if not_text:
        raise ConfigError(f"feature names must be strings, got {not_text[:_MAX_QUOTED]!r}")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise ConfigError(f"features lists {repeated!r} more than once; list each column once")
    return names


def unencodable(name: str, dtype: Any) -> ConfigError:
    """The error for a feature whose dtype is neither numeric nor categorical."""
    return ConfigError(f"feature {name!r} has dtype {dtype}, which cannot be encoded; "
                       "use numeric (bool, int, float) or categorical (text, category) columns")


class LabelEncoder:
    """Map class labels to indices 0..k-1, classes sorted (numbers numerically).

    Build one with `LabelEncoder.fit` or `LabelEncoder.from_dict`.
    """

    def __init__(self, classes: Sequence[Any]) -> None:
        """Wrap already sorted, distinct classes (use `fit` to learn them)."""
        self._classes: tuple[Any, ...] = tuple(classes)
        if len(set(self._classes)) != len(self._classes):
            raise ConfigError(f"label classes must be distinct, got {list(self._classes)[:20]!r}")
        self._index = pd.Index(list(self._classes))

    @classmethod
    def fit(cls, labels: pd.Series) -> LabelEncoder:
        """Learn the classes of a label column.

        Raises:
            DataSourceError: The column is empty, has missing labels, or mixes
                numbers and text.
        """
        series = pd.Series(labels)
        return cls.from_unique(series.name, pd.unique(series), rows=len(series), missing=int(series.isna().sum()))

    @classmethod
    def from_unique(cls, name: Any, unique: Any, *, rows: int, missing: int) -> LabelEncoder:
        """`fit` from what it reads of a label column: its distinct values, its row count and its missing labels.

        Raises:
            DataSourceError: As `fit`.
        """
        if missing:
            raise DataSourceError(f"label column {name!r} has {missing} missing labels; drop or fill those rows first")
        if rows == 0:
            raise DataSourceError(f"label column {name!r} has no rows; fit on training rows")
        # Unique values are few, so plain Python over them is cheap.
        unique = [_plain(v) for v in np.asarray(unique, dtype=object).tolist()]
        if all(isinstance(v, bool) for v in unique):
            return cls(sorted(unique))
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in unique):
            return cls(sorted(unique))
        if all(isinstance(v, str) for v in unique):
            return cls(sorted(unique))
        kinds = sorted({type(v).__name__ for v in unique})
        raise DataSourceError(
            f"label column {name!r} mixes value types ({', '.join(kinds)}); "
            "store every label as a number or every label as text"
        )

    @property
    def classes(self) -> list[Any]:
        """Class labels in index order."""
        return list(self._classes)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self._classes)

    def transform(self, labels: pd.Series | Sequence[Any] | np.ndarray) -> np.ndarray:
        """Return the int64 class index of every label.

        Raises:
            DataSourceError: A label was not seen in fit.
        """
        values = pd.Series(labels)
        codes = self._index.get_indexer(values)
        unknown = codes < 0
        if unknown.any():
            seen = pd.unique(values[unknown])
            quoted = ", ".join(repr(_plain(v)) for v in seen[:_MAX_QUOTED])
            quoted += " ..." if len(seen) > _MAX_QUOTED else ""
            raise DataSourceError(
                f"{int(unknown.sum())} labels are not among the training classes ({quoted}); "
                f"known classes: {_quote_list(self._classes)}"
            )
        return codes.astype(np.int64)

    def inverse_transform(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Return the class label of every index.

        Raises:
            DataSourceError: An index is not an integer in 0..n_classes-1.
        """
        idx = np.asarray(indices)
        if idx.size and (
            not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= self.n_classes
        ):
            raise DataSourceError(
                f"class indices must be integers in 0..{self.n_classes - 1}, got dtype {idx.dtype} "
                f"with range {idx.min()}..{idx.max()}"
            )
        return np.asarray(self._classes)[idx.astype(np.int64)]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable description that `from_dict` restores exactly."""
        return {"format": _LABEL_FORMAT, "version": _FORMAT_VERSION, "classes": list(self._classes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelEncoder:
        """Rebuild an encoder from `to_dict` output.

        Raises:
            ConfigError: ``data`` is not a saved LabelEncoder of a known version.
        """
        _check_header(data, _LABEL_FORMAT)
        classes = data.get("classes")
        if not isinstance(classes, list):
            raise ConfigError(
                f"saved LabelEncoder has no 'classes' list (got {classes!r}); re-save it with to_dict"
            )
        return cls(classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelEncoder) and self._classes == other._classes

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        return f"LabelEncoder(classes={list(self._classes)!r})"


def _is_numeric(dtype: Any) -> bool:
    """True for bool, int and real float dtypes (complex numbers are not features)."""
    return pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    )


def _is_categorical(dtype: Any) -> bool:
    """True for object, string and category dtypes."""
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population stds of a 1-D or 2-D array, NaN ignored, without overflow near the float64 limit.

    Columns whose largest magnitude passes `_SAFE_PEAK` are rescaled to [-1, 1]
    first (sums and squares of values near 1e308 overflow to inf). A column with
    no values gets NaN for both.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: NaN, said by the result
        peak = np.nanmax(np.abs(values), axis=0)
        scale = np.where(np.isfinite(peak) & (peak >= _SAFE_PEAK), peak, 1.0)
        unit = values / scale
        return np.nanmean(unit, axis=0) * scale, np.nanstd(unit, axis=0) * scale


def _fit_numeric(series: pd.Series, name: str, *, scale: bool) -> NumericColumn:
    """Learn fill, mean and std of one numeric column."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise no_finite_values(name)
    mean, std = (float(v) for v in mean_std(finite))
    return numeric_column(name, mean, std, scale=scale)


def no_finite_values(name: str) -> DataSourceError:
    """The error for a numeric feature without a finite value in the training rows."""
    return DataSourceError(f"feature {name!r} has no finite values in the training rows; "
                           "drop it from features or fix the data")


def numeric_column(name: str, mean: float, std: float, *, scale: bool | str) -> NumericColumn:
    """How a numeric column with this training mean and std is encoded (``scale`` as in `FeatureEncoder.fit`)."""
    if not scale:
        return NumericColumn(name=name, fill=mean, mean=0.0, std=1.0)
    # A constant column carries no signal; std 1 keeps it at 0 instead of dividing by 0.
    return NumericColumn(name=name, fill=mean, mean=mean, std=std if std > 0 and math.isfinite(std) else 1.0)


def _pool_numeric(
    df: pd.DataFrame, specs: list[NumericColumn | CategoricalColumn]
) -> list[NumericColumn | CategoricalColumn]:
    """Give every numeric column the mean and std pooled over all numeric columns."""
    numeric = [s.name for s in specs if isinstance(s, NumericColumn)]
    if not numeric:
        return specs
    values = df[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    return pooled(specs, *(float(v) for v in mean_std(values[np.isfinite(values)])))


def pooled(specs: list[NumericColumn | CategoricalColumn], mean: float, std: float) -> list[NumericColumn | CategoricalColumn]:
    """``specs`` with every numeric column standardized by one pooled ``mean`` and ``std``, its own fill kept."""
    std = std if std > 0 and math.isfinite(std) else 1.0
    return [replace(s, mean=mean, std=std) if isinstance(s, NumericColumn) else s for s in specs]


def _numeric_values(series: pd.Series, name: str) -> np.ndarray:
    """Return a numeric feature as float64, or raise naming text that is not a number."""
    if _is_numeric(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    as_objects = series.astype(object)
    numbers_ = pd.to_numeric(as_objects, errors="coerce")
    bad = as_objects[numbers_.isna() & as_objects.notna()]
    if len(bad):
        raise DataSourceError(
            f"numeric feature {name!r} holds text that is not a number ({_quote_list(pd.unique(bad))}); "
            "fix those values or encode the column as categorical"
        )
    return numbers_.to_numpy(dtype=np.float64, na_value=np.nan)


def _category_text(series: pd.Series) -> np.ndarray:
    """Return each value's text form as an object array, missing values as NA_CATEGORY."""
    text = series.astype(str).to_numpy(dtype=object)
    text[series.isna().to_numpy()] = NA_CATEGORY
    return text


def _require_columns(df: pd.DataFrame, names: Sequence[str]) -> None:
    """Raise DataSourceError naming every feature column ``df`` lacks."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataSourceError(
            f"feature columns {missing!r} are not in the data; "
            f"available columns: {_quote_list(df.columns, 20)}"
        )


def _check_header(data: Any, expected: str) -> None:
    """Raise ConfigError unless ``data`` is a dict saved by the expected encoder and version."""
    if not isinstance(data, dict) or data.get("format") != expected:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"expected a saved {expected} (format {expected!r}), got {found!r}")
    if data.get("version") != _FORMAT_VERSION:
        raise ConfigError(
            f"saved {expected} has version {data.get('version')!r}; "
            f"this normlab reads version {_FORMAT_VERSION}"
        )


def _plain(value: Any) -> Any:
    """Turn a numpy scalar into the Python scalar JSON and messages expect."""
    return value.item() if isinstance(value, np.generic) else value


def _quote_list(values: Any, limit: int = _MAX_QUOTED) -> str:
    """Join the first ``limit`` values for an error message, marking a cut with '...'."""
    items = list(values)
    text = ", ".join(str(v) for v in items[:limit])
    return text + (" ..." if len(items) > limit else "")
