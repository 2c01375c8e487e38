"""How many steps an expert request may stay in flight, from the measured expert latency.

A fixed window of K steps (lrm.max_staleness_steps) hides an expert that answers within K
student steps; a slower one (a VLM judge answering in seconds) has every request expire
unused and the LRM never learns. The adaptive window covers the measured round trip instead:

    steps needed = ceil(HEADROOM * round trip / step time) + 1

(+1: the scores must be in by the `collect` of the step after they arrive; HEADROOM: the
average hides the spread, e.g. a request queued behind a slow batched call takes up to twice
the average, and a window that shrinks to the average drops those), never below the
configured K (so an expert that is fast enough sees exactly the fixed window) and never above
lrm.max_adaptive_staleness_steps (memory: that many requests' latents stay stored). Both
times are exponential moving averages of what the expert queue measured. Pure functions,
no clocks: trainer/reward/expert_queue.py feeds them.
"""

from __future__ import annotations

import math

# Weight of the newest sample in the moving averages: a few requests move the window, one
# outlier (a GC pause, a retried call) does not.
EMA_WEIGHT = 0.2
# Round trips a request is given before it counts as lost: see the module doc.
HEADROOM = 2.0


def ema(previous: float | None, sample: float, weight: float = EMA_WEIGHT) -> float:
    """Exponential moving average; the first sample starts it."""
    if not 0 < weight <= 1:
        raise ValueError(f"weight={weight} must be in (0, 1]")
    return sample if previous is None else (1 - weight) * previous + weight * sample


def window_steps(
    round_trip_s: float | None, step_s: float | None, base: int, maximum: int,
    headroom: float = HEADROOM,
) -> int:
    """Steps a request may wait for its scores: covers `headroom` x `round_trip_s` at
    `step_s` per step, within [base, max(base, maximum)]. `base` = 0 (synchronous) and
    missing measurements keep `base`."""
    if base < 0:
        raise ValueError(f"base={base} must be >= 0")
    if base == 0 or round_trip_s is None or step_s is None or step_s <= 0:
        return base
    needed = math.ceil(headroom * round_trip_s / step_s) + 1
    return max(base, min(maximum, needed))
