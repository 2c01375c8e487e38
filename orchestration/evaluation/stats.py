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
    a, b = a[keep], b[keep]
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
