"""The typed config tree: YAML + overrides, readable errors, cross-field checks, recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from rglcd.configuration import (
    ConfigError,
    diff_from_defaults,
    dump_config,
    load_config,
    read_config_file,
)
from trainer.config import RGLCDConfig, is_local_path, load_trainer_config

RECIPE_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(RECIPE_DIR.glob("*.yaml"))


def load(path=None, overrides=()) -> RGLCDConfig:
    # The committed toy artifacts may not be built on every machine; paths are tested apart.
    return load_trainer_config(path, overrides, check_paths=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_round_trip_through_dump(tmp_path):
    recipe = write(tmp_path, "run_name: trial\nlcd:\n  max_steps: 7\n  loss: l2\n")
    cfg = load(recipe, ["lcd.learning_rate=2e-5", "serve.scorers.1.num_replicas=2"])
    assert (cfg.run_name, cfg.lcd.max_steps, cfg.lcd.loss) == ("trial", 7, "l2")
    assert cfg.lcd.learning_rate == 2e-5 and cfg.serve.scorers[1].num_replicas == 2

    for minimal in (False, True):
        saved = tmp_path / f"saved-{minimal}.yaml"
        saved.write_text(dump_config(cfg, minimal=minimal))
        again = load(saved)
        assert again == cfg
        assert again.model_dump() == cfg.model_dump()


def test_an_override_changes_exactly_that_key():
    assert diff_from_defaults(load()) == {}
    cfg = load(None, ["lcd.learning_rate=1e-5"])
    assert diff_from_defaults(cfg) == {"lcd": {"learning_rate": 1e-5}}


def test_override_values_are_yaml_or_verbatim_strings():
    cfg = load(
        None,
        [
            "run_name=2024",  # str field: stays a string
            "model.revision=null",
            "data.validation_prompts=[a red circle, a blue square]",
            "model.gradient_checkpointing=true",
            "lcd.huber_c=5e-4",  # YAML 1.1 would read a string
            "data.num_workers=2",
        ],
    )
    assert cfg.run_name == "2024" and cfg.model.revision is None
    assert cfg.data.validation_prompts == ["a red circle", "a blue square"]
    assert cfg.model.gradient_checkpointing is True
    assert cfg.lcd.huber_c == 5e-4 and cfg.data.num_workers == 2


def test_list_index_override_keeps_the_other_items():
    cfg = load(None, ["serve.scorers.0.max_batch_size=8"])
    default = load()
    assert cfg.serve.scorers[0].max_batch_size == 8
    assert [s.name for s in cfg.serve.scorers] == [s.name for s in default.serve.scorers]
    assert cfg.serve.scorers[1] == default.serve.scorers[1]


def test_yaml_section_is_merged_with_defaults_key_by_key(tmp_path):
    cfg = load(write(tmp_path, "lcd:\n  max_steps: 5\n"), ["lcd.loss=l2"])
    assert (cfg.lcd.max_steps, cfg.lcd.loss) == (5, "l2")
    assert cfg.lcd.w_max == RGLCDConfig().lcd.w_max


@pytest.mark.parametrize(
    ("text", "dotted", "allowed"),
    [
        ("learning_rate: 1e-4\n", "'learning_rate'", "run_name, seed, model"),
        ("lcd:\n  lr: 1e-4\n", "'lcd.lr'", "learning_rate"),
        (
            "serve:\n  scorers:\n    - {name: a, kind: toy-clip, batch: 3}\n",
            "serve.scorers.0.batch",
            "max_batch_size",
        ),
    ],
)
def test_unknown_yaml_key_names_the_dotted_key_and_allowed_keys(tmp_path, text, dotted, allowed):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    message = str(info.value)
    assert dotted in message and "unknown key" in message and allowed in message
    assert "Traceback" not in message and "errors.pydantic.dev" not in message


def test_unknown_override_key_names_it_and_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'lcd\.lr'.*learning_rate"):
        load(None, ["lcd.lr=1e-4"])
    with pytest.raises(ConfigError, match=r"unknown key 'serve\.scorers\.0\.batch'"):
        load(None, ["serve.scorers.0.batch=3"])
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load(None, ["nope=1"])


def test_wrong_type_names_key_value_and_expected_type(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(None, ["lcd.max_steps=many"])
    message = str(info.value)
    assert "lcd.max_steps" in message and "'many'" in message and "expected int" in message
    assert "from override 'lcd.max_steps=many'" in message

    with pytest.raises(ConfigError, match=r"serve\.scorers\.1\.max_batch_size.*expected int"):
        load(
            write(
                tmp_path,
                "serve:\n  scorers:\n    - {name: a, kind: toy-clip}\n"
                "    - {name: b, kind: toy-clip, max_batch_size: big}\n",
            )
        )
    with pytest.raises(ConfigError, match=r"lcd\.loss.*'huber' or 'l2'"):
        load(None, ["lcd.loss=l1"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("lcd.max_steps", r"malformed override 'lcd\.max_steps'.*key\.sub=value"),
        ("=3", "malformed override"),
        ("lcd..max_steps=3", "empty part"),
        ("serve.scorers.9.name=x", r"index 9 is out of range for serve\.scorers \(2 item"),
        ("serve.scorers.first.name=x", r"serve\.scorers is a list; address an item by index"),
        ("lcd.max_steps.x=1", r"lcd\.max_steps is a value \(int\), not a section"),
        ("data.validation_prompts=[a, b", "cannot parse"),
    ],
)
def test_malformed_overrides_get_clear_messages(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load(None, [override])


def test_bad_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path, "lcd: [\n"))


def _leaves(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _is_subset(written, resolved) -> bool:
    """Every value the YAML wrote lands as written (lists/dicts may gain defaulted fields)."""
    if isinstance(written, dict):
        return isinstance(resolved, dict) and all(
            k in resolved and _is_subset(v, resolved[k]) for k, v in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(resolved, list)
            and len(written) == len(resolved)
            and all(_is_subset(w, r) for w, r in zip(written, resolved, strict=True))
        )
    return written == resolved


def _fields(data: dict) -> set[str]:
    """`section.field` names (list- and dict-typed fields count as one field)."""
    return {".".join(key.split(".")[:2]) for key in _leaves(data)}


@pytest.mark.parametrize("recipe", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_parses_and_takes_effect_exactly(recipe):
    cfg = load(recipe)
    written = read_config_file(RGLCDConfig, recipe)  # with the files it extends
    assert _is_subset(written, cfg.model_dump(mode="json"))  # each value lands as written
    derived = {"serve.vaes"} if "model.teacher" in _fields(written) else set()  # the teacher's
    assert _fields(diff_from_defaults(cfg)) <= _fields(written) | derived  # nothing else changes


@pytest.mark.parametrize(("recipe", "checkpoint"), [
    ("toy-rglcd-lrm-toy-clip", []),
    ("toy-rglcd-lrm-reward-clip", ["serve.scorers.0.checkpoint=pkg://rglcd.toy/artifacts/miniclip-reward"]),
])
def test_the_toy_clip_lrm_recipes_are_the_default_with_its_expert_swapped(recipe, checkpoint):
    """What docs/reward-clip measured: configs/toy-rglcd-lrm-toy-judge.yaml with these overrides."""
    root = CONFIGS[0].parent
    swapped = load(root / "toy-rglcd-lrm-toy-judge.yaml", [
        f"run_name={recipe}", "lrm.expert=toy-clip", "serve.scorers.0.name=toy-clip",
        "serve.scorers.0.kind=toy-clip", "serve.scorers.0.max_batch_size=32", *checkpoint])
    assert load(root / f"{recipe}.yaml") == swapped


def test_the_three_toy_recipes_mean_what_they_say():
    names = {p.name for p in CONFIGS}
    assert {"toy-rglcd-lrm-toy-judge.yaml", "toy-lcd.yaml", "toy-rglcd-toy-clip.yaml"} <= names
    root = CONFIGS[0].parent
    default = load(root / "toy-rglcd-lrm-toy-judge.yaml")  # what `python trainer/run.py` runs
    assert default.uses_lrm and default.reward.beta > 0 and default.lrm.expert == "toy-judge"
    assert not load(root / "toy-lcd.yaml").reward.enabled
    direct = load(root / "toy-rglcd-toy-clip.yaml")
    assert (direct.reward.mode, direct.reward.model, direct.reward.beta) == (
        "direct",
        "toy-clip",
        5,
    )
    assert not direct.uses_lrm


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["lcd.global_batch_size=30", "scaling.num_workers=4"],
            ["lcd.global_batch_size (30) must be divisible by scaling.num_workers (4)"],
        ),
        (
            ["reward.beta=5", "reward.mode=direct"],
            ["needs reward.model=<scorer>", "'toy-judge', 'toy-clip'"],
        ),
        (
            ["reward.beta=5", "reward.mode=direct", "reward.model=pickscore"],
            ["reward.model='pickscore' is not in serve.scorers ['toy-judge', 'toy-clip']"],
        ),
        (
            ["reward.beta=5", "reward.mode=direct", "reward.model=toy-judge"],
            ["gives no gradient", "lrm.expert"],
        ),
        (["reward.model=toy-clip"], ["no effect with reward.beta=0", "reward.model=null"]),
        (["reward.beta=1", "lrm.expert=hps"], ["lrm.expert='hps' is not in serve.scorers"]),
        (
            ["reward.beta=1", "reward.model=toy-judge"],
            ["unused in reward.mode=lrm", "lrm.expert=toy-judge"],
        ),
        (
            ["reward.beta=1", "lcd.global_batch_size=8"],
            ["lrm.batch_size (16) must be <= the per-worker batch (8", "lrm.batch_size=8"],
        ),
        (["lcd.w_min=20"], ["lcd.w_min (20.0) must be <= lcd.w_max (15.0)"]),
        (["scaling.gpus_per_worker=1"], ["needs scaling.use_gpu=true"]),
        (["model.resolution=30"], ["model.resolution=30 must be a multiple of 8"]),
        (
            ["scaling.overlap_teacher=true", "model.lora.rank=4"],
            ["does not work with model.lora", "scaling.overlap_teacher=false"],
        ),
        (
            ["reward.beta=1", "reward.timestep_window=[0,10]"],
            ["holds none of the solver's timesteps (19, 39, ..., 999)", "widen it"],
        ),
        (["reward.timestep_window=[500,10]"], ["0 <= low <= high", "[0, 499]"]),
    ],
)
def test_cross_field_errors_say_what_to_change(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load(None, overrides)
    for text in expected:
        assert text in str(info.value)


def test_several_cross_field_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        load(None, ["lcd.global_batch_size=30", "scaling.num_workers=4", "reward.beta=1"])
    assert len(info.value.problems) == 2


def test_valid_reward_setups_pass():
    lrm = load(None, ["reward.beta=1"])
    assert lrm.uses_lrm and lrm.lrm.expert == "toy-judge"
    direct = load(None, ["reward.beta=5", "reward.mode=direct", "reward.model=toy-clip"])
    assert direct.reward.enabled and not direct.uses_lrm
    assert (
        load(None, ["lcd.global_batch_size=30", "scaling.num_workers=3"]).per_worker_batch_size
        == 10
    )


def test_teacher_path_checks(tmp_path):
    missing = tmp_path / "no-teacher"
    with pytest.raises(ConfigError, match=r"model\.teacher.*model\.teacher=<local path or hub id"):
        load_trainer_config(None, [f"model.teacher={missing}"])
    (tmp_path / "teacher").mkdir()
    lrm = tmp_path / "lrm"
    lrm.mkdir()
    base = [f"model.teacher={tmp_path / 'teacher'}", f"lrm.checkpoint={lrm}"]
    assert load_trainer_config(None, base).model.teacher == str(tmp_path / "teacher")
    hub = load_trainer_config(None, ["model.teacher=stabilityai/stable-diffusion-2-1"])
    assert hub.model.teacher == "stabilityai/stable-diffusion-2-1"
    with pytest.raises(ConfigError, match=r"lrm\.checkpoint"):
        load_trainer_config(None, [*base, "reward.beta=1", f"lrm.checkpoint={missing}"])
    with pytest.raises(ConfigError, match=r"data\.train_path"):
        load_trainer_config(None, [*base, f"data.train_path={missing}/*.parquet"])


def test_is_local_path_semantics():
    assert is_local_path("/abs/dir") and is_local_path("./rel") and is_local_path("../up")
    assert is_local_path("a/b/c")  # three parts cannot be a hub id
    assert not is_local_path("org/name") and not is_local_path("runwayml/stable-diffusion-v1-5")


def test_derived_paths():
    cfg = load(None, ["run_name=abc", "output.root_dir=/tmp/runs"])
    assert cfg.output_dir == "/tmp/runs/abc"
    assert cfg.uses_toy_data and cfg.train_data_path == "/tmp/runs/toy-data"
    assert load(None, ["output.dir=/x/y"]).output_dir == "/x/y"
    remote = load(None, ["run_name=abc", "output.root_dir=s3://bucket/runs"])
    assert remote.output_dir == "s3://bucket/runs/abc"
    assert remote.train_data_path == "s3://bucket/runs/toy-data"


def test_locations_are_left_as_written():
    """Nothing resolved on the driver: URIs, relative paths and pkg:// stay strings."""
    cfg = load(None, ["output.root_dir=outputs", "data.train_path=s3://b/latents",
                      "lrm.checkpoint=gs://b/lrm"])
    assert cfg.output.root_dir == "outputs" and cfg.data.train_path == "s3://b/latents"
    assert cfg.model.teacher == "pkg://rglcd.toy/artifacts/pipeline"
    assert cfg.missing_paths() == []  # object-store URIs are opened later, not here
    missing = load(None, ["model.teacher=pkg://rglcd.toy/artifacts/nothing"])
    assert "model.teacher" in missing.missing_paths()[0]


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1


