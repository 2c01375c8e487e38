"""Scorer registry: `ScorerConfig.kind` -> the scorer class registered for it.

Each scorer class declares its kind once (`kind`, `differentiable`, `input_size`,
`needs_checkpoint`, `options`, `default_batch_size`, `runtime_env`, `from_spec`; see
`base.Scorer`) and is registered with `@register_scorer`. Every module of this package is
imported to collect them, so adding a scorer is one module here (and its test). Those
modules import their heavy dependencies (open_clip, transformers models) inside the
functions that load weights: `describe_scorer(spec)` says whether a configured scorer is
differentiable and its native input size without loading any model, so the trainer can
validate a config (e.g. "direct reward needs a differentiable scorer") before anything heavy
happens. `build_scorer(spec)` loads it (weights from local paths / the local HF cache only).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import reward_service.scorers as _package
from reward_service.scorers.base import SCORER_CLASSES, Scorer
from rglcd import storage

if TYPE_CHECKING:  # annotations only: the config validates kinds through this registry
    from reward_service.config import ScorerConfig


@dataclass(frozen=True)
class ScorerInfo:
    """Static facts about a configured scorer (docs/method.md §5), from its class."""

    kind: str
    differentiable: bool
    input_size: int
    needs_checkpoint: bool
    options: tuple[str, ...] = ()
    runtime_env: dict[str, Any] | None = None  # an isolated environment (Ray runtime_env)

    @property
    def isolated_env(self) -> bool:
        return self.runtime_env is not None


def scorer_classes() -> dict[str, type[Scorer]]:
    """Every registered scorer kind -> its class (imports this package's modules once)."""
    for module in pkgutil.iter_modules(_package.__path__):
        importlib.import_module(f"{_package.__name__}.{module.name}")
    return SCORER_CLASSES


def scorer_class(spec: ScorerConfig) -> type[Scorer]:
    """The class of a configured scorer; ValueError for a config a user must fix."""
    classes = scorer_classes()
    if spec.kind not in classes:
        kinds = ", ".join(classes)
        raise ValueError(f"scorer {spec.name!r}: unknown kind {spec.kind!r}; choose one of {kinds}")
    cls = classes[spec.kind]
    unknown = sorted(set(spec.options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) or "none"
        raise ValueError(
            f"scorer {spec.name!r} ({spec.kind}): unknown options {unknown}; allowed: {allowed}"
        )
    if cls.needs_checkpoint and not spec.checkpoint:
        raise ValueError(
            f"scorer {spec.name!r} ({spec.kind}) needs `checkpoint`: a local path or hub id "
            "already in the local cache (nothing is downloaded at run time)"
        )
    return cls


def describe_scorer(spec: ScorerConfig) -> ScorerInfo:
    """Differentiability, native input size and environment of a configured scorer, without
    loading weights."""
    cls = scorer_class(spec)
    return ScorerInfo(
        kind=cls.kind,
        differentiable=cls.differentiable,
        input_size=int(cls.native_input_size(spec)),
        needs_checkpoint=cls.needs_checkpoint,
        options=cls.options,
        runtime_env=cls.runtime_env(),
    )


# Spec fields and options that name files or folders a scorer loads.
LOCATION_FIELDS = ("checkpoint", "processor")
LOCATION_OPTIONS = ("med_config", "model_config")


def localized(spec: ScorerConfig) -> ScorerConfig:
    """`spec` with every location it loads made a path on this node: pkg:// found in this
    node's package, s3:// / gs:// copied once per node into its cache (rglcd/storage.py).
    Plain paths and hub ids stay as written."""
    updates: dict[str, Any] = {}
    for name in LOCATION_FIELDS:
        value = getattr(spec, name)
        if value and storage.scheme(value):
            updates[name] = storage.local_copy(value)
    options = {
        key: storage.local_copy(value)
        if key in LOCATION_OPTIONS and isinstance(value, str) and storage.scheme(value) else value
        for key, value in spec.options.items()
    }
    if options != spec.options:
        updates["options"] = options
    return spec.model_copy(update=updates) if updates else spec


def build_scorer(spec: ScorerConfig) -> Scorer:
    """Load the scorer a config entry describes (ValueError on a config a user must fix)."""
    return scorer_class(spec).from_spec(localized(spec))
