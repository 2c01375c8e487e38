"""ImageReward in the core environment (kind imagereward-native), on tiny BLIP sizes.

The real sizes (ViT-L/16 + BERT-base) and parity with the `image-reward` package run in
tests/e2e/test_imagereward_native.py.
"""

from __future__ import annotations

import pytest
import torch

from reward_service.config import ScorerConfig
from reward_service.scorers.imagereward_blip import (
    ImageRewardModel,
    VisionSpec,
    blip_to_native_key,
    load_imagereward_model,
)
from reward_service.scorers.registry import build_scorer, describe_scorer
from tests.helpers.imagereward_native import (
    PROMPTS,
    TINY_MED_CONFIG,
    TINY_VISION,
    blip_state_dict,
    write_checkpoint,
)
from tests.unit.test_task import DEFAULTS, make_batch, student_grads, tiny_teacher
from trainer.reward.hooks import DirectReward
from trainer.task import DistillationTask

# The `image-reward` 1.5 package's state dict keys, for block / layer 0 and the unnumbered ones.
PACKAGE_KEYS = [
    "blip.visual_encoder.cls_token", "blip.visual_encoder.pos_embed",
    "blip.visual_encoder.patch_embed.proj.weight", "blip.visual_encoder.patch_embed.proj.bias",
    *[f"blip.visual_encoder.blocks.0.{m}.{p}" for m in
      ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
      for p in ("weight", "bias")],
    "blip.visual_encoder.norm.weight", "blip.visual_encoder.norm.bias",
    "blip.text_encoder.embeddings.word_embeddings.weight",
    "blip.text_encoder.embeddings.position_embeddings.weight",
    "blip.text_encoder.embeddings.LayerNorm.weight", "blip.text_encoder.embeddings.LayerNorm.bias",
    *[f"blip.text_encoder.encoder.layer.0.{a}.{m}.{p}" for a in ("attention", "crossattention")
      for m in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
      for p in ("weight", "bias")],
    *[f"blip.text_encoder.encoder.layer.0.{m}.{p}" for m in
      ("intermediate.dense", "output.dense", "output.LayerNorm") for p in ("weight", "bias")],
    *[f"mlp.layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")],
]
UNUSED_PACKAGE_KEYS = [
    "blip.text_encoder.embeddings.position_ids", "blip.vision_proj.weight", "blip.text_proj.bias",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagereward")
    model, path = write_checkpoint(folder)
    return model, path


def spec_for(path, **fields) -> ScorerConfig:
    return ScorerConfig(name="imagereward", kind="imagereward-native", checkpoint=str(path),
                        processor=str(path.parent / "tokenizer"), device="cpu", **fields)


def test_every_package_key_has_a_place_in_the_model():
    native = ImageRewardModel(TINY_MED_CONFIG, TINY_VISION).state_dict()
    for key in PACKAGE_KEYS:
        assert blip_to_native_key(key) in native, key
    assert [blip_to_native_key(k) for k in UNUSED_PACKAGE_KEYS] == [None] * 3


def test_a_direct_reward_may_use_it_in_the_core_environment(checkpoint):
    info = describe_scorer(spec_for(checkpoint[1]))
    assert info.differentiable and not info.isolated_env and info.input_size == 224


def test_loaded_scorer_gives_the_models_rewards_and_their_gradient(checkpoint):
    model, path = checkpoint
    scorer = build_scorer(spec_for(path))
    images = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    images.requires_grad_(True)
    rewards = scorer(images, PROMPTS)
    assert rewards.shape == (2,) and rewards.dtype == torch.float32
    pixels = scorer.recipe  # the same preprocessing for the reference
    from reward_service.scorers.preprocess import preprocess

    ids, mask = scorer.tokens(PROMPTS, torch.device("cpu"))
    with torch.no_grad():
        expected = model(preprocess(images.detach(), pixels), ids, mask)
    torch.testing.assert_close(rewards.detach(), expected)
    assert rewards[0] != rewards[1]
    rewards.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in scorer.model.parameters())  # frozen judge


def test_vision_sizes_are_read_from_the_checkpoint(checkpoint):
    state = torch.load(checkpoint[1], weights_only=True)
    assert VisionSpec.from_state_dict(state) == TINY_VISION
    assert load_imagereward_model(checkpoint[1], checkpoint[1].with_name("med_config.json"))


def test_a_checkpoint_with_foreign_or_missing_keys_is_refused(tmp_path):
    model = ImageRewardModel(TINY_MED_CONFIG, TINY_VISION)
    state = blip_state_dict(model)
    with pytest.raises(ValueError, match="1 unknown keys"):
        ImageRewardModel(TINY_MED_CONFIG, TINY_VISION).load_blip_state_dict(
            state | {"blip.text_decoder.cls.bias": torch.zeros(1)})
    state.pop("mlp.layers.7.bias")
    with pytest.raises(ValueError, match="1 missing keys"):
        ImageRewardModel(TINY_MED_CONFIG, TINY_VISION).load_blip_state_dict(state)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    (tmp_path / "med_config.json").write_text("{}")
    with pytest.raises(ValueError, match="THUDM/ImageReward"):
        build_scorer(spec_for(other))


def test_missing_files_say_what_to_download(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        build_scorer(spec_for(tmp_path / "ImageReward.pt"))


def test_direct_imagereward_step_reaches_the_student(checkpoint):
    """RG-LCD with ImageReward as the direct reward (paper eq. 11): its gradient moves the
    student's gradient away from plain LCD's."""
    teacher = tiny_teacher()
    scorer = build_scorer(spec_for(checkpoint[1]))
    torch.manual_seed(0)
    plain = DistillationTask(teacher, *DEFAULTS, seed=0)
    torch.manual_seed(0)
    rewarded = DistillationTask(
        teacher, *DEFAULTS, reward=DirectReward(scorer, teacher.vae, beta=5.0), seed=0
    )
    batch = make_batch(2)
    batch.captions[:] = PROMPTS
    grad_plain, grad_reward = student_grads(plain, batch), student_grads(rewarded, batch)
    assert torch.isfinite(grad_reward).all()
    assert not torch.allclose(grad_plain, grad_reward)