class _Generic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: _Inner = _Inner()
    items: list[_Inner] = [_Inner(size=2), _Inner(size=3)]
    table: dict[str, _Inner] = {}


def test_load_config_is_generic_over_models():
    cfg = load_config(_Generic, None, ["items.1.size=9", "table.new.size=4", "inner.size=5"])
    assert [i.size for i in cfg.items] == [2, 9]
    assert cfg.table["new"].size == 4 and cfg.inner.size == 5
    assert diff_from_defaults(cfg) == {
        "inner": {"size": 5},
        "items": [{"size": 2}, {"size": 9}],
        "table": {"new": {"size": 4}},
    }
    with pytest.raises(ConfigError, match=r"unknown key 'table\.new\.width'.*size"):
        load_config(_Generic, None, ["table.new.width=1"])


@pytest.mark.parametrize(
    "recipe", sorted((CONFIGS[0].parent / "eval").glob("*.yaml")), ids=lambda p: p.name
)
def test_evaluation_recipes_parse(recipe):
    from orchestration.evaluation.config import EvalConfig
    from rglcd.configuration import load_config

    cfg = load_config(EvalConfig, recipe)
    assert cfg.models and all(spec.steps for spec in cfg.models)


def test_worker_threads_share_the_node_and_respect_an_explicit_value():
    from trainer.loop import worker_threads

    scaling = load().scaling
    assert scaling.torch_threads == 0  # auto
    assert worker_threads(scaling, node_cores=2, local_workers=1) == 2
    assert worker_threads(scaling, node_cores=16, local_workers=8) == 2
    assert worker_threads(scaling, node_cores=2, local_workers=4) == 1
    big = scaling.model_copy(update={"cpus_per_worker": 4.0})
    assert worker_threads(big, node_cores=2, local_workers=1) == 4
    fixed = scaling.model_copy(update={"torch_threads": 3})
    assert worker_threads(fixed, node_cores=64, local_workers=1) == 3


