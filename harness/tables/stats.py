"""Statistics over seeds: means, spreads, the paired +IDR vs baseline difference and its p-value, and their text."""
from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from harness.tables.layout import MISSING


def _miou(record: dict) -> float | None:
    value = (record.get("metrics") or {}).get("mIoU")
    return float(value) if value is not None and math.isfinite(float(value)) else None


def metric_values(records: Iterable[dict], metric: Callable[[dict], float | None] = _miou) -> list[float]:
    return [v for v in (metric(r) for r in records) if v is not None]


def mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def fmt_stats(values: list[float]) -> str:
    """'—', '43.61' or '43.61 ± 0.12 (n=3)'."""
    if not values:
        return MISSING
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def fmt_delta(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}"


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass
class Paired:
    """+IDR minus baseline over the seeds both have."""

    n: int
    mean: float | None = None
    std: float | None = None
    p: float | None = None


def paired(base: list[dict], idr: list[dict], metric: Callable[[dict], float | None] = _miou) -> Paired:
    def by_seed(records: list[dict]) -> dict[Any, float]:
        seeds: dict[Any, list[float]] = defaultdict(list)
        for rec in records:
            value = metric(rec)
            if value is not None:
                seeds[rec.get("seed")].append(value)
        return {seed: statistics.fmean(vals) for seed, vals in seeds.items()}

    b, i = by_seed(base), by_seed(idr)
    seeds = sorted(set(b) & set(i), key=str)
    if len(seeds) < 2:
        return Paired(len(seeds))
    xb, xi = [b[s] for s in seeds], [i[s] for s in seeds]
    diffs = [a - c for a, c in zip(xi, xb)]
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical differences: zero variance
        p = float(ttest_rel(xi, xb).pvalue)
    return Paired(len(seeds), statistics.fmean(diffs), statistics.stdev(diffs), p)


def fmt_p(p: float | None) -> str:
    if p is None:
        return MISSING
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_paired(pair: Paired) -> str:
    """'+1.23 ± 0.40 (n=3, p=0.012)', or '—' with fewer than two pairs."""
    if pair.n < 2 or pair.mean is None:
        return MISSING
    return f"{pair.mean:+.2f} ± {pair.std:.2f} (n={pair.n}, p={fmt_p(pair.p)})"


def fmt_gain(base: list[float], idr: list[float], pair: Paired | None = None) -> str:
    """Difference of the means; with two or more seed pairs, the paired comparison after it."""
    gain = difference(mean_or_none(idr), mean_or_none(base))
    if gain is None:
        return MISSING
    if pair is not None and pair.n >= 2:
        return f"{gain:+.2f} (paired ± {pair.std:.2f}, n={pair.n}, p={fmt_p(pair.p)})"
    return f"{gain:+.2f}"
