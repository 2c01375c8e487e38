"""metrics.jsonl across a resume, progress line, sample grids, run report."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from rglcd.tiny_models import tiny_sd_components, tiny_unet
from trainer.models import TeacherParts
from trainer.run_outputs.export import build_lcm_pipeline
from trainer.run_outputs.monitoring import (
    METRICS_FILE,
    SKIPPED_REWARD_UPDATES,
    MetricsFollower,
    MetricsLogger,
    ProgressLine,
    format_postfix,
    read_metrics,
)
from trainer.run_outputs.report import config_diff, summarize_metrics, write_run_report
from trainer.run_outputs.sample_grid import sample_grid_images, save_sample_grid, step_labels


def _log_steps(logger: MetricsLogger, steps, run: str) -> None:
    for step in steps:
        logger.log(
            step,
            {"loss": torch.tensor(1.0 / (step + 1)), "run": run, SKIPPED_REWARD_UPDATES: step % 2},
        )


def test_resume_leaves_no_duplicate_steps(tmp_path):
    with MetricsLogger(tmp_path, rank=0) as first:
        _log_steps(first, range(10), "first")
    with (tmp_path / METRICS_FILE).open("a") as handle:
        handle.write('{"step": 10, "loss": 0.')  # torn line: the worker died mid-write

    with MetricsLogger(tmp_path, rank=0, start_step=6) as resumed:  # checkpoint at step 6
        _log_steps(resumed, range(6, 12), "resumed")

    rows = read_metrics(tmp_path / METRICS_FILE)
    assert [row["step"] for row in rows] == list(range(12))
    assert {row["run"] for row in rows if row["step"] >= 6} == {"resumed"}
    assert rows[3]["loss"] == pytest.approx(0.25)  # tensors were written as numbers
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert all(json.loads(line) for line in lines), "a torn line survived the resume"


def test_only_rank_zero_writes_and_outside_ray_it_says_why(tmp_path, caplog, monkeypatch):
    import ray

    # Outside Ray, whatever other test tiers left initialised in this pytest process.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with MetricsLogger(tmp_path / "r1", rank=1) as other:
        other.log(0, {"loss": 1.0})
    assert not (tmp_path / "r1").exists()

    with caplog.at_level(logging.INFO, logger="trainer.run_outputs.monitoring"):
        logger = MetricsLogger(tmp_path / "r0", rank=0)
    assert not logger.publishes_to_ray
    assert "metrics.jsonl only" in caplog.text
    logger.close()


def test_progress_line_follows_the_metrics_file(tmp_path):
    path = tmp_path / METRICS_FILE
    stream = io.StringIO()
    follower = MetricsFollower(path, ProgressLine(total_steps=20, file=stream), poll_s=60)
    assert follower.poll() == 0  # no file yet
    with MetricsLogger(tmp_path) as logger:
        _log_steps(logger, range(5), "a")
        assert follower.poll() == 5
        assert follower.progress.step == 5
        _log_steps(logger, range(5, 8), "a")
    follower.stop()
    assert follower.progress.step == 8
    assert "loss=0.125" in stream.getvalue()
    assert format_postfix({"loss": 0.5, "reward_mean": float("nan"), "x": 1}) == "loss=0.5"


def test_sample_grid_png_has_cells_and_labels(tmp_path):
    images = torch.zeros(2, 3, 3, 8, 8)
    images[1, 2, 0] = 1.0  # row 1 ("prompt b"), column 2 ("4 steps") is pure red
    path = save_sample_grid(
        images, ["prompt a", "prompt b"], step_labels(), tmp_path / "g.png", cell_size=32
    )
    grid = Image.open(path).convert("RGB")
    label_width, header, pad, cell = 220, 28, 4, 32
    assert grid.size == (label_width + 3 * (cell + pad) + pad, header + 2 * (cell + pad) + pad)
    red_center = (label_width + pad + 2 * (cell + pad) + cell // 2, header + pad + cell + pad + 16)
    assert grid.getpixel(red_center) == (255, 0, 0)
    assert grid.getpixel((red_center[0] - cell - pad, red_center[1])) == (0, 0, 0)
    header_strip = grid.crop((label_width, 0, grid.size[0], header))
    assert header_strip.getextrema()[0][0] < 128, "column labels were not drawn"
    with pytest.raises(ValueError, match="one label per row"):
        save_sample_grid(images, ["only one"], step_labels(), tmp_path / "bad.png")


def test_sample_grid_images_match_the_exported_lcm_pipeline():
    """Grid samples (trainer.lcd sampler) equal diffusers' LCM pipeline from the same noise."""
    parts = tiny_sd_components("v_prediction")
    teacher = TeacherParts(
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        prediction_type="v_prediction",
        alphas_cumprod=parts["noise_scheduler"].alphas_cumprod.float(),
    )
    target = tiny_unet(seed=5, time_cond_proj_dim=256)
    prompts = ["a red circle", "a blue square"]
    grid = sample_grid_images(target, teacher, prompts, steps=(1, 4), w=6.5, seed=3)
    assert grid.shape == (2, 2, 3, 16, 16)

    pipe = build_lcm_pipeline(target, parts)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    for column, steps in enumerate((1, 4)):
        expected = pipe(
            prompts,
            num_inference_steps=steps,
            guidance_scale=7.5,
            latents=noise,
            generator=torch.Generator().manual_seed(4),
            output_type="pt",
        ).images
        torch.testing.assert_close(grid[:, column], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(grid[:, 0], grid[:, 1])


def test_report_summarises_metrics_and_config_diff(tmp_path):
    rows = [
        {
            "step": s,
            "loss": 1.0 - 0.1 * s,
            "lcd_loss": 0.5,
            "reward_mean": 0.1 * s,
            SKIPPED_REWARD_UPDATES: int(s in (2, 5, 6)),
            "time_teacher": 0.2,
            "time_data": 12.0 if s == 0 else 0.1,  # the first step waits for data
        }
        for s in range(8)
    ]
    summary = summarize_metrics(rows, last_n=2)
    assert summary["num_steps"] == 8 and summary["last_step"] == 7
    assert summary["final"]["loss"] == pytest.approx((0.4 + 0.3) / 2)
    assert summary["counters"][SKIPPED_REWARD_UPDATES] == 3
    assert summary["timing_median_s"] == pytest.approx({"teacher": 0.2, "data": 0.1})

    defaults = {"lcd": {"lr": 1e-6, "max_steps": 100}, "reward": {"beta": 0.0}}
    config = {"lcd": {"lr": 1e-6, "max_steps": 40}, "reward": {"beta": 5.0}}
    assert config_diff(config, defaults) == [("lcd.max_steps", 100, 40), ("reward.beta", 0.0, 5.0)]

    path = write_run_report(
        tmp_path,
        config,
        summary,
        defaults=defaults,
        extra={"pipeline": tmp_path / "pipeline", "grids": ["a.png", "b.png"]},
    )
    text = Path(path).read_text()
    assert "| `lcd.max_steps` | 100 | 40 |" in text
    assert "Skipped reward updates: 3" in text
    assert "| `reward_mean` | 0.65 |" in text
    assert f"`{tmp_path / 'pipeline'}`" in text and "  - `b.png`" in text

    no_skips = summarize_metrics([{"step": 0, "loss": 1.0}])
    assert (
        "Skipped reward updates: not recorded"
        in Path(write_run_report(tmp_path, config, no_skips, defaults=defaults)).read_text()
    )


def test_report_config_table_shows_changed_leaves_not_dicts(tmp_path):
    """List items are addressed by index, as overrides name them (serve.scorers.0.kind)."""
    from trainer.config import RGLCDConfig
    from trainer.run_outputs.report import ABSENT

    defaults = RGLCDConfig()
    assert [s.kind for s in defaults.serve.scorers] == ["toy-judge", "toy-clip"]
    config = RGLCDConfig.model_validate(
        {"serve": {"scorers": [{"name": "toy-clip", "kind": "toy-clip"}]}, "lcd": {"max_steps": 7}}
    )
    diff = {key: (default, value) for key, default, value in config_diff(config, defaults)}
    assert diff["lcd.max_steps"] == (600, 7)
    assert diff["serve.scorers.0.kind"] == ("toy-judge", "toy-clip")
    assert diff["serve.scorers.1.kind"] == ("toy-clip", ABSENT)
    assert not any(isinstance(v, (dict, list)) and v for pair in diff.values() for v in pair)
    text = Path(write_run_report(tmp_path, config, {}, defaults=defaults)).read_text()
    assert "| `serve.scorers.0.kind` | `toy-judge` | `toy-clip` |" in text
    assert "{'" not in text.split("## Configuration")[1]  # no dict with content in a cell


def test_metrics_in_a_non_local_store_are_staged_and_uploaded(tmp_path):
    """An object-store run (here fsspec's local:// scheme, not a local path to storage.py):
    lines go to a local staging file and are uploaded after each log; a resume continues
    the stored copy; the follower reads it through the store."""
    run = f"local://{tmp_path / 'run'}"
    with MetricsLogger(run, rank=0, publish_to_ray=False) as logger:
        for step in range(4):
            logger.log(step, {"loss": float(step)})
        assert len(read_metrics(f"{run}/{METRICS_FILE}")) == 4  # uploaded while running
    with MetricsLogger(run, rank=0, start_step=2, publish_to_ray=False) as resumed:
        resumed.log(2, {"loss": 9.0})
    rows = read_metrics(f"{run}/{METRICS_FILE}")
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["loss"] == 9.0
    stream = io.StringIO()
    follower = MetricsFollower(f"{run}/{METRICS_FILE}", ProgressLine(10, file=stream))
    assert follower.poll() == 3