def test_optional_8bit_adam_says_how_to_get_it_when_absent():
    import importlib.util

    from trainer.loop import optimizer_class

    assert optimizer_class("adamw") is torch.optim.AdamW
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ValueError, match="pip install bitsandbytes, or set lcd.optimizer"):
            optimizer_class("adamw8bit")
    assert load(overrides=["lcd.optimizer=adamw8bit"]).lcd.optimizer == "adamw8bit"


def test_extends_merges_files_in_order_sections_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "lcd: {learning_rate: 1.0e-6, max_steps: 10}\nserve: {vaes: {a: {path: x}}}\n"
    )
    (tmp_path / "method.yaml").write_text("lcd: {max_steps: 20}\nserve: {vaes: {b: {path: y}}}\n")
    (tmp_path / "recipe.yaml").write_text(
        "extends: [base.yaml, method.yaml]\nrun_name: composed\nlcd: {global_batch_size: 4}\n"
    )
    cfg = load(tmp_path / "recipe.yaml")
    assert (cfg.lcd.learning_rate, cfg.lcd.max_steps, cfg.lcd.global_batch_size) == (1e-6, 20, 4)
    assert list(cfg.serve.vaes) == ["b"]  # a dict-typed field is replaced whole, like a list
    assert cfg.run_name == "composed"


