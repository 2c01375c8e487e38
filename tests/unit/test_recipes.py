"""Every recipe in configs/ parses, names scorers the registry knows, and means what it says.

Real-scale recipes compose a teacher file (configs/teachers/) and a method file
(configs/methods/): `<teacher>-<method>.yaml` holds `extends: [teachers/<teacher>.yaml,
methods/<method>.yaml]`, its run name and, for LRM methods, the teacher's LRM and VAE. The
tests iterate the teacher and method files that exist: adding a teacher file needs a recipe
per method, not a change here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reward_service.scorers.registry import describe_scorer, scorer_classes
from rglcd.configuration import ConfigError
from trainer.config import load_trainer_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
METHOD_FILES = sorted((CONFIG_DIR / "methods").glob("*.yaml"))


def _is_lora_teacher(path: Path) -> bool:
    return "lora" in (yaml.safe_load(path.read_text()).get("model") or {})


# Full-model teachers get every method; a LoRA teacher (SDXL: LCM-LoRA only, appendix D) the
# recipes the paper trains on it.
TEACHER_FILES = sorted(p for p in (CONFIG_DIR / "teachers").glob("*.yaml")
                       if not _is_lora_teacher(p))
LORA_TEACHER_RECIPES = {"sdxl.yaml": ("sdxl-lcd-lora.yaml", "sdxl-rglcd-lora-hpsv2.1.yaml")}

# method file suffix -> (scorer kind, beta from paper Table 2)
REWARDS = {
    "hpsv2.1": ("hpsv2.1", 1.0),
    "imagereward": ("imagereward", 1.0),
    "pickscore": ("pickscore", 5.0),
    "clipscore": ("clipscore", 5.0),
}
# The direct reward runs in the train workers: ImageReward there is the core-environment kind.
DIRECT_KINDS = {"imagereward": "imagereward-native"}
LRM_BETA = 100.0  # RG-LCM (HPS) + LRM, paper Figs. 14-15 (docs/method.md section 3)


def load(path: Path, overrides=()):
    return load_trainer_config(path, overrides, check_paths=False)


def extends(path: Path) -> list[str]:
    bases = (yaml.safe_load(path.read_text()) or {}).get("extends", [])
    return [bases] if isinstance(bases, str) else bases


def is_teacher_method_recipe(path: Path) -> bool:
    bases = extends(path)
    return len(bases) == 2 and bases[0].startswith("teachers/") and bases[1].startswith("methods/")


REAL_RECIPES = [p for p in CONFIGS if is_teacher_method_recipe(p)
                and not extends(p)[0].startswith(("teachers/sdxl",))]


def test_lora_teacher_files_have_their_recipes():
    for teacher, recipes in LORA_TEACHER_RECIPES.items():
        assert _is_lora_teacher(CONFIG_DIR / "teachers" / teacher)
        for recipe in recipes:
            assert extends(CONFIG_DIR / recipe)[0] == f"teachers/{teacher}"
            assert load(CONFIG_DIR / recipe).model.lora is not None


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_parses_and_names_known_scorers(path):
    cfg = load(path)
    for spec in cfg.serve.scorers:
        assert spec.kind in scorer_classes()
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


def test_every_teacher_has_a_recipe_for_every_method():
    assert TEACHER_FILES and METHOD_FILES
    for teacher in TEACHER_FILES:
        for method in METHOD_FILES:
            recipe = CONFIG_DIR / f"{teacher.stem}-{method.stem}.yaml"
            assert recipe.is_file(), f"no recipe {recipe.name} for {teacher.name} + {method.name}"
            assert extends(recipe) == [f"teachers/{teacher.name}", f"methods/{method.name}"]


def check_follows_the_paper(cfg, teacher_file: Path, method: str) -> None:
    """Teacher fields as the teacher file says; appendix A and Table 2 for the method."""
    teacher = yaml.safe_load(teacher_file.read_text())
    model = teacher["model"]
    assert (cfg.model.teacher, cfg.model.prediction_type) == (
        model["teacher"], model["prediction_type"]
    )
    assert cfg.model.resolution == model["resolution"]
    assert cfg.data.train_path == teacher["data"]["train_path"]
    # Appendix A: lr 1e-6, EMA 0.95, w in [5, 15], 10k steps, batch 32 (LCM) / 5 (RG) x 8 GPUs.
    lcd = cfg.lcd
    assert (lcd.learning_rate, lcd.ema_decay, lcd.w_min, lcd.w_max) == (1e-6, 0.95, 5.0, 15.0)
    assert (lcd.max_steps, lcd.num_ddim_timesteps) == (10_000, 50)
    assert (cfg.scaling.num_workers, cfg.scaling.use_gpu) == (8, True)
    assert cfg.per_worker_batch_size == (32 if method == "lcd" else 5)
    if method == "lcd":
        assert cfg.reward.beta == 0 and cfg.serve.scorers == []
        return
    variant = "lrm" if method.startswith("rglcd-lrm-") else "direct"
    kind, beta = REWARDS[method.rsplit("-", 1)[1]]
    if variant == "direct":
        kind = DIRECT_KINDS.get(kind, kind)
    assert cfg.reward.beta == (LRM_BETA if variant == "lrm" else beta)  # Figs. 14-15 / Table 2
    assert cfg.reward.mode == variant
    (scorer,) = cfg.serve.scorers
    assert scorer.kind == kind and scorer.checkpoint
    used = cfg.reward.model if variant == "direct" else cfg.lrm.expert
    assert used == scorer.name
    if variant == "lrm":
        assert cfg.uses_lrm and cfg.lrm.checkpoint.startswith("/models/")
        assert cfg.serve.vaes["teacher"].path == model["teacher"]  # the teacher's VAE decodes
        assert scorer.num_gpus > 0  # the expert runs in the reward service, on a GPU


@pytest.mark.parametrize("recipe", REAL_RECIPES, ids=[p.name for p in REAL_RECIPES])
def test_real_recipe_follows_the_paper(recipe):
    teacher, method = extends(recipe)
    cfg = load(recipe)
    assert cfg.run_name == recipe.stem
    check_follows_the_paper(cfg, CONFIG_DIR / teacher, Path(method).stem)


@pytest.mark.parametrize("method", ["lcd", "rglcd-hpsv2.1", "rglcd-lrm-pickscore"])
def test_a_new_teacher_file_composes_with_the_method_files(tmp_path, method):
    """A teacher written outside configs/ combines with the committed base and methods."""
    teacher = tmp_path / "my-teacher.yaml"
    teacher.write_text(
        f"extends: {CONFIG_DIR / 'base' / 'real-scale.yaml'}\n"
        "model: {teacher: /models/my-sd, prediction_type: v_prediction, resolution: 640}\n"
        "data: {train_path: /data/my-latents-640}\n"
    )
    recipe = tmp_path / "recipe.yaml"
    lrm_parts = (
        "lrm: {checkpoint: /models/my-lrm}\n"
        "serve: {vaes: {teacher: {path: /models/my-sd, num_gpus: 0.5}}}\n"
    )
    recipe.write_text(
        f"extends: [{teacher}, {CONFIG_DIR / 'methods' / (method + '.yaml')}]\n"
        f"run_name: my-{method}\n" + (lrm_parts if "lrm" in method else "")
    )
    cfg = load(recipe)
    assert cfg.run_name == f"my-{method}"
    check_follows_the_paper(cfg, teacher, method)


def test_sdxl_recipe_is_lcm_lora():
    """Paper appendix D: SDXL distilled as LCM-LoRA (rank 64, lr 1e-4 from diffusers' recipe)."""
    cfg = load(CONFIG_DIR / "sdxl-lcd-lora.yaml")
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
    recipe = CONFIG_DIR / "sd21v-rglcd-lrm-hpsv2.1.yaml"
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


TEACHERS = ("toy", "sd15", "sd21", "sd21v", "sdxl")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_recipe_names_follow_teacher_method_expert(path):
    """`<teacher>-<method>[-<expert>]`: the method part says what the config runs (lcd, rglcd
    with a direct reward, rglcd-lrm; -lora for LCM-LoRA), an expert part follows a reward."""
    cfg = load(path)
    teacher, _, rest = path.stem.partition("-")
    assert teacher in TEACHERS
    method = ("rglcd" if cfg.reward.enabled else "lcd") + ("-lrm" if cfg.uses_lrm else "")
    method += "-lora" if cfg.model.lora is not None else ""
    assert rest == method or rest.startswith(method + "-"), (rest, method)
    expert = rest[len(method) + 1:]
    assert bool(expert) == cfg.reward.enabled  # an expert part exactly when a reward guides


def test_an_old_recipe_name_is_refused_with_the_new_one():
    from rglcd.recipe_names import RENAMED_RECIPES

    for old, new in RENAMED_RECIPES.items():
        folder = CONFIG_DIR / "methods" if old.startswith("rglcd-") else CONFIG_DIR
        assert (folder / new).is_file() and not (folder / old).exists()
    with pytest.raises(ConfigError, match=r"'.*configs/toy\.yaml' was renamed "
                                          r"'.*configs/toy-rglcd-lrm-toy-judge\.yaml'"):
        load(CONFIG_DIR / "toy.yaml")
