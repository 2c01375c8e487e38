"""hpsv2.1 on a tiny open_clip architecture whose checkpoint is a local file (no download)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from reward_service.config import ScorerConfig
from reward_service.scorers.preprocess import CLIP_MEAN, CLIP_STD
from reward_service.scorers.registry import build_scorer, describe_scorer

SIZE = 32
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse"]


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    """(config json path, checkpoint path, the model) - checkpoint laid out like HPS v2.1's."""
    tmp = tmp_path_factory.mktemp("tiny_hps")
    config_path = tmp / "tiny-hps-clip.json"
    config_path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_path)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-hps-clip").eval()
    checkpoint = tmp / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return config_path, checkpoint, model


def _spec(tiny_hps, **options):
    config_path, checkpoint, _ = tiny_hps
    options = {"model_config": str(config_path), **options}
    return ScorerConfig(name="hps", kind="hpsv2.1", checkpoint=str(checkpoint), device="cpu",
                        options=options)


def test_loads_local_checkpoint_and_scores_cosine(tiny_hps):
    _, _, reference = tiny_hps
    scorer = build_scorer(_spec(tiny_hps))
    torch.manual_seed(1)
    images = torch.rand(2, 3, 48, 24)  # tall: longest side -> 32, then zero-pad to 32x32
    with torch.no_grad():
        scores = scorer(images, PROMPTS)
        resized = F.interpolate(images, size=(32, 16), mode="bicubic", antialias=True).clamp(0, 1)
        padded = F.pad(resized, (8, 8, 0, 0))
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        img = reference.encode_image((padded - mean) / std)
        txt = reference.encode_text(open_clip.get_tokenizer("tiny-hps-clip")(PROMPTS))
    expected = F.cosine_similarity(img, txt, dim=-1)  # HPS: plain cosine, no logit scale
    assert torch.allclose(scores, expected, atol=1e-5)
    assert scorer.input_size == SIZE and scorer.differentiable
    assert describe_scorer(_spec(tiny_hps)).input_size == SIZE  # read from the json, no weights


def test_weights_come_from_the_checkpoint_file(tiny_hps):
    _, _, reference = tiny_hps
    scorer = build_scorer(_spec(tiny_hps))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(scorer.model.state_dict()[name], tensor), name


def test_gradients_reach_images(tiny_hps):
    scorer = build_scorer(_spec(tiny_hps))
    images = torch.rand(2, 3, 20, 40, requires_grad=True)
    scorer(images, PROMPTS).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in scorer.model.parameters())


def test_missing_checkpoint_and_unknown_arch_are_clear_errors(tiny_hps, tmp_path):
    missing = ScorerConfig(name="hps", kind="hpsv2.1", checkpoint=str(tmp_path / "nope.pt"),
                           device="cpu", options={"arch": "ViT-H-14"})
    with pytest.raises(ValueError, match="is not a file"):
        build_scorer(missing)
    bad_arch = ScorerConfig(name="hps", kind="hpsv2.1", checkpoint=str(tiny_hps[1]),
                            device="cpu", options={"arch": "ViT-Nope-1"})
    with pytest.raises(ValueError, match="no architecture 'ViT-Nope-1'"):
        build_scorer(bad_arch)
