"""Statistics and histograms of a field, chunk by chunk, equal to NumPy on the whole array.

Per chunk: count of finite values, NaN/inf count, min, max, and (count, mean,
M2) combined with Chan's parallel update; then a histogram of each chunk
with NumPy's own ``np.histogram(values, bins, range=(lo, hi))``, summed. Counts,
min, max and the histogram are identical to NumPy on the whole array; mean and
std agree to rounding (NumPy sums pairwise, here chunk means are combined).
Vector fields are described by their magnitude, as in dataset summaries.

Example:
    >>> values = np.arange(10.0)
    >>> stats = field_statistics([values[:4], values[4:]], bins=2)
    >>> stats["min"], stats["max"], stats["histogram"]["counts"]
    (0.0, 9.0, [5, 5])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def finite_values(block: np.ndarray) -> np.ndarray:
    """The finite values of a block (the magnitude of each vector for [..., c] blocks), as float64."""
    values = np.asarray(block)
    if values.ndim == 4 and values.shape[3] > 1:
        values = np.linalg.norm(values.astype(np.float64), axis=3)
    values = values.reshape(-1)
    if values.dtype.kind == "f":
        return values[np.isfinite(values)]
    return values


def block_moments(block: np.ndarray) -> dict[str, Any]:
    """(total, finite count, min, max, mean, M2) of one block."""
    total = int(np.asarray(block).size if np.asarray(block).ndim < 4 else np.prod(np.asarray(block).shape[:3]))
    values = finite_values(block)
    if not values.size:
        return {"total": total, "count": 0, "min": math.inf, "max": -math.inf, "mean": 0.0, "m2": 0.0}
    mean = float(values.mean(dtype=np.float64))
    return {
        "total": total, "count": int(values.size), "min": float(values.min()), "max": float(values.max()),
        "mean": mean, "m2": float(np.square(values - mean, dtype=np.float64).sum()),
    }


def combine_moments(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Chan et al.'s pairwise combination of block moments."""
    out = {"total": 0, "count": 0, "min": math.inf, "max": -math.inf, "mean": 0.0, "m2": 0.0}
    for part in parts:
        n_a, n_b = out["count"], part["count"]
        out["total"] += part["total"]
        if not n_b:
            continue
        n = n_a + n_b
        delta = part["mean"] - out["mean"]
        out["mean"] += delta * n_b / n
        out["m2"] += part["m2"] + delta * delta * n_a * n_b / n
        out["count"] = n
        out["min"] = min(out["min"], part["min"])
        out["max"] = max(out["max"], part["max"])
    return out


def block_histogram(block: np.ndarray, bins: int, value_range: Sequence[float]) -> np.ndarray:
    """``np.histogram`` of one block's finite values with fixed ``bins`` and ``range``."""
    counts, _ = np.histogram(finite_values(block), bins=bins, range=(float(value_range[0]), float(value_range[1])))
    return counts.astype(np.int64)


def summarize_moments(moments: dict[str, Any], counts: Sequence[int] | None, bins: int,
                      value_range: Sequence[float] | None) -> dict[str, Any]:
    """The JSON record of one field: count, nonfinite, min, max, mean, std, histogram."""
    n = moments["count"]
    record: dict[str, Any] = {
        "count": n,
        "nonfinite": moments["total"] - n,
        "min": moments["min"] if n else None,
        "max": moments["max"] if n else None,
        "mean": moments["mean"] if n else None,
        "std": math.sqrt(moments["m2"] / n) if n else None,
    }
    if value_range is not None and counts is not None:
        edges = np.linspace(float(value_range[0]), float(value_range[1]), bins + 1)
        record["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return record


def histogram_range(moments: dict[str, Any]) -> tuple[float, float] | None:
    """(min, max) for the histogram; a constant field gets NumPy's default (v - 0.5, v + 0.5)."""
    if not moments["count"]:
        return None
    lo, hi = moments["min"], moments["max"]
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def field_statistics(blocks: Sequence[np.ndarray], bins: int = 32,
                     value_range: Sequence[float] | None = None) -> dict[str, Any]:
    """Statistics of a field given as in-memory blocks (the whole array is one block).

    Example:
        >>> field_statistics([np.array([1.0, np.nan, 3.0])])["nonfinite"]
        1
    """
    moments = combine_moments(block_moments(b) for b in blocks)
    chosen = tuple(value_range) if value_range is not None else histogram_range(moments)
    counts = None
    if chosen is not None:
        counts = sum((block_histogram(b, bins, chosen) for b in blocks), np.zeros(bins, dtype=np.int64))
    return summarize_moments(moments, counts, bins, chosen)


__all__ = [
    "block_histogram", "block_moments", "combine_moments", "field_statistics",
    "histogram_range", "summarize_moments",
]
