"""clipscore / pickscore on a tiny transformers CLIPModel saved to disk and loaded by config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from reward_service.config import ScorerConfig
from reward_service.scorers.preprocess import CLIP_MEAN, CLIP_STD
from reward_service.scorers.registry import build_scorer, describe_scorer
from rglcd.tiny_models import write_tiny_clip_vocab

SIZE = 16
PROMPTS = ["a red circle", "the blue square on a white background"]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny CLIPModel + tokenizer saved like a hub checkpoint (no download)."""
    path = tmp_path_factory.mktemp("tiny_clip")
    write_tiny_clip_vocab(path)
    tokenizer = CLIPTokenizer.from_pretrained(path, model_max_length=77)
    tokenizer.save_pretrained(path)
    vocab = len(tokenizer)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77,
                bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = dict(image_size=SIZE, patch_size=4, hidden_size=32, intermediate_size=37,
                  num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24,
                        logit_scale_init_value=2.6592)
    CLIPModel(config).save_pretrained(path)
    return path


def _spec(kind, path):
    return ScorerConfig(name=kind, kind=kind, checkpoint=str(path), device="cpu")


@pytest.fixture(scope="module")
def scorers(tiny_clip_dir):
    return {kind: build_scorer(_spec(kind, tiny_clip_dir)) for kind in ("clipscore", "pickscore")}


def _manual_cosine(path, images, prompts):
    """Reference: the model's own feature functions, resize/normalise written out by hand."""
    model = CLIPModel.from_pretrained(path).eval()
    tokenizer = CLIPTokenizer.from_pretrained(path)
    pixels = F.interpolate(images, size=(SIZE, SIZE), mode="bicubic", antialias=True).clamp(0, 1)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=(pixels - mean) / std).pooler_output
        tok = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt")
        txt = model.get_text_features(input_ids=tok.input_ids).pooler_output
    cos = F.cosine_similarity(img, txt, dim=-1)
    return cos, model.logit_scale.exp()


@pytest.mark.parametrize("kind", ["clipscore", "pickscore"])
def test_scores_equal_manual_computation(tiny_clip_dir, scorers, kind):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 2 * SIZE, 2 * SIZE)  # square: shortest-side resize = plain resize
    scorer = scorers[kind]
    with torch.no_grad():
        scores = scorer(images, PROMPTS)
    cos, logit_scale = _manual_cosine(tiny_clip_dir, images, PROMPTS)
    expected = cos if kind == "clipscore" else logit_scale * cos
    assert scores.shape == (2,) and scores.dtype == torch.float32
    assert torch.allclose(scores, expected, atol=1e-5)
    assert scorer.differentiable and scorer.input_size == SIZE
    if kind == "pickscore":  # the scale is the model's, not 1
        assert logit_scale.item() == pytest.approx(14.285, rel=1e-3)


def test_gradients_reach_images_and_model_stays_frozen(scorers):
    scorer = scorers["pickscore"]
    images = torch.rand(2, 3, 24, 40, requires_grad=True)
    scorer(images, PROMPTS).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not scorer.model.training
    assert all(p.grad is None and not p.requires_grad for p in scorer.model.parameters())


def test_text_features_are_cached_per_prompt(tiny_clip_dir):
    scorer = build_scorer(_spec("clipscore", tiny_clip_dir))
    seen: list[list[str]] = []
    encode = scorer.encode_texts
    scorer.encode_texts = lambda prompts: seen.append(list(prompts)) or encode(prompts)
    images = torch.rand(3, 3, SIZE, SIZE)
    first = scorer(images, [PROMPTS[0], PROMPTS[1], PROMPTS[0]])
    second = scorer(images, [PROMPTS[0], PROMPTS[1], PROMPTS[0]])
    assert seen == [[PROMPTS[0], PROMPTS[1]]]  # once, deduplicated
    assert torch.equal(first, second)
    assert first[0] != first[1]  # different prompts give different scores


def test_score_items_answers_per_item(scorers):
    scorer = scorers["clipscore"]
    images = torch.rand(2, 3, SIZE, SIZE)
    items = scorer.score_items(images, PROMPTS)
    assert [i.error for i in items] == [None, None]
    assert torch.allclose(torch.tensor([i.score for i in items]), scorer(images, PROMPTS).detach())


def test_describe_reads_native_size_without_loading(tiny_clip_dir):
    info = describe_scorer(_spec("clipscore", tiny_clip_dir))
    assert info.differentiable and info.input_size == SIZE
