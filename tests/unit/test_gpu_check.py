"""rglcd-gpu-check (orchestration/commands/gpu_check.py): the same check on the CPU with tiny
step counts; no-CUDA message."""

from __future__ import annotations

import json

import pytest
import torch

from orchestration.commands import gpu_check


@pytest.mark.slow  # train steps of two tiny families and a scorer batch
def test_gpu_check_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "check.json"
    argv = ["--device", "cpu", "--steps", "2", "--batch", "2", "--scorer-batch", "2"]
    assert gpu_check.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = {row["part"]: row for row in json.loads(out.read_text())["results"]}
    assert set(results) == {"sd-v-lcd", "sdxl-lcd-lora", "scorer-clipscore"}
    for row in results.values():
        assert row["first_step_s"] > 0 and row["mean_step_s"] > 0
        assert row["max_memory_allocated_mib"] is None  # CUDA-only figure
        assert f"{row['part']}: first step" in printed
    for part in ("sd-v-lcd", "sdxl-lcd-lora"):
        assert len(results[part]["losses"]) == 2
    # LoRA trains a small fraction of what the full student does
    assert results["sdxl-lcd-lora"]["trainable_params"] < results["sd-v-lcd"]["trainable_params"]


def test_gpu_check_without_cuda_says_what_to_do(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--steps", "1"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_gpu_check_rejects_zero_steps():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "0"])