def test_extends_refuses_a_cycle_and_a_malformed_value(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: {teacher: t.yaml}\n")
    with pytest.raises(ConfigError, match="`extends` must be a file name or a list"):
        load(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "d.yaml")


def test_model_family_names_one_of_the_family_objects():
    from trainer.family import FAMILIES

    assert load(None, ["model.family=sd"]).model.family == "sd"
    with pytest.raises(ConfigError, match=r"model.family='flux' is unknown; use one of \('sd', 'sdxl'\)"):
        load(None, ["model.family=flux"])
    assert set(FAMILIES) == {"sd", "sdxl"}


def test_the_expert_vae_is_the_teachers_unless_marked_otherwise():
    """serve.vaes entries without a path take the teacher's VAE; a recipe states it once."""
    cfg = load(RECIPE_DIR / "sd21v-rglcd-lrm-hpsv2.1.yaml")
    vae = cfg.serve.vaes["teacher"]
    assert (vae.path, vae.subfolder) == ("stabilityai/stable-diffusion-2-1", "vae")
    assert (vae.num_gpus, cfg.expert_vae_name) == (0.25, "teacher")  # beside a train worker
    replaced = load(None, ["model.vae=org/better-vae", "reward.beta=1"])
    assert (replaced.serve.vaes["toy"].path, replaced.serve.vaes["toy"].subfolder) == (
        "org/better-vae", None)
    other = ["serve.vaes.teacher.path=stabilityai/sd-vae-ft-mse"]
    with pytest.raises(ConfigError, match=r"serve\.vaes\.teacher\.path=.*not the teacher's VAE"):
        load(RECIPE_DIR / "sd21v-rglcd-lrm-hpsv2.1.yaml", other)
    marked = load(RECIPE_DIR / "sd21v-rglcd-lrm-hpsv2.1.yaml",
                  [*other, "serve.vaes.teacher.other_than_teacher=true"])
    assert marked.serve.vaes["teacher"].path == "stabilityai/sd-vae-ft-mse"


def test_the_service_on_its_own_fills_the_teachers_vae_from_the_recipe():
    """`python -m reward_service --config <trainer recipe>`: model.teacher's VAE; no recipe:
    the toy world's; build_app refuses a VAE that still has no path."""
    from reward_service.app import build_app, load_serve_config
    from reward_service.config import ServeConfig, VaeConfig
    from rglcd.toy.paths import TOY_PIPELINE

    assert load_serve_config().vaes["toy"].path == TOY_PIPELINE  # found on each node
    recipe = load_serve_config(str(RECIPE_DIR / "sd15-rglcd-lrm-hpsv2.1.yaml"))
    assert recipe.vaes["teacher"].path == "runwayml/stable-diffusion-v1-5"
    with pytest.raises(ValueError, match=r"serve\.vaes \['x'\] have no path"):
        build_app(ServeConfig(vaes={"x": VaeConfig()}, scorers=[]))
