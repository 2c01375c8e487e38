"""The distillation task on tiny SD components: LCD step, reward term, EMA, determinism."""

from __future__ import annotations

import pytest
import torch

from reward_service.config import ScorerConfig
from reward_service.scorers.registry import build_scorer
from rglcd.tiny_models import tiny_sd_components
from tests.helpers.lcd_reference import lcd_loss
from trainer.config import RGLCDConfig
from trainer.data import LocalBatch
from trainer.models import TeacherParts
from trainer.reward.hooks import DirectReward
from trainer.run_outputs.checkpointing import DataPosition
from trainer.task import DistillationTask

DEFAULTS = (RGLCDConfig().lcd, RGLCDConfig().model)  # the config tree's lcd and model sections
CAPTIONS = ["a small red circle", "a large blue square", "a cross", "a green triangle"]


def tiny_teacher(prediction_type: str = "epsilon") -> TeacherParts:
    parts = tiny_sd_components(prediction_type=prediction_type, seed=0)
    for name in ("unet", "vae", "text_encoder"):
        parts[name].requires_grad_(False)
    return TeacherParts(
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        alphas_cumprod=parts["noise_scheduler"].alphas_cumprod.float(),
        prediction_type=prediction_type,
    )


def make_batch(size: int = 4, seed: int = 0) -> LocalBatch:
    generator = torch.Generator().manual_seed(seed)
    return LocalBatch(
        latents=torch.randn(size, 4, 8, 8, generator=generator),
        captions=CAPTIONS[:size],
        sample_keys=torch.arange(size, dtype=torch.int64) * 7919 + seed,
        position=DataPosition(0, 1),
    )



@pytest.fixture(scope="module")
def toy_clip_dir(tmp_path_factory):
    """A randomly initialised mini CLIP saved like the toy-world one (a real toy-clip scorer)."""
    from rglcd.toy.miniclip import build_miniclip, write_caption_tokenizer, write_preprocess

    directory = tmp_path_factory.mktemp("miniclip")
    tokenizer = write_caption_tokenizer(directory)
    build_miniclip(len(tokenizer), seed=0).save_pretrained(directory)
    write_preprocess(directory)
    return str(directory)


def toy_clip_reward(teacher: TeacherParts, directory: str, beta: float, chunk: int = 0):
    spec = ScorerConfig(name="toy-clip", kind="toy-clip", checkpoint=directory, device="cpu")
    return DirectReward(build_scorer(spec), teacher.vae, beta=beta, decode_chunk_size=chunk)


def student_grads(task: DistillationTask, batch: LocalBatch) -> torch.Tensor:
    task.student.zero_grad()
    loss, _ = task.step(batch, step=0)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in task.trainable_parameters()])


