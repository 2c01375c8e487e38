"""Shipped recipes are found by name from any directory; generated data goes to the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from rglcd.cache import cache_dir
from rglcd.configuration import ConfigError, read_config_file
from rglcd.recipes import DEFAULT_RECIPE, RECIPES_DIR, resolve_recipe, shipped_recipes
from trainer.config import RGLCDConfig, load_trainer_config


@pytest.mark.parametrize("name", ["toy-lcd", "toy-lcd.yaml", "configs/toy-lcd.yaml"])
def test_a_shipped_recipe_is_found_by_name_from_another_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe(name) == RECIPES_DIR / "toy-lcd.yaml"
    assert load_trainer_config(name, []).run_name == "toy-lcd"


def test_extends_of_a_shipped_recipe_resolve_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = read_config_file(RGLCDConfig, "sd15-lcd")  # teachers/sd15.yaml + methods/lcd.yaml
    assert data["model"]["teacher"] and data["run_name"]


def test_nested_recipes_and_local_files_resolve(tmp_path, monkeypatch):
    assert resolve_recipe("eval/sd15") == RECIPES_DIR / "eval" / "sd15.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy-lcd.yaml").write_text("seed: 3\n")  # a local file wins over a shipped name
    assert resolve_recipe("toy-lcd.yaml") == Path("toy-lcd.yaml")
    assert DEFAULT_RECIPE.is_file() and DEFAULT_RECIPE.stem in shipped_recipes()


def test_a_former_recipe_name_is_refused_with_the_new_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="was renamed .*toy-rglcd-lrm-toy-judge.yaml"):
        load_trainer_config("toy", [])


def test_an_unknown_recipe_names_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="shipped recipe: .*toy-lcd"):
        load_trainer_config("no-such-recipe", [])


def test_cache_dir_follows_rglcd_cache_dir_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("RGLCD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rglcd"
    monkeypatch.setenv("RGLCD_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
