"""RG-LCD + LRM with the expert served by Ray Serve, on the shared cluster.

1. A 4-step TorchTrainer run in reward.mode=lrm: the trainer deploys the reward service
   (toy-judge expert + the tiny teacher's VAE), the LRM learns from the expert's asynchronous
   scores, and the final checkpoint holds an LRM whose trainable parts moved.
2. The service deleted mid-run: the hook keeps stepping, counts the skipped triplets, and its
   LRM updates resume once the app is deployed again.
Both use one app (`APP`): the run deploys it, the outage test finds it running, deletes it,
deploys it again and deletes it at the end (each deployment starts its replicas' processes).
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reward_service.client import RewardClient
from rglcd.tiny_models import save_tiny_sd_pipeline
from rglcd.toy.paths import TOY_LRM_DIR
from tests.helpers import toy_latent_shards
from trainer.config import load_trainer_config
from trainer.reward.hooks import RewardContext
from trainer.reward.lrm_hook import build_lrm_hook
from trainer.run import build_trainer, ensure_reward_service

CAPTION = "a large red circle on a blue background"
APP = "lrm-async"


@pytest.fixture(scope="module")
def lrm_inputs(ray_cluster, tmp_path_factory):
    from ray import serve

    root = tmp_path_factory.mktemp("lrm-async")
    teacher = save_tiny_sd_pipeline(root / "teacher")
    toy_latent_shards(root / "data", teacher, 16)  # the teacher's latents of 16 toy scenes
    yield root, teacher
    if APP in serve.status().applications:
        serve.delete(APP)


def lrm_config(root, teacher, port: int, run_name: str, overrides=()):
    recipe = {
        "serve": {
            "app_name": APP,
            "route_prefix": f"/{APP}",
            "port": port,
            "vaes": {"tiny": {"num_cpus": 0.25}},  # path: the teacher's VAE
            "scorers": [{"name": "toy-judge", "kind": "toy-judge", "num_cpus": 0.25}],
        }
    }
    path = root / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_trainer_config(
        path,
        [
            f"model.teacher={teacher}",
            "model.resolution=16",
            f"data.train_path={root / 'data'}",
            "lcd.global_batch_size=4",
            "reward.beta=1",
            "lrm.batch_size=2",
            "lrm.learning_rate=1e-3",
            "lrm.request_timeout_s=2",
            f"output.root_dir={root / 'out'}",
            f"run_name={run_name}",
            *overrides,
        ],
    )


def test_trainer_run_applies_async_lrm_updates(ray_cluster, serve_http_port, lrm_inputs):
    from ray import serve

    cfg = lrm_config(
        *lrm_inputs, serve_http_port, "lrm-train",
        ["lcd.max_steps=4", "lrm.max_staleness_steps=2", "output.log_every=1",
         "output.sample_every=0", "output.checkpoint_every=0"],
    )
    assert APP not in serve.status().applications
    assert ensure_reward_service(cfg) == APP  # deployed here; the next test reuses it
    build_trainer(cfg).fit()
    metrics = Path(cfg.output_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert sum(r["lrm_updates"] for r in rows) >= 3  # the final step drains the window
    assert rows[-1]["reward_inflight"] == 0
    assert all(r["reward_staleness_steps"] <= 2 for r in rows if "reward_staleness_steps" in r)
    checkpoint = max(p for p in Path(cfg.output_dir).glob("checkpoint_*") if p.is_dir())
    trained = load_file(checkpoint / "modules" / "lrm.safetensors")
    initial = load_file(TOY_LRM_DIR / "model.safetensors")
    moved = {k for k in initial if not torch.equal(trained[k].float(), initial[k].float())}
    assert "latent_projection.weight" in moved  # a trainable head
    assert not any(k.startswith("latent_tower.patch_embed") for k in moved)  # frozen stem
    assert (checkpoint / "optimizers" / "lrm_optimizer.pt").is_file()


def steps(hook, start: int, count: int) -> list[dict]:
    """`count` hook steps; each waits for its own request like a slow student step would."""
    rows = []
    for step in range(start, start + count):
        generator = torch.Generator().manual_seed(step)
        z0, online, target = torch.randn(3, 2, 4, 8, 8, generator=generator)
        rows.append(hook.after_step(RewardContext(z0, online, target, [CAPTION] * 2, step)))
        concurrent.futures.wait([r.future for r in hook.queue.pending], timeout=30)
    return rows


def test_service_deleted_mid_run_skips_then_resumes(ray_cluster, serve_http_port, lrm_inputs):
    from ray import serve

    cfg = lrm_config(*lrm_inputs, serve_http_port, "lrm-outage", ["lrm.max_staleness_steps=1"])
    ensure_reward_service(cfg)  # running since the test above, or deployed now
    hook = build_lrm_hook(cfg, torch.device("cpu"), RewardClient(APP, 2.0, 0))
    try:
        before = steps(hook, 0, 3)
        assert sum(r["lrm_updates"] for r in before) == 2
        assert sum(r["reward_updates_skipped"] for r in before) == 0

        serve.delete(APP)
        during = steps(hook, 3, 3)  # step 3 still learns from step 2's answer (sent before)
        assert [r["lrm_updates"] for r in during] == [1, 0, 0]
        # A failed call is skipped at the first collect after it fails: the step that sent it
        # (a handle that already knows the app is gone fails at once) or the next one. Of the
        # 3 requests sent in the outage (2 triplets each) the first two are skipped by step 5.
        skipped = [r["reward_updates_skipped"] for r in during]
        assert all(n % 2 == 0 for n in skipped) and 4 <= sum(skipped) <= 6, skipped

        ensure_reward_service(cfg)
        after = steps(hook, 6, 4)
        assert sum(r["lrm_updates"] for r in after) >= 2
        assert hook.skipped_total >= 6  # every triplet sent in the outage was counted
    finally:
        hook.queue.close()