def snapshot(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_step_updates_only_student_and_target(prediction_type):
    teacher = tiny_teacher(prediction_type)
    task = DistillationTask(teacher, *DEFAULTS, seed=0)
    frozen = {n: snapshot(m) for n, m in [("unet", teacher.unet), ("vae", teacher.vae),
                                          ("text", teacher.text_encoder)]}
    student_before, target_before = snapshot(task.student), snapshot(task.target)
    assert torch.equal(student_before, target_before)  # target starts as an exact copy

    optimizer = torch.optim.AdamW(task.trainable_parameters(), lr=1e-3)
    loss, metrics = task.step(make_batch(), step=0)
    assert torch.isfinite(loss) and loss.item() > 0
    assert metrics["lcd_loss"] == pytest.approx(loss.item())
    assert {"time_teacher", "time_student"} <= metrics.keys()
    loss.backward()
    optimizer.step()
    task.after_optimizer_step()

    for name, module in [("unet", teacher.unet), ("vae", teacher.vae),
                         ("text", teacher.text_encoder)]:
        assert torch.equal(snapshot(module), frozen[name]), f"frozen teacher {name} changed"
        assert all(p.grad is None for p in module.parameters())
    student_after, target_after = snapshot(task.student), snapshot(task.target)
    assert not torch.equal(student_after, student_before)
    # EMA: target = 0.95 target + 0.05 student
    torch.testing.assert_close(target_after, 0.95 * target_before + 0.05 * student_after)


def test_step_equals_the_reference_lcd_loss():
    """The task's numbered stages compute exactly the reference lcd_loss for the same draws."""
    teacher = tiny_teacher("v_prediction")
    task = DistillationTask(teacher, *DEFAULTS, seed=3)
    batch = make_batch()
    loss, _ = task.step(batch, step=5)
    index, w, noise = task.draw(batch.sample_keys, 5, batch.latents.shape[1:])
    from trainer.models import encode_prompts

    cond = encode_prompts(teacher.text_encoder, teacher.tokenizer, batch.captions)
    expected = lcd_loss(
        task.student, task.target, teacher.unet, batch.latents, noise, index, w, cond,
        task.uncond.hidden_states, task.grid, task.alphas_cumprod, "v_prediction",
    )
    torch.testing.assert_close(loss, expected.loss, rtol=0, atol=0)


def test_draws_depend_on_sample_not_on_batch_position():
    task = DistillationTask(tiny_teacher(), *DEFAULTS, seed=1)
    keys = torch.tensor([11, 22, 33, 44])
    index, w, noise = task.draw(keys, step=2, latent_shape=torch.Size([4, 8, 8]))
    index2, w2, noise2 = task.draw(keys[2:], step=2, latent_shape=torch.Size([4, 8, 8]))
    assert torch.equal(index[2:], index2) and torch.equal(w[2:], w2)
    assert torch.equal(noise[2:], noise2)
    assert ((w >= 5) & (w <= 15)).all() and ((index >= 0) & (index < 50)).all()
    index3, _, noise3 = task.draw(keys, step=3, latent_shape=torch.Size([4, 8, 8]))
    assert not torch.equal(noise, noise3)  # a new step draws new noise


def test_same_seed_gives_identical_loss():
    losses = []
    for _ in range(2):
        torch.manual_seed(123)  # the student's fresh cond_proj comes from the global RNG
        task = DistillationTask(tiny_teacher(), *DEFAULTS, seed=7)
        losses.append(task.step(make_batch(), step=0)[0].item())
    assert losses[0] == losses[1]


def test_reward_term_changes_the_gradient(toy_clip_dir):
    torch.manual_seed(0)
    teacher = tiny_teacher()
    plain = DistillationTask(teacher, *DEFAULTS, seed=0)
    torch.manual_seed(0)
    rewarded = DistillationTask(
        teacher, *DEFAULTS, reward=toy_clip_reward(teacher, toy_clip_dir, beta=5.0), seed=0
    )
    batch = make_batch()
    grad_plain = student_grads(plain, batch)
    grad_reward = student_grads(rewarded, batch)
    assert torch.isfinite(grad_reward).all()
    assert not torch.allclose(grad_plain, grad_reward)
    _, metrics = rewarded.step(batch, step=0)
    assert -1.0 <= metrics["reward_mean"] <= 1.0  # a cosine
    expected = metrics["lcd_loss"] - 5.0 * metrics["reward_mean"]
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_beta_zero_is_plain_lcd(toy_clip_dir):
    teacher = tiny_teacher()
    task = DistillationTask(
        teacher, *DEFAULTS, reward=toy_clip_reward(teacher, toy_clip_dir, beta=0.0), seed=0
    )
    assert task.reward is None
    _, metrics = task.step(make_batch(), step=0)
    assert "reward_mean" not in metrics


def test_chunked_decode_matches_full_decode(toy_clip_dir):
    teacher = tiny_teacher()
    latents = torch.randn(4, 4, 8, 8, requires_grad=True)
    full = toy_clip_reward(teacher, toy_clip_dir, beta=1.0).decode(latents)
    chunked = toy_clip_reward(teacher, toy_clip_dir, beta=1.0, chunk=3).decode(latents)
    assert full.shape == (4, 3, 16, 16) and full.requires_grad
    torch.testing.assert_close(full, chunked, rtol=1e-5, atol=1e-6)


def test_direct_reward_refuses_a_non_differentiable_scorer():
    scorer = build_scorer(ScorerConfig(name="judge", kind="toy-judge"))
    with pytest.raises(ValueError, match="not differentiable"):
        DirectReward(scorer, tiny_teacher().vae, beta=1.0)


def test_overlapped_teacher_gives_the_same_loss_and_gradients():
    """Stages 5-6 on the helper thread: bit-identical loss and student gradients."""
    results = []
    for overlap in (False, True):
        torch.manual_seed(5)
        task = DistillationTask(tiny_teacher(), *DEFAULTS, seed=2, overlap_teacher=overlap)
        loss, metrics = task.step(make_batch(), step=1)
        loss.backward()
        grads = [p.grad.clone() for p in task.trainable_parameters() if p.grad is not None]
        results.append((loss.detach(), grads, metrics))
    (loss_a, grads_a, _), (loss_b, grads_b, metrics_b) = results
    assert torch.equal(loss_a, loss_b)
    assert len(grads_a) == len(grads_b) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    assert {"time_teacher", "time_student"} <= metrics_b.keys()


def _three_steps(overlap: bool, prefetch_batches: list) -> list[torch.Tensor]:
    """Losses of three optimizer steps; `prefetch_batches[i]` is prefetched during step i."""
    torch.manual_seed(5)
    task = DistillationTask(tiny_teacher(), *DEFAULTS, seed=2, overlap_teacher=overlap)
    optimizer = torch.optim.AdamW(task.trainable_parameters(), lr=1e-3)
    losses = []
    for step in range(3):
        loss, _ = task.step(make_batch(seed=step), step)
        if prefetch_batches[step] is not None:
            task.prefetch(prefetch_batches[step], step + 1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        task.after_optimizer_step()
        losses.append(loss.detach())
    return losses


def test_teacher_prefetched_during_backward_gives_the_same_losses():
    """The next step's teacher pass, started before this step's backward and EMA update,
    gives the same losses as computing it in its own step (the target still follows EMA)."""
    ahead = [make_batch(seed=1), make_batch(seed=2), None]
    plain = _three_steps(False, ahead)
    assert all(torch.equal(a, b) for a, b in zip(plain, _three_steps(True, ahead), strict=True))
    # A prefetch for another batch than the step gets is discarded, not used.
    wrong = [make_batch(seed=7), make_batch(seed=8), None]
    assert all(torch.equal(a, b) for a, b in zip(plain, _three_steps(True, wrong), strict=True))


def test_overlap_refuses_lcm_lora():
    lora = RGLCDConfig.model_validate({"model": {"lora": {"rank": 4, "target_modules": ["to_q"]}}})
    with pytest.raises(ValueError, match="LCM-LoRA"):
        DistillationTask(
            tiny_teacher(), lora.lcd, lora.model, seed=0, overlap_teacher=True
        )


def test_timestep_window_weighs_only_the_samples_inside_it(toy_clip_dir):
    teacher, batch = tiny_teacher(), make_batch()
    reward = toy_clip_reward(teacher, toy_clip_dir, beta=5.0)
    task = DistillationTask(teacher, *DEFAULTS, reward=reward, seed=0)
    index, _, _ = task.draw(batch.sample_keys, 0, batch.latents.shape[1:])
    t_start = task.grid.timesteps[index]
    assert len(set(t_start.tolist())) > 1  # the window below splits this batch
    low = int(t_start.sort().values[1])  # at least one sample falls below it
    reward.timestep_window = (low, 999)
    inside = (t_start >= low).float()
    _, metrics = task.step(batch, step=0)
    rewards = reward.student_reward(_context(task, batch))[0].detach()
    expected = metrics["lcd_loss"] - 5.0 * (rewards * inside).mean().item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert metrics["reward_weight_mean"] == pytest.approx(inside.mean().item())


def test_timestep_window_outside_every_sample_gives_the_plain_lcd_gradient(toy_clip_dir):
    teacher, batch = tiny_teacher(), make_batch()
    torch.manual_seed(0)
    plain = DistillationTask(teacher, *DEFAULTS, seed=0)
    reward = toy_clip_reward(teacher, toy_clip_dir, beta=5.0)
    reward.timestep_window = (2000, 3000)
    torch.manual_seed(0)
    windowed = DistillationTask(teacher, *DEFAULTS, reward=reward, seed=0)
    torch.testing.assert_close(student_grads(windowed, batch), student_grads(plain, batch))


def _context(task: DistillationTask, batch: LocalBatch):
    """The reward context of step 0 (what `task.step` hands the hook)."""
    from trainer.reward.hooks import RewardContext

    inputs = task._inputs(batch, 0)
    with torch.no_grad():
        online = task._online(inputs)
    return RewardContext(inputs.latents, online, online, batch.captions, 0)


def test_a_reward_hook_must_say_how_it_rewards_the_student():
    from trainer.reward.hooks import RewardHook

    with pytest.raises(TypeError, match="student_reward"):
        RewardHook()
