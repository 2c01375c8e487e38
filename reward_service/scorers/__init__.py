"""Reward scorers: plain classes used in-process by the trainer and wrapped by the Serve app.

Light imports only: `build_scorer` loads an implementation (and its heavy dependencies) when
a config asks for it; `describe_scorer` / `SCORER_INFO` answer without loading anything.
"""

from reward_service.scorers.base import ItemScore, Scorer, check_batch
from reward_service.scorers.registry import (
    SCORER_INFO,
    ScorerInfo,
    build_scorer,
    describe_scorer,
)

__all__ = [
    "SCORER_INFO",
    "ItemScore",
    "Scorer",
    "ScorerInfo",
    "build_scorer",
    "check_batch",
    "describe_scorer",
]
