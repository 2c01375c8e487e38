"""ImageReward in the core environment at its real sizes (ViT-L/16 + BERT-base), random weights.

Each test holds about 2 GB of weights: ImageReward's own size. The parity test needs
ImageReward's isolated environment (orchestration/rehearsal/imagereward_env.py; `make test` builds it):
there the package writes ImageReward.pt and scores images with its PIL `score()`; here the
core-environment scorer loads that file and must give the same scores.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from reward_service.config import ScorerConfig
from reward_service.scorers.imagereward_blip import ImageRewardModel, VisionSpec, blip_tokenizer
from reward_service.scorers.imagereward_native import NativeImageRewardScorer
from reward_service.scorers.registry import build_scorer
from tests.helpers.imagereward_native import MED_CONFIG, PROMPTS, write_tokenizer
from tests.unit.test_task import DEFAULTS, make_batch, student_grads, tiny_teacher
from trainer.reward.hooks import DirectReward
from trainer.task import DistillationTask

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARITY_HELPER = os.path.join(REPO_ROOT, "tests", "helpers", "imagereward_parity.py")
# Same pixels, same weights: only float rounding differs (PIL's resize of a 224 px image to
# 224 px is a copy, as is the tensor path's).
SCORE_TOLERANCE = 2e-3


@pytest.mark.slow  # builds ImageReward's real 400M-parameter architecture
def test_direct_imagereward_step_at_real_size_reaches_the_student(tmp_path):
    """Paper eq. 11 with ImageReward's real architecture: its gradient reaches the student."""
    torch.manual_seed(0)
    model = ImageRewardModel(MED_CONFIG, VisionSpec())
    assert sum(p.numel() for p in model.parameters()) > 400e6  # ViT-L + BERT-base + head
    tokenizer = blip_tokenizer(str(write_tokenizer(tmp_path / "tokenizer")))
    scorer = NativeImageRewardScorer("imagereward", model, tokenizer, "cpu")
    teacher = tiny_teacher()
    torch.manual_seed(0)
    plain = DistillationTask(teacher, *DEFAULTS, seed=0)
    torch.manual_seed(0)
    rewarded = DistillationTask(
        teacher, *DEFAULTS, reward=DirectReward(scorer, teacher.vae, beta=1.0), seed=0
    )
    batch = make_batch(2)
    batch.captions[:] = PROMPTS
    grad_plain, grad_reward = student_grads(plain, batch), student_grads(rewarded, batch)
    assert torch.isfinite(grad_reward).all()
    assert not torch.allclose(grad_plain, grad_reward)
    assert all(p.grad is None for p in model.parameters())  # the judge stays frozen


@pytest.mark.slow  # the package in its own interpreter, at real size
@pytest.mark.imagereward_env
def test_scores_match_the_image_reward_package(tmp_path):
    from orchestration.rehearsal.imagereward_env import imagereward_env
    from tests.helpers.imagereward_parity import IMAGES, seeded_pixels

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO_ROOT}
    run = subprocess.run([str(imagereward_env()), PARITY_HELPER, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = json.loads(run.stdout.strip().splitlines()[-1])
    tokenizer = tmp_path / "hf" / "hub" / "models--bert-base-uncased" / "snapshots" / ("0" * 40)
    scorer = build_scorer(ScorerConfig(
        name="imagereward", kind="imagereward-native", checkpoint=str(tmp_path / "ImageReward.pt"),
        processor=str(tokenizer), device="cpu",
    ))
    pixels = [torch.from_numpy(seeded_pixels(i)).permute(2, 0, 1) for i in range(IMAGES)]
    images = torch.stack(pixels).float() / 255.0  # (3, 3, 224, 224)
    with torch.no_grad():
        scores = scorer(images, [expected["prompt"]] * IMAGES)
    package = torch.tensor(expected["package_scores"])
    assert package.max() - package.min() > 0.05  # the images get different scores
    torch.testing.assert_close(scores, package, atol=SCORE_TOLERANCE, rtol=0)
