"""Summary statistics: NaN-aware means and head-to-head win rates with confidence intervals.

Win rate of A over B on paired items (same prompt and seed), judged by one scorer: a win
counts 1, a tie 1/2, a loss 0; items where either score is missing are left out. The paper
reports a human preference study; a reward model judging pairs is this project's stand-in.

Confidence intervals (default 95%):
- Wilson score interval of a binomial proportion p = k/n with z = Phi^-1(1 - alpha/2):
  centre = (p + z^2/(2n)) / (1 + z^2/n),
  half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2));
  ties enter as half-wins, so k may be fractional (a common, slightly conservative convention).
- Percentile bootstrap: resample the n paired outcomes with replacement B times (seeded) and
  take the alpha/2 and 1 - alpha/2 quantiles of the resampled win rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np


def normal_quantile(confidence: float) -> float:
    """z with P(|Z| <= z) = confidence (1.959964 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` (see module docstring)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0 trials")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    z = normal_quantile(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    outcomes: np.ndarray, confidence: float = 0.95, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item `outcomes` (1, 0.5 or 0)."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if outcomes.size == 0:
        raise ValueError("bootstrap_interval needs at least one outcome")
    normal_quantile(confidence)  # validates confidence
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, outcomes.size, size=(samples, outcomes.size))
    means = outcomes[picks].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class WinRate:
    a: str
    b: str
    judge: str
    wins: int
    losses: int
    ties: int
    win_rate: float  # (wins + ties/2) / n
    ci_low: float
    ci_high: float
    method: str
    confidence: float

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    def as_dict(self) -> dict:
        return asdict(self) | {"n": self.n}


def pair_outcomes(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """Per-item outcome of A vs B (1 win, 0.5 tie, 0 loss) over items both have a score for."""
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return _outcomes(a[keep], b[keep])


def _outcomes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a > b, 0 where a < b, 0.5 on a tie (broadcasting)."""
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))


def win_rate(
    a: str,
    b: str,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    judge: str,
    method: str = "wilson",
    confidence: float = 0.95,
    bootstrap_samples: int = 2000,
    seed: int = 0,
) -> WinRate:
    """Win rate of `a` over `b` with its confidence interval (see module docstring)."""
    outcomes = pair_outcomes(scores_a, scores_b)
    n = outcomes.size
    if n == 0:
        raise ValueError(f"no item has a {judge!r} score for both {a!r} and {b!r}")
    wins, losses = int((outcomes == 1).sum()), int((outcomes == 0).sum())
    ties = n - wins - losses
    rate = float(outcomes.mean())
    if method == "wilson":
        low, high = wilson_interval(wins + ties / 2, n, confidence)
    elif method == "bootstrap":
        low, high = bootstrap_interval(outcomes, confidence, bootstrap_samples, seed)
    else:
        raise ValueError(f"unknown win-rate interval method {method!r}; use wilson or bootstrap")
    return WinRate(a, b, judge, wins, losses, ties, rate, low, high, method, confidence)


def nan_summary(values: np.ndarray) -> dict[str, float | int | None]:
    """mean / std / count of the finite values, and how many were missing."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": None, "std": None, "n": 0, "missing": int(values.size)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "n": int(finite.size),
        "missing": int(values.size - finite.size),
    }


# Across training seeds. A recipe is a distribution over trained models; one run per recipe
# compares two draws. With S_A runs of A and S_B of B, each sampled on the same N items:
# - the all-pairs win rate averages the item outcomes of every (run of A, run of B) pairing;
# - its interval is a two-level percentile bootstrap: resample A's runs, B's runs and the
#   items (with replacement, seeded) and recompute, so it widens with run-to-run spread,
#   which a Wilson interval over the pooled items would hide.


def cross_seed_outcomes(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """(S_A, S_B, N) outcomes (1 / 0.5 / 0; NaN where either score is missing) of every
    pairing of A's runs (S_A, N) with B's runs (S_B, N) on the N shared items."""
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"scores must be (runs, items) with the same items: got {a.shape} and {b.shape}"
        )
    x, y = a[:, None, :], b[None, :, :]
    return np.where(np.isfinite(x) & np.isfinite(y), _outcomes(x, y), np.nan)


def cross_seed_bootstrap(outcomes: np.ndarray, samples: int = 2000, seed: int = 0) -> np.ndarray:
    """(samples,) win rates of (S_A, S_B, N) `outcomes` with runs of each side and items
    resampled (NaN for a resample of only missing items)."""
    runs_a, runs_b, items = outcomes.shape
    rng = np.random.default_rng(seed)
    finite = np.isfinite(outcomes)
    filled = np.where(finite, outcomes, 0.0)
    rates = np.full(samples, np.nan)
    for k in range(samples):
        pick = np.ix_(rng.integers(0, runs_a, runs_a), rng.integers(0, runs_b, runs_b),
                      rng.integers(0, items, items))
        count = finite[pick].sum()
        if count:  # a resample of only missing items has no rate; it is left out
            rates[k] = filled[pick].sum() / count
    return rates


def bootstrap_p_value(rates: np.ndarray, null: float = 0.5) -> float:
    """Two-sided p-value of `null` from bootstrap `rates`, by inverting the percentile
    interval: the smallest alpha whose (1 - alpha) interval leaves `null` out."""
    rates = rates[np.isfinite(rates)]
    if rates.size == 0:
        raise ValueError("bootstrap_p_value needs at least one finite resampled rate")
    tail = min((rates <= null).mean(), (rates >= null).mean())
    return float(min(1.0, max(2 * tail, 1 / rates.size)))


def holm_adjust(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: reject H_i at family-wise level alpha iff
    adjusted_i <= alpha. Sorted ascending p_(1..m): adjusted_(k) = max_{j<=k} min(1,
    (m - j + 1) p_(j)). Controls the family-wise error rate under any dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError(f"p-values must be a flat list of numbers in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def cross_seed_win_rate(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> dict[str, float | int]:
    """All-pairs win rate of A's runs over B's runs, its two-level bootstrap interval, and
    the lowest and highest win rate of a single pairing (see the comment above)."""
    outcomes = cross_seed_outcomes(scores_a, scores_b)
    if not np.isfinite(outcomes).any():
        raise ValueError("no item has a score on both sides of any pairing of runs")
    normal_quantile(confidence)  # validates confidence
    runs_a, runs_b, items = outcomes.shape
    rates = cross_seed_bootstrap(outcomes, samples, seed)
    alpha = 1 - confidence
    low, high = np.nanquantile(rates, [alpha / 2, 1 - alpha / 2])
    per_pairing = np.nanmean(outcomes, axis=2)
    return {
        "win_rate": float(np.nanmean(outcomes)),
        "ci_low": float(low),
        "ci_high": float(high),
        "min_pairing": float(np.nanmin(per_pairing)),
        "max_pairing": float(np.nanmax(per_pairing)),
        "runs_a": runs_a,
        "runs_b": runs_b,
        "items": items,
        "confidence": confidence,
        "p_value": bootstrap_p_value(rates),  # of "win rate = 0.5", same resamples
    }


def run_spread(scores: np.ndarray) -> dict[str, float | int]:
    """Mean of the runs' mean scores, their standard deviation (ddof 1) and range, (S, N)."""
    means = np.nanmean(np.asarray(scores, np.float64), axis=1)
    return {
        "mean": float(means.mean()),
        "std": float(means.std(ddof=1)) if means.size > 1 else 0.0,
        "min": float(means.min()),
        "max": float(means.max()),
        "runs": int(means.size),
    }
