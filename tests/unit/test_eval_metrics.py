"""Evaluation pieces without Ray: prompts, config checks, HF-noise ratio, FID, local scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from orchestration.evaluation.config import EvalConfig, FidConfig, ReferenceConfig, ScoringConfig
from orchestration.evaluation.image_metrics import (
    FeatureMoments,
    feature_network,
    frechet_distance,
    hf_noise_ratio,
    num_features,
    read_reference,
    reference_chunks,
)
from orchestration.evaluation.prompts import load_prompts
from orchestration.evaluation.scoring import InProcessBackend
from reward_service.config import ScorerConfig
from rglcd.configuration import ConfigError, load_config
from rglcd.toy.metrics import high_frequency_fraction
from rglcd.toy.miniclip import build_miniclip, write_caption_tokenizer, write_preprocess
from rglcd.toy.scenes import HELD_OUT_COMBOS, parse_caption


def save_random_miniclip(path):
    """An untrained mini CLIP folder (same classes and files as the toy artifact)."""
    tokenizer = write_caption_tokenizer(path)
    build_miniclip(len(tokenizer), seed=0).save_pretrained(path)
    write_preprocess(path)
    return path


def test_load_prompts_text_json_and_toy(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("# comment\na cat\n\na dog\na cow\n")
    assert load_prompts(str(text), limit=2).prompts == ["a cat", "a dog"]
    styled = tmp_path / "hps.json"
    styled.write_text(json.dumps({"anime": ["a", "b", "c"], "photo": ["d"]}))
    prompts = load_prompts(str(styled), limit=2)
    assert prompts.prompts == ["a", "b", "d"] and prompts.groups == ["anime", "anime", "photo"]
    assert prompts.group_names() == ["anime", "photo"]
    heldout = load_prompts("toy:heldout")
    assert len(heldout) == 64 == len(set(heldout.prompts))  # 32 held-out combos x 2 sizes
    combos = {(a["colour"], a["shape"], a["bg"]) for a in map(parse_caption, heldout.prompts)}
    assert combos == set(HELD_OUT_COMBOS)
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))
    (tmp_path / "bad.json").write_text('{"a": [1, 2]}')
    with pytest.raises(ValueError, match="HPSv2"):
        load_prompts(str(tmp_path / "bad.json"))


def test_eval_config_checks_rows_and_pairs(tmp_path):
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text(
        "models:\n"
        "  - {name: t, kind: teacher, path: x, steps: [50]}\n"
        "  - {name: l, kind: lcm, path: y, steps: [2, 4]}\n"
    )
    cfg = load_config(EvalConfig, yaml_file, ["seeds=[0,1]"])
    assert cfg.row_labels() == ["t@50", "l@2", "l@4"]
    assert cfg.models[0].unet_calls(50) == 100 and cfg.models[1].unet_calls(4) == 4
    assert cfg.win_rate_pairs() == [("t@50", "l@2"), ("t@50", "l@4"), ("l@2", "l@4")]
    assert cfg.judge_name() == "toy-judge"
    with pytest.raises(ConfigError, match="unknown row"):
        load_config(EvalConfig, yaml_file, ["win_rates.pairs=[[t@50, l@8]]"])
    with pytest.raises(ConfigError, match="win_rates.judge"):
        load_config(EvalConfig, yaml_file, ["win_rates.judge=hps"])
    with pytest.raises(ConfigError, match="models"):
        load_config(EvalConfig, None, [])
    assert [s.name for s in cfg.scoring.scorers] == ["toy-judge", "heldout-judge", "toy-clip"]
    assert cfg.output.save_images  # a human study is built from the saved images
    trained = load_config(EvalConfig, yaml_file, ["models.1.trained_on=[toy-judge]"])
    assert trained.models[1].trained_on == ["toy-judge"] and trained.models[0].trained_on == []
    with pytest.raises(ConfigError, match="not scorer columns"):
        load_config(EvalConfig, yaml_file, ["models.1.trained_on=[hps]"])


def test_high_frequency_fraction_by_construction():
    flat = torch.full((1, 3, 16, 16), 0.3)
    checker = (torch.arange(16).view(-1, 1) + torch.arange(16).view(1, -1)) % 2
    checker = checker.float().expand(1, 3, 16, 16)  # all energy at (0.5, 0.5) cycles/px
    slow = torch.cos(2 * torch.pi * torch.arange(16) / 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    fractions = high_frequency_fraction(torch.cat([flat, checker, slow]), cutoff=0.25)
    assert fractions.tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def load_reference_images(cfg: ReferenceConfig) -> np.ndarray:
    return np.concatenate([read_reference(cfg, a, b) for a, b in reference_chunks(cfg, 10)])


def test_hf_noise_ratio_is_one_on_reference_and_rises_with_noise():
    reference = load_reference_images(ReferenceConfig(source="toy:validation", num_images=32))
    assert reference.shape == (32, 32, 32, 3) and reference.dtype == np.uint8
    assert hf_noise_ratio(reference, reference) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noisy = np.clip(reference + rng.normal(0, 25, reference.shape), 0, 255).astype(np.uint8)
    assert hf_noise_ratio(noisy, reference) > 1.5


def _moments(features, chunk):
    moments = FeatureMoments()
    for start in range(0, len(features), chunk):
        moments.add(features[start : start + chunk])
    return moments


def test_fid_in_miniclip_space_from_streamed_moments(tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from rglcd.toy.miniclip import MiniClipFeatures, load_miniclip

    cfg = FidConfig(features="miniclip", miniclip_dir=str(save_random_miniclip(tmp_path / "mc")))
    features = feature_network(cfg)
    reference = load_reference_images(ReferenceConfig(source="toy:validation", num_images=48))
    other = load_reference_images(ReferenceConfig(source="toy:heldout", num_images=48, seed=5))
    noise = np.random.default_rng(0).integers(0, 256, size=(48, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ref, oth, noi = (features(x) for x in (reference, other, noise))
    ref_moments = _moments(ref, 48)
    assert abs(frechet_distance(_moments(ref, 7), ref_moments)) < 1e-3  # chunking changes nothing
    fid_other = frechet_distance(_moments(oth, 5), ref_moments)
    assert 0 < fid_other < frechet_distance(_moments(noi, 16), ref_moments)
    # the same figure as torchmetrics' FID holding every feature at once
    metric = FrechetInceptionDistance(
        feature=MiniClipFeatures(load_miniclip(cfg.miniclip_dir)[0]), normalize=True)
    metric.update(torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 255, real=True)
    metric.update(torch.from_numpy(other).permute(0, 3, 1, 2).float() / 255, real=False)
    assert fid_other == pytest.approx(float(metric.compute()), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(_moments(oth[:1], 1), ref_moments)


def test_inception_fid_needs_local_weights():
    with pytest.raises(ValueError, match="inception_weights"):
        feature_network(FidConfig(features="inception"))


def test_in_process_backend_scores_and_reports_missing():
    from rglcd.toy.scenes import render, scene_for_caption

    captions = ["a large red circle on a blue background", "a small green square on a white background"]
    rng = np.random.default_rng(0)
    images = np.stack([render(scene_for_caption(c, rng)) for c in captions])
    cfg = ScoringConfig(mode="in-process", batch_size=1,
                        scorers=[ScorerConfig(name="judge", kind="toy-judge")])
    backend = InProcessBackend(cfg)
    right = backend.score("judge", images, captions)
    swapped = backend.score("judge", images, captions[::-1])
    assert right.tolist() == pytest.approx([10.0, 10.0])
    assert (swapped < 9).all()
    mixed = backend.score("judge", images, [captions[0], "a photo of a cat"])
    assert mixed[0] == pytest.approx(10.0) and np.isnan(mixed[1])
    assert sum(backend.errors.values()) == 1 and "toy grammar" in next(iter(backend.errors))


def test_fid_in_random_conv_space_is_the_default():
    cfg = FidConfig()
    assert cfg.features == "random-conv" and num_features(cfg) == 32
    features = feature_network(cfg)
    reference = load_reference_images(ReferenceConfig(source="toy:validation", num_images=48))
    noisy = np.clip(reference + np.random.default_rng(0).normal(0, 25, reference.shape), 0, 255)
    ref, noi = features(reference), features(noisy.astype(np.uint8))
    assert ref.shape == (48, 32)
    assert abs(frechet_distance(_moments(ref, 7), _moments(ref, 48))) < 1e-3
    assert frechet_distance(_moments(noi, 16), _moments(ref, 48)) > 0.1
