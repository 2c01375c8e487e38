"""The evaluation's driver loop without Ray: the chunks a generation actor would return are
made by the same EvalWorker in this process, so the streaming bookkeeping (images written as
made, per-row accumulators, FID from moments, grids, scores.jsonl) runs in the fast tier."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from orchestration.commands.evaluate import run_evaluation
from orchestration.evaluation import ray_tasks
from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.worker import EvalWorker
from rglcd.tiny_models import save_tiny_sd_pipeline, tiny_sd_components, tiny_unet
from tests.unit.test_eval_metrics import save_random_miniclip
from trainer.run_outputs.export import export_pipeline


def in_process_chunks(cfg, jobs, reference_size):
    worker = EvalWorker(cfg.model_dump(mode="json"), reference_size, "cpu", 1)
    for job in jobs:
        yield getattr(worker, job[0])(*job[1:])


@pytest.fixture()
def no_ray(monkeypatch):
    monkeypatch.setattr(ray_tasks, "stream_chunks", in_process_chunks)


def test_streamed_evaluation_writes_images_scores_and_figures(no_ray, tmp_path):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    export_pipeline(tiny_unet(seed=5, time_cond_proj_dim=256), tiny_sd_components(),
                    tmp_path / "lcm")
    colours = ["red", "green", "blue", "yellow", "purple"]
    (tmp_path / "prompts.txt").write_text("\n".join(
        f"a large {c} circle on a white background" for c in colours))
    config = {
        "models": [{"name": "teacher", "kind": "teacher", "path": str(teacher), "steps": [1]},
                   {"name": "lcm", "kind": "lcm", "path": str(tmp_path / "lcm"), "steps": [1]}],
        "prompts": str(tmp_path / "prompts.txt"), "seeds": [0, 1],
        "generation": {"batch_size": 3},  # chunks cut across seeds and rows
        "scoring": {"mode": "in-process", "scorers": [{"name": "judge", "kind": "toy-judge"}]},
        "reference": {"source": "toy:validation", "num_images": 7},
        "fid": {"miniclip_dir": str(save_random_miniclip(tmp_path / "mc"))},
        "output": {"dir": str(tmp_path / "out"), "grid_prompts": 2},
    }
    results, _ = run_evaluation(EvalConfig.model_validate(config))  # no ray.init here
    assert results.meta["errors"] == []
    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    assert data["num_reference"] == 7
    assert data["reference_flat_noise"] < 1  # toy renders are flat fills: clean scenes read ~0
    for row in data["rows"]:
        assert row["scores"]["judge"]["n"] == 10 and row["scores"]["judge"]["missing"] == 0
        assert math.isfinite(row["fid"]) and row["hf_noise_ratio"] > 0
        # the untrained tiny pipelines' samples are noisy: far above the clean scenes
        assert row["flat_noise"] > data["reference_flat_noise"] + 1
        assert 0 <= row["flat_noise_skipped"] < 10  # images without a flat pixel, left out
    table = (out / "table.md").read_text()
    assert "| FID | HF-noise ratio | Flat-region noise |" in table
    assert f"Reference images: {data['reference_flat_noise']:.2f}." in table
    lines = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and all((out / x["image"]).is_file() for x in lines)
    assert lines[7]["image"] == "images/teacher@1/seed1/all/00002.jpg"
    assert (out / "grid_seed0.png").is_file() and (out / "grid_seed1.png").is_file()


@pytest.fixture(scope="module")
def sdxl_setup(tmp_path_factory):
    """A tiny SDXL teacher, LCM-LoRA adapters (random, non-zero) as a LoRA run exports them,
    and the same adapters fused into an exported pipeline."""
    from diffusers import StableDiffusionXLPipeline

    from rglcd.tiny_models import save_tiny_sdxl_pipeline
    from trainer.config import LoRAConfig
    from trainer.lcd.lora import add_lora_adapters, lora_parameters
    from trainer.run_outputs.export import export_fused_lora_pipeline, export_lora_adapters

    root = tmp_path_factory.mktemp("eval-sdxl")
    teacher = save_tiny_sdxl_pipeline(root / "teacher")
    unet = StableDiffusionXLPipeline.from_pretrained(teacher).unet
    add_lora_adapters(unet, 4, 4.0, LoRAConfig().target_modules)
    torch.manual_seed(0)
    for param in lora_parameters(unet):
        param.data.normal_(0, 0.1)  # lora_B starts at zero: give the adapters an effect
    adapters = export_lora_adapters(unet, root / "lora", "sdxl")
    fused = export_fused_lora_pipeline(adapters, teacher, root / "fused", "sdxl")
    return root, teacher, adapters, fused


def test_sdxl_teacher_and_lcm_lora_evaluate_fused_or_as_adapters(no_ray, sdxl_setup):
    from diffusers import DiffusionPipeline, LCMScheduler

    root, teacher, adapters, fused = sdxl_setup
    assert isinstance(DiffusionPipeline.from_pretrained(fused).scheduler, LCMScheduler)
    (root / "prompts.txt").write_text("a large red circle on a blue background\n" * 2)
    config = {
        "models": [
            {"name": "sdxl", "kind": "teacher", "path": str(teacher), "steps": [2],
             "sampler": "dpmsolver++"},
            {"name": "lora-fused", "kind": "lcm-lora", "path": str(fused), "steps": [2]},
            {"name": "lora-adapters", "kind": "lcm-lora", "path": str(teacher),
             "adapters": str(adapters), "steps": [2]},
        ],
        "prompts": str(root / "prompts.txt"),
        "generation": {"batch_size": 4, "num_cpus_per_task": 2},
        "scoring": {"mode": "in-process",
                    "scorers": [{"name": "toy-judge", "kind": "toy-judge"}]},
        "reference": {"source": None},
        "output": {"dir": str(root / "out"), "image_format": "png"},
    }
    run_evaluation(EvalConfig.model_validate(config))
    rows = {r["label"]: r for r in json.loads((root / "out" / "results.json").read_text())["rows"]}
    assert rows["sdxl@2"]["unet_calls"] == 4 and rows["lora-fused@2"]["unet_calls"] == 2
    fused_image, adapter_image = (
        np.asarray(Image.open(root / "out" / "images" / f"{row}@2" / "seed0" / "all" / "00001.png"))
        for row in ("lora-fused", "lora-adapters"))
    assert fused_image.shape == (16, 16, 3)
    # the same weights, fused at export or at load: the same images (up to rounding)
    assert np.abs(fused_image.astype(int) - adapter_image.astype(int)).max() <= 2
    assert "LCM-LoRA, CFG 1" in (root / "out" / "table.md").read_text()


def test_evaluation_reads_and_writes_object_storage(no_ray, tmp_path, monkeypatch):
    from orchestration.cluster_rehearsal.object_store import ObjectStore
    from rglcd import storage

    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    (tmp_path / "prompts.txt").write_text("a large red circle on a blue background\n")
    with ObjectStore("rglcd-eval") as store:
        for key, value in store.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("RGLCD_CACHE_DIR", str(tmp_path / "cache"))
        storage.upload_dir(teacher, "s3://rglcd-eval/models/teacher")
        storage.upload_file(tmp_path / "prompts.txt", "s3://rglcd-eval/prompts.txt")
        config = {
            "models": [{"name": "teacher", "kind": "teacher", "steps": [1],
                        "path": "s3://rglcd-eval/models/teacher"}],
            "prompts": "s3://rglcd-eval/prompts.txt", "seeds": [0, 1],
            "scoring": {"mode": "in-process",
                        "scorers": [{"name": "judge", "kind": "toy-judge"}]},
            "reference": {"source": None}, "output": {"dir": "s3://rglcd-eval/eval"},
        }
        _, files = run_evaluation(EvalConfig.model_validate(config))
        assert files["table"] == "s3://rglcd-eval/eval/table.md"
        lines = storage.read_text("s3://rglcd-eval/eval/scores.jsonl").splitlines()
        assert len(lines) == 2
        assert storage.is_file("s3://rglcd-eval/eval/" + json.loads(lines[1])["image"])
