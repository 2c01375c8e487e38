"""The exported pipeline folder loads in a fresh process and samples in 1, 2 and 4 steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from rglcd.tiny_models import save_tiny_sd_pipeline, tiny_sd_components, tiny_unet
from trainer.run_outputs.export import export_pipeline, lcm_scheduler_from_teacher

# Runs in a fresh interpreter: nothing from this test process (imports, registered classes,
# in-memory objects) can help the folder load.
FRESH_PROCESS_CHECK = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from diffusers import DiffusionPipeline
    results = {}
    for folder in sys.argv[1:]:
        pipe = DiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        entry = {
            "pipeline": type(pipe).__name__,
            "scheduler": type(pipe.scheduler).__name__,
            "prediction_type": pipe.scheduler.config.prediction_type,
            "original_inference_steps": pipe.scheduler.config.original_inference_steps,
            "safety_checker": pipe.safety_checker is None,
        }
        for steps in (1, 2, 4):
            gen = torch.Generator().manual_seed(0)
            out = pipe("a small red circle", num_inference_steps=steps, guidance_scale=8.5,
                       generator=gen, output_type="pt")
            images = out.images
            entry[f"steps_{steps}"] = {
                "timesteps": pipe.scheduler.timesteps.tolist(),
                "shape": list(images.shape),
                "finite": bool(torch.isfinite(images).all()),
                "min": float(images.min()), "max": float(images.max()),
                "mean": float(images.mean()),
            }
        other_w = pipe("a small red circle", num_inference_steps=1, guidance_scale=2.0,
                       generator=torch.Generator().manual_seed(0), output_type="pt").images
        entry["guidance_changes_output"] = float(other_w.mean()) != entry["steps_1"]["mean"]
        results[folder] = entry
    print("RESULT " + json.dumps(results))
    """
)



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Epsilon teacher exported from its folder, v-prediction teacher from a components dict."""
    root = tmp_path_factory.mktemp("export")
    eps_teacher = save_tiny_sd_pipeline(root / "teacher_eps", prediction_type="epsilon")
    target_eps = tiny_unet(seed=3, time_cond_proj_dim=256)
    target_v = tiny_unet(seed=4, time_cond_proj_dim=256)
    eps_out = export_pipeline(target_eps, eps_teacher, root / "eps", "epsilon")
    v_out = export_pipeline(
        target_v, tiny_sd_components("v_prediction"), root / "v", "v_prediction", 50
    )
    return {"epsilon": (eps_out, target_eps), "v_prediction": (v_out, target_v)}


@pytest.mark.slow  # a fresh interpreter imports diffusers: tens of seconds on two cores
def test_export_loads_and_samples_in_a_fresh_process(exported):
    folders = [str(exported[kind][0]) for kind in ("epsilon", "v_prediction")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CHECK, *folders],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    results = json.loads(line.removeprefix("RESULT "))

    expected_timesteps = {1: [999], 2: [999, 499], 4: [999, 759, 499, 259]}  # docs/method.md §4
    for kind, folder in zip(("epsilon", "v_prediction"), folders, strict=True):
        entry = results[folder]
        assert entry["pipeline"] == "LatentConsistencyModelPipeline"
        assert entry["scheduler"] == "LCMScheduler"
        assert entry["prediction_type"] == kind
        assert entry["original_inference_steps"] == 50
        assert entry["safety_checker"]
        assert entry["guidance_changes_output"], "the w-embedding does not reach the UNet"
        for steps, timesteps in expected_timesteps.items():
            sample = entry[f"steps_{steps}"]
            assert sample["timesteps"] == timesteps
            assert sample["shape"] == [1, 3, 16, 16]
            assert sample["finite"] and 0.0 <= sample["min"] <= sample["max"] <= 1.0


def test_exported_unet_is_the_target(exported):
    folder, target = exported["v_prediction"]
    saved = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    for key, value in target.state_dict().items():
        assert torch.equal(saved[key], value), key
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert config["time_cond_proj_dim"] == 256


def test_prediction_type_must_match_the_teacher():
    teacher = tiny_sd_components("v_prediction")
    with pytest.raises(ValueError, match="teacher scheduler's 'v_prediction'"):
        lcm_scheduler_from_teacher(dict(teacher["scheduler"].config), "epsilon")
    assert lcm_scheduler_from_teacher(dict(teacher["scheduler"].config)).config.prediction_type == (
        "v_prediction"
    )


def test_unet_without_guidance_embedding_is_refused(tmp_path):
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        export_pipeline(tiny_unet(), tiny_sd_components("epsilon"), tmp_path / "out")
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        export_pipeline(tiny_unet(time_cond_proj_dim=256), tmp_path / "nowhere", tmp_path / "o")
