"""Every recipe in configs/ parses, names scorers the registry knows, and means what it says.

Real-scale recipes (paper appendix A, Table 2): three teachers x {LCM, RG-LCM direct with one of
four RMs, RG-LCM + LRM with that RM as the expert} = 27 files named
`<teacher>-lcd.yaml`, `<teacher>-rglcd-<rm>.yaml`, `<teacher>-rglcd-lrm-<rm>.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reward_service.scorers.registry import SCORER_INFO, describe_scorer
from rglcd.configuration import ConfigError
from trainer.config import load_trainer_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# teacher prefix -> (hub id, prediction type, resolution)
TEACHERS = {
    "sd15": ("runwayml/stable-diffusion-v1-5", "epsilon", 512),
    "sd21": ("stabilityai/stable-diffusion-2-1-base", "epsilon", 512),
    "sd21v": ("stabilityai/stable-diffusion-2-1", "v_prediction", 768),
}
# recipe suffix -> (scorer kind, beta from paper Table 2)
REWARDS = {
    "hps": ("hpsv2.1", 1.0),
    "imagereward": ("imagereward", 1.0),
    "pickscore": ("pickscore", 5.0),
    "clipscore": ("clipscore", 5.0),
}
REAL_RECIPES = [
    (teacher, variant, reward)
    for teacher in TEACHERS
    for variant, reward in [("lcd", None)] + [(v, r) for r in REWARDS for v in ("direct", "lrm")]
]


def recipe_name(teacher: str, variant: str, reward: str | None) -> str:
    if variant == "lcd":
        return f"{teacher}-lcd.yaml"
    return f"{teacher}-rglcd-{'lrm-' if variant == 'lrm' else ''}{reward}.yaml"


def load(path: Path, overrides=()):
    return load_trainer_config(path, overrides, check_paths=False)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_parses_and_names_known_scorers(path):
    cfg = load(path)
    for spec in cfg.serve.scorers:
        assert spec.kind in SCORER_INFO
        describe_scorer(spec)  # options and checkpoint presence, without loading weights
    names = {s.name for s in cfg.serve.scorers}
    if not cfg.reward.enabled:
        assert cfg.reward.model is None
    elif cfg.reward.mode == "direct":
        assert cfg.reward.model in names
        assert describe_scorer(cfg.serve.scorer(cfg.reward.model)).differentiable
    else:
        assert cfg.reward.model is None and cfg.lrm.expert in names
        assert cfg.lrm.batch_size <= cfg.per_worker_batch_size


def test_every_teacher_reward_combination_has_a_recipe():
    expected = {recipe_name(*combo) for combo in REAL_RECIPES}
    present = {p.name for p in CONFIGS if p.name.split("-")[0] in TEACHERS}
    assert present == expected and len(expected) == 27


@pytest.mark.parametrize(
    ("teacher", "variant", "reward"), REAL_RECIPES, ids=[recipe_name(*c) for c in REAL_RECIPES]
)
def test_real_recipe_follows_the_paper(teacher, variant, reward):
    cfg = load(CONFIG_DIR / recipe_name(teacher, variant, reward))
    hub_id, prediction_type, resolution = TEACHERS[teacher]
    assert cfg.run_name == recipe_name(teacher, variant, reward).removesuffix(".yaml")
    assert (cfg.model.teacher, cfg.model.prediction_type) == (hub_id, prediction_type)
    assert cfg.model.resolution == resolution
    # Appendix A: lr 1e-6, EMA 0.95, w in [5, 15], 10k steps, batch 32 (LCM) / 5 (RG) x 8 GPUs.
    lcd = cfg.lcd
    assert (lcd.learning_rate, lcd.ema_decay, lcd.w_min, lcd.w_max) == (1e-6, 0.95, 5.0, 15.0)
    assert (lcd.max_steps, lcd.num_ddim_timesteps) == (10_000, 50)
    assert (cfg.scaling.num_workers, cfg.scaling.use_gpu) == (8, True)
    assert cfg.per_worker_batch_size == (32 if variant == "lcd" else 5)
    assert cfg.data.train_path.endswith(f"-{resolution}")

    if variant == "lcd":
        assert cfg.reward.beta == 0 and cfg.serve.scorers == []
        return
    kind, beta = REWARDS[reward]
    assert cfg.reward.beta == beta  # paper Table 2
    assert cfg.reward.mode == variant
    (scorer,) = cfg.serve.scorers
    assert scorer.kind == kind and scorer.checkpoint
    used = cfg.reward.model if variant == "direct" else cfg.lrm.expert
    assert used == scorer.name
    if variant == "lrm":
        assert cfg.uses_lrm and cfg.lrm.checkpoint.startswith("/models/")
        assert cfg.serve.vaes["teacher"].path == hub_id  # expert decodes with the teacher's VAE
        assert scorer.num_gpus > 0  # the expert runs in the reward service, on a GPU


def test_sdxl_recipe_is_lcm_lora():
    """Paper appendix D: SDXL distilled as LCM-LoRA (rank 64, lr 1e-4 from diffusers' recipe)."""
    cfg = load(CONFIG_DIR / "sdxl-lcm-lora.yaml")
    model = cfg.model
    assert (model.teacher, model.family, model.resolution) == (
        "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", 1024
    )
    assert model.lora is not None and (model.lora.rank, model.lora.alpha) == (64, 64.0)
    assert model.lora.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    lcd = cfg.lcd
    assert (lcd.learning_rate, lcd.w_min, lcd.w_max, lcd.max_steps) == (1e-4, 5.0, 15.0, 10_000)
    assert cfg.reward.beta == 0 and cfg.per_worker_batch_size == 12
    assert cfg.data.train_path.endswith("-1024")


def test_placeholders_fail_loudly_until_replaced(tmp_path):
    recipe = CONFIG_DIR / "sd21v-rglcd-lrm-hps.yaml"
    with pytest.raises(ConfigError) as info:
        load_trainer_config(recipe)  # /data and /models placeholders do not exist here
    text = "\n".join(info.value.problems)
    assert "data.train_path" in text and "lrm.checkpoint" in text

    # Pointing the recipe at local folders with overrides is all a user has to do.
    for name in ("sd21", "latents", "lrm"):
        (tmp_path / name).mkdir()
    cfg = load_trainer_config(
        recipe,
        [
            f"model.teacher={tmp_path / 'sd21'}",
            f"data.train_path={tmp_path / 'latents'}",
            f"lrm.checkpoint={tmp_path / 'lrm'}",
            "serve.scorers.0.checkpoint=/weights/HPS_v2.1_compressed.pt",
        ],
    )
    assert cfg.model.teacher == str(tmp_path / "sd21")
    assert cfg.serve.scorers[0].checkpoint == "/weights/HPS_v2.1_compressed.pt"
    assert cfg.model.prediction_type == "v_prediction"  # the rest of the recipe stays


def test_beta_without_scorer_is_rejected_for_a_real_recipe():
    recipe = CONFIG_DIR / "sd15-rglcd-pickscore.yaml"
    with pytest.raises(ConfigError, match="reward.model"):
        load(recipe, ["reward.model=hpsv2.1"])  # not in this recipe's serve.scorers
