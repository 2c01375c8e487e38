"""Cross-field checks of the trainer config (RGLCDConfig's validator runs them all).

Each returns one message per problem, saying what to change; the validator joins them, so a
user sees every problem of a recipe at once. `isolated_direct_reward_problem` is the exception:
trainer/run.py asks it before Ray starts (it needs the scorer registry, the config does not).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.config import RGLCDConfig


def cross_field_problems(cfg: RGLCDConfig) -> list[str]:
    return (
        batch_problems(cfg) + overlap_problems(cfg) + reward_problems(cfg)
        + window_problems(cfg)
    )


def window_problems(cfg: RGLCDConfig) -> list[str]:
    """reward.timestep_window must hold at least one timestep of the DDIM solver grid."""
    window = cfg.reward.timestep_window
    if window is None or not cfg.reward.enabled:
        return []
    grid = solver_grid(cfg.lcd.num_train_timesteps, cfg.lcd.num_ddim_timesteps)
    if any(window[0] <= t <= window[1] for t in grid):
        return []
    return [
        f"reward.timestep_window={list(window)} holds none of the solver's timesteps "
        f"({grid[0]}, {grid[1]}, ..., {grid[-1]}), so the reward would never apply; widen it "
        "or set it to null"
    ]


def solver_grid(num_train_timesteps: int, num_ddim_timesteps: int) -> list[int]:
    """trainer/lcd/schedule.py's `ddim_grid(...).timesteps` without torch (the config stays
    importable without it; a test keeps the two equal)."""
    skip = num_train_timesteps // num_ddim_timesteps
    return [n * skip - 1 for n in range(1, num_ddim_timesteps + 1)]


def overlap_problems(cfg: RGLCDConfig) -> list[str]:
    if cfg.scaling.overlap_teacher and cfg.model.lora is not None:
        return [
            "scaling.overlap_teacher=true does not work with model.lora (the LoRA teacher is "
            "the student with its adapters off, so the two cannot run at once); set "
            "scaling.overlap_teacher=false"
        ]
    return []


def batch_problems(cfg: RGLCDConfig) -> list[str]:
    workers, batch = cfg.scaling.num_workers, cfg.lcd.global_batch_size
    if workers > 1 and batch % workers:
        return [
            f"lcd.global_batch_size ({batch}) must be divisible by scaling.num_workers "
            f"({workers}); e.g. lcd.global_batch_size={batch - batch % workers or workers}"
        ]
    return []


def reward_problems(cfg: RGLCDConfig) -> list[str]:
    reward, names = cfg.reward, [s.name for s in cfg.serve.scorers]
    if not reward.enabled:
        if reward.model is not None:
            return [
                f"reward.model={reward.model!r} has no effect with reward.beta=0 (plain LCD); "
                "set reward.beta>0 (paper Table 2: 5 for CLIP-like, 1 for HPSv2.1) or "
                "reward.model=null"
            ]
        return []
    if reward.mode == "lrm":
        return lrm_problems(cfg, names)
    if reward.model is None:
        return [
            f"reward.beta={reward.beta} in mode 'direct' needs reward.model=<scorer>; "
            f"configured scorers (serve.scorers): {names}"
        ]
    if reward.model not in names:
        return [f"reward.model={reward.model!r} is not in serve.scorers {names}"]
    from reward_service.scorers.registry import scorer_classes  # the scorer class says

    kind = cfg.serve.scorer(reward.model).kind
    if not scorer_classes()[kind].differentiable:
        return [
            f"reward.model={reward.model!r} (kind {kind!r}) gives no gradient, so it cannot "
            "guide the student directly; use it as lrm.expert with reward.mode=lrm, or pick a "
            "differentiable scorer"
        ]
    return []


def lrm_problems(cfg: RGLCDConfig, names: list[str]) -> list[str]:
    problems = []
    if cfg.reward.model is not None:
        problems.append(
            f"reward.model={cfg.reward.model!r} is unused in reward.mode=lrm (the LRM guides the "
            "student and learns from lrm.expert); set reward.model=null and "
            f"lrm.expert={cfg.reward.model}, or reward.mode=direct"
        )
    if cfg.lrm.expert not in names:
        problems.append(f"lrm.expert={cfg.lrm.expert!r} is not in serve.scorers {names}")
    vaes = sorted(cfg.serve.vaes)
    if cfg.lrm.decode_on_worker:  # the teacher's VAE decodes on each worker
        pass
    elif cfg.lrm.expert_vae is None and len(vaes) != 1:
        problems.append(
            f"serve.vaes has {len(vaes)} entries {vaes}; set lrm.expert_vae to the one that "
            "decodes the teacher's latents for the expert"
        )
    elif cfg.lrm.expert_vae is not None and cfg.lrm.expert_vae not in vaes:
        problems.append(f"lrm.expert_vae={cfg.lrm.expert_vae!r} is not in serve.vaes {vaes}")
    else:
        problems += expert_vae_problems(cfg)
    if cfg.lrm.batch_size > cfg.per_worker_batch_size:
        problems.append(
            f"lrm.batch_size ({cfg.lrm.batch_size}) must be <= the per-worker batch "
            f"({cfg.per_worker_batch_size} = lcd.global_batch_size / scaling.num_workers); "
            f"e.g. lrm.batch_size={cfg.per_worker_batch_size}"
        )
    return problems


def expert_vae_problems(cfg: RGLCDConfig) -> list[str]:
    """The expert's VAE must be the teacher's: the expert scores what the teacher's VAE makes
    of the student's latents. A recipe leaves its path unset (RGLCDConfig fills it in)."""
    name = cfg.expert_vae_name
    spec, (teacher_path, _) = cfg.serve.vaes[name], cfg.teacher_vae
    if spec.other_than_teacher or same_location(spec.path, teacher_path):
        return []
    source = "model.vae" if cfg.model.vae is not None else "model.teacher"
    return [
        f"serve.vaes.{name}.path={spec.path!r} is not the teacher's VAE ({source}="
        f"{teacher_path!r}), but the expert must decode the latents with it; drop "
        f"serve.vaes.{name}.path (it defaults to the teacher's), or set "
        f"serve.vaes.{name}.other_than_teacher=true if the difference is intended"
    ]


def same_location(a: str, b: str) -> bool:
    """The same hub id, or the same local folder however written (./x, x, /abs/x)."""
    if a == b:
        return True
    local = [os.path.realpath(os.path.expanduser(p)) for p in (a, b)]
    return os.path.exists(local[0]) and local[0] == local[1]


def isolated_direct_reward_problem(name: str, kind: str) -> str:
    """The direct reward runs inside the train workers, in the core environment; a scorer that
    only imports in its own environment (ImageReward: transformers 4.46) cannot run there."""
    return (
        f"reward.model={name!r} (kind {kind!r}) imports only in its own environment (the "
        "reward service's Ray runtime_env), not in the train workers, which the direct reward "
        "needs; for ImageReward use kind 'imagereward-native' (the same model and checkpoint "
        "in the core environment), or train it as the LRM expert "
        "(configs/<teacher>-rglcd-lrm-imagereward.yaml)."
    )
