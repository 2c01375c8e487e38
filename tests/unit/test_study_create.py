"""Building a study from an evaluation's outputs (orchestration/studies/human/create.py)."""

import json

import numpy as np
import pytest
from PIL import Image

from orchestration.studies.human.__main__ import main
from orchestration.studies.human.create import create_study, load_study
from tests.helpers.study import write_tiny_eval


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    return write_tiny_eval(tmp_path_factory.mktemp("eval") / "eval", prompts=6, seeds=(0, 1))


def test_study_items_pair_same_prompt_and_seed(eval_dir, tmp_path):
    path = create_study(eval_dir, tmp_path / "study", [("good@2", "poor@4")], ["r1", "r2"],
                        per_pair=5, repeats=2, attention=2)
    study = load_study(path.parent)
    pairs = [i for i in study["items"] if i["kind"] == "pair"]
    checks = [i for i in study["items"] if i["kind"] == "attention"]
    assert len(pairs) == 5 and len(checks) == 2
    records = {(r["row"], r["item"]): r for r in map(
        json.loads, (eval_dir / "scores.jsonl").read_text().splitlines())}
    for item in pairs:
        a, b = records[("good@2", item["eval_item"])], records[("poor@4", item["eval_item"])]
        assert item["prompt"] == a["prompt"] == b["prompt"] and item["seed"] == a["seed"]
        assert item["scores"]["toy-judge"] == [a["scores"]["toy-judge"], b["scores"]["toy-judge"]]
        shown = np.asarray(Image.open(path.parent / "images" / item["images"][0]))
        saved = np.asarray(Image.open(eval_dir / a["image"]))  # as the evaluation saved it
        assert (shown == saved).all()
    blank = np.asarray(Image.open(path.parent / "images" / checks[0]["images"][1]))
    assert blank.shape == (32, 32, 3) and (blank == 128).all() and checks[0]["expected"] == "a"
    assert study["trained_on"] == {"good@2": ["toy-judge"], "poor@4": []}
    assert study["raters"] == ["r1", "r2"] and study["repeats"] == 2


def test_cli_create_and_its_errors(eval_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["create", "--eval-dir", str(eval_dir), "--pairs", "good@2:poor@4",
                 "--out", str(out), "--per-pair", "0"]) == 0
    assert len([i for i in load_study(out)["items"] if i["kind"] == "pair"]) == 12
    assert main(["create", "--eval-dir", str(eval_dir), "--pairs", "good@2:poor@4",
                 "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    cases = [(str(tmp_path / "nowhere"), "good@2:poor@4", "does not exist"),
             (str(eval_dir), "good@2:teacher@50", "not in"),
             (str(eval_dir), "good@2", "expected ROW_A:ROW_B")]
    for source, pair, message in cases:
        assert main(["create", "--eval-dir", source, "--pairs", pair,
                     "--out", str(tmp_path / "new")]) == 2
        assert message in capsys.readouterr().err


def test_missing_images_say_how_to_get_them(eval_dir, tmp_path):
    import shutil

    copy = tmp_path / "eval"
    shutil.copytree(eval_dir, copy)
    shutil.rmtree(copy / "images")
    with pytest.raises(ValueError, match="output.save_images=true"):
        create_study(copy, tmp_path / "study", [("good@2", "poor@4")], ["r1"])


def test_sd_sized_images(tmp_path):
    eval_dir = write_tiny_eval(tmp_path / "sd-eval", prompts=3, upscale=16)  # 512 x 512
    path = create_study(eval_dir, tmp_path / "study", [("poor@4", "good@2")], ["r1"],
                        attention=1)
    study = load_study(path.parent)
    assert {i["width"] for i in study["items"]} == {512}
    check = next(i for i in study["items"] if i["kind"] == "attention")
    assert Image.open(path.parent / "images" / check["images"][1]).size == (512, 512)


def test_lrm_scores_the_pairs_people_see(eval_dir, tmp_path):
    """The committed toy LRM and toy VAE score both sides of every pair (column lrm)."""
    from rglcd.toy.paths import TOY_LRM_DIR, TOY_PIPELINE_DIR

    if not (TOY_LRM_DIR / "config.json").is_file():
        pytest.skip("no committed toy LRM: build the toy world first")
    path = create_study(eval_dir, tmp_path / "study", [("good@2", "poor@4")], ["r1"],
                        per_pair=4, attention=1, lrm=(TOY_LRM_DIR, str(TOY_PIPELINE_DIR)))
    study = load_study(path.parent)
    pairs = [i for i in study["items"] if i["kind"] == "pair"]
    scores = np.array([i["scores"]["lrm"] for i in pairs])  # (4, 2)
    assert np.isfinite(scores).all() and (np.abs(scores) <= 1).all()  # cosines
    assert (scores[:, 0] != scores[:, 1]).all()
    check = next(i for i in study["items"] if i["kind"] == "attention")
    assert "lrm" not in check["scores"]
