"""A generated daily-weather table: mixed numeric and text columns, a noisy label, real-looking shifts.

Beside the digits, the gate and the monitor need data of another shape to be
proved on: a few physical measurements on very different scales, a text
column, and a label that the features only partly determine (two stations
with the same readings can report different weather, as real logs do). Rows
are drawn independently from a seeded generator, so "unseen rows of the same
distribution" is simply another seed.

Columns::

    station        text, 6 stations with their own climates
    temp_c         air temperature (deg C), seasonal per station
    humidity       relative humidity (%), 5..100
    wind_kmh       wind speed (km/h), >= 0
    pressure_hpa   sea-level pressure (hPa)
    precip_mm      precipitation (mm), >= 0, mostly 0
    weather        the label: sunny, cloudy, rainy, stormy, foggy, snowy

Shifts (``shift=``): ``moderate`` is a warmer, more humid spell that stays
mostly inside the ranges of ordinary years; ``severe`` is a heat wave with
storms, far outside them (the kind of batch a range expectation rejects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

STATIONS: tuple[str, ...] = ("aberdeen", "bristol", "cardiff", "dover", "exeter", "fort_william")
WEATHER: tuple[str, ...] = ("sunny", "cloudy", "rainy", "stormy", "foggy", "snowy")
LABEL = "weather"
FEATURES: tuple[str, ...] = ("station", "temp_c", "humidity", "wind_kmh", "pressure_hpa", "precip_mm")

# Mean temperature, seasonal swing (deg C), mean wind (km/h) of each station.
_CLIMATE = {
    "aberdeen": (8.5, 6.0, 22.0), "bristol": (11.0, 7.0, 15.0), "cardiff": (11.0, 6.5, 17.0),
    "dover": (11.5, 7.0, 20.0), "exeter": (11.5, 6.5, 14.0), "fort_william": (8.0, 5.5, 25.0),
}
Shift = Literal["none", "moderate", "severe"]


def weather_frame(n: int, *, seed: int, shift: Shift = "none") -> pd.DataFrame:
    """``n`` days of weather, drawn with ``seed``; ``shift`` moves the climate.

    Args:
        n: Rows.
        seed: Generator seed: the same seed gives the same rows.
        shift: ``none``, ``moderate`` (about +3 deg C, +8 % humidity, a
            little more wind) or ``severe`` (+14 deg C, double wind, heavy rain).

    Returns:
        The table, columns `FEATURES` then `LABEL`.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng(seed)
    station = rng.choice(STATIONS, size=n, p=[0.2, 0.2, 0.15, 0.15, 0.15, 0.15])
    day = rng.integers(0, 365, size=n)
    climate = np.array([_CLIMATE[s] for s in station])
    season = np.cos(2 * np.pi * (day - 200) / 365)  # 1 in mid-July, -1 in mid-January
    temp = climate[:, 0] + climate[:, 1] * season + rng.normal(0, 3.0, n)
    front = rng.normal(0, 1, n)  # a weather front: low pressure, wind, rain, humidity
    pressure = 1013 - 9 * front + rng.normal(0, 5, n)
    wind = np.clip(climate[:, 2] * np.exp(0.35 * front + rng.normal(0, 0.3, n)), 0, None)
    humidity = 78 + 8 * front - 0.6 * (temp - 10) + rng.normal(0, 7, n)
    wet = rng.random(n) < 1 / (1 + np.exp(-(1.6 * front - 0.4)))
    precip = np.where(wet, rng.gamma(1.2, 2.5 + 2 * np.clip(front, 0, None), n), 0.0)
    if shift == "moderate":
        temp = temp + 3.0
        humidity = humidity + 8.0
        wind = wind * 1.15
    elif shift == "severe":
        temp = temp + 14.0
        wind = wind * 2.2 + 25.0
        precip = precip * 4.0 + rng.gamma(2.0, 6.0, n)
        pressure = pressure - 25.0
    elif shift != "none":
        raise ValueError(f"shift is none, moderate or severe; got {shift!r}")
    humidity = np.clip(humidity, 5, 100)
    frame = pd.DataFrame({
        "station": station,
        "temp_c": np.round(temp, 1),
        "humidity": np.round(humidity, 0),
        "wind_kmh": np.round(wind, 1),
        "pressure_hpa": np.round(pressure, 1),
        "precip_mm": np.round(precip, 1),
    })
    frame[LABEL] = _label(frame, rng)
    return frame


def _label(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """The reported weather: a softmax over readings-based scores, so the readings only partly decide it."""
    t, h, w = frame["temp_c"].to_numpy(), frame["humidity"].to_numpy(), frame["wind_kmh"].to_numpy()
    p, r = frame["pressure_hpa"].to_numpy(), frame["precip_mm"].to_numpy()
    scores = np.stack([
        0.10 * (p - 1013) - 0.06 * (h - 75) + 0.4 * (r == 0),        # sunny
        np.full(len(frame), 0.4),                                     # cloudy
        0.55 * np.log1p(r) + 0.03 * (h - 75),                         # rainy
        0.07 * (w - 30) + 0.25 * np.log1p(r) - 0.05 * (p - 1000),     # stormy
        0.15 * (h - 84) - 0.08 * (w - 14) - 0.5 * np.log1p(r),        # foggy
        -0.45 * (t - 3.0) + 0.2 * np.log1p(r) - 0.5,                  # snowy
    ], axis=1) * 2.6
    scores -= scores.max(axis=1, keepdims=True)
    prob = np.exp(scores)
    prob /= prob.sum(axis=1, keepdims=True)
    picks = (prob.cumsum(axis=1) > rng.random(len(frame))[:, None]).argmax(axis=1)
    return np.asarray(WEATHER, dtype=object)[picks]


def flip_labels(frame: pd.DataFrame, share: float, *, seed: int) -> pd.DataFrame:
    """A copy with ``share`` of the labels changed to another class at random (label poisoning)."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    rows = rng.choice(len(out), size=round(share * len(out)), replace=False)
    labels = out[LABEL].to_numpy(dtype=object).copy()
    for i in rows:
        labels[i] = rng.choice([c for c in WEATHER if c != labels[i]])
    out[LABEL] = labels
    return out


def write_weather(path: str | Path, n: int, *, seed: int, shift: Shift = "none") -> Path:
    """Write `weather_frame` as CSV or Parquet (by suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = weather_frame(n, seed=seed, shift=shift)
    if path.suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
