"""Reward scorers: plain classes used in-process by the trainer and wrapped by the Serve app.

Each scorer class declares its kind and registers itself (`register_scorer`); `build_scorer`
loads one (and its heavy dependencies) when a config asks for it; `describe_scorer` /
`scorer_classes` answer without loading any weights.
"""

from reward_service.scorers.base import ItemScore, Scorer, check_batch, register_scorer
from reward_service.scorers.registry import (
    ScorerInfo,
    build_scorer,
    describe_scorer,
    scorer_classes,
)

__all__ = [
    "ItemScore",
    "Scorer",
    "ScorerInfo",
    "build_scorer",
    "check_batch",
    "describe_scorer",
    "register_scorer",
    "scorer_classes",
]
