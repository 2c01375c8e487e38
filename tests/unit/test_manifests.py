"""Deployment files: the KubeRay RayJob, the Ray cluster launcher config and the Dockerfile.

No Kubernetes API server or Docker daemon here, so these tests check what those tools would
reject first: the RayJob against the fields the KubeRay `ray.io/v1` CRD requires, the launcher
config against the keys `ray up` requires, and the Dockerfile against the lint rules that
matter for it (pinned base tag, non-root user, project installed, no weights baked in).
They also check the pieces agree: one image everywhere, an existing recipe in the entrypoint,
and enough GPUs in the RayJob for that recipe's train workers plus its reward service.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from trainer.config import load_trainer_config

ROOT = Path(__file__).resolve().parents[2]
RAYJOB = ROOT / "orchestration" / "rayjob.yaml"
CLUSTER = ROOT / "orchestration" / "cluster.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _containers(group: dict) -> list[dict]:
    containers = group["template"]["spec"]["containers"]
    assert containers, "a pod template needs at least one container"
    for container in containers:
        assert container["name"] and container["image"]
    return containers


def _quantity(value) -> float:
    return float(str(value))


def test_rayjob_has_the_fields_the_kuberay_crd_requires(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", rayjob["metadata"]["name"])
    spec = rayjob["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "SidecarMode")
    assert isinstance(spec.get("shutdownAfterJobFinishes", False), bool)
    if "runtimeEnvYAML" in spec:
        assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)

    cluster_spec = spec["rayClusterSpec"]
    head = cluster_spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # map[string]string
    head_container = _containers(head)[0]
    ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert ports["dashboard"] == 8265  # `ray job submit` talks to the dashboard

    groups = cluster_spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names) and all(names)
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        resources = _containers(group)[0]["resources"]
        assert _quantity(resources["limits"][GPU]) >= 1
        # Kubernetes rejects extended resources whose request differs from the limit.
        assert resources["requests"].get(GPU, resources["limits"][GPU]) == resources["limits"][GPU]


def test_rayjob_runs_an_existing_recipe_with_enough_gpus(rayjob):
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["python", "trainer/run.py"]
    recipe = words[words.index("--config") + 1]
    overrides = [w for w in words[words.index("--config") + 2 :] if "=" in w]
    cfg = load_trainer_config(ROOT / recipe, overrides, check_paths=False)

    train_gpus = cfg.scaling.num_workers * (cfg.scaling.gpus_per_worker or 1)
    serve = cfg.serve
    serve_gpus = sum(s.num_gpus * s.num_replicas for s in serve.scorers) + sum(
        v.num_gpus * v.num_replicas for v in serve.vaes.values()
    )
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    per_pod = [_quantity(_containers(g)[0]["resources"]["limits"][GPU]) for g in groups]
    available = sum(n * g["replicas"] for n, g in zip(per_pod, groups, strict=True))
    assert cfg.scaling.use_gpu and available >= train_gpus + serve_gpus
    # Train workers are placed whole on one pod (one NCCL node) when a pod has enough GPUs.
    assert max(per_pod) >= train_gpus


def test_one_image_everywhere(rayjob, cluster):
    spec = rayjob["spec"]["rayClusterSpec"]
    images = {_containers(spec["headGroupSpec"])[0]["image"]}
    images |= {_containers(g)[0]["image"] for g in spec["workerGroupSpecs"]}
    images.add(cluster["docker"]["image"])
    assert len(images) == 1


def test_cluster_launcher_config_has_the_required_keys(cluster):
    assert re.fullmatch(r"[A-Za-z0-9-]+", cluster["cluster_name"])
    assert cluster["provider"]["type"] in ("aws", "gcp", "azure", "kuberay", "local")
    node_types = cluster["available_node_types"]
    assert cluster["head_node_type"] in node_types
    for name, node in node_types.items():
        assert "node_config" in node and "resources" in node, name
        if name != cluster["head_node_type"]:
            assert 0 <= node["min_workers"] <= node["max_workers"] <= cluster["max_workers"]
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=0.0.0.0" in head_start
    worker_start = " ".join(cluster["worker_start_ray_commands"])
    assert "--address=$RAY_HEAD_IP:6379" in worker_start
    assert any("pip install" in c for c in cluster["setup_commands"])  # installs the project


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def test_dockerfile_pins_the_base_runs_non_root_and_installs_the_project():
    instructions = _dockerfile_instructions()
    (base,) = [args for keyword, args in instructions if keyword == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "rayproject/ray" and tag and tag != "latest"
    ray_pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert tag.startswith(ray_pin.group(1)) and tag.endswith("-gpu")  # same Ray as the project

    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")  # hadolint DL3002
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"pip install --no-cache-dir (--no-deps )?\.(\s|$)", r) for r in runs)
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)  # hadolint DL3042
    assert not any(re.search(r"\b(sudo|curl|wget|huggingface-cli|hf download)\b", r) for r in runs)
    envs = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "HF_HOME=/home/ray/hf" in envs and "HF_HUB_OFFLINE=1" in envs
    assert any("/home/ray/hf" in args for keyword, args in instructions if keyword == "VOLUME")
    copies = [args for keyword, args in instructions if keyword in ("COPY", "ADD")]
    assert not any(re.search(r"\.(safetensors|ckpt|bin|pt)\b", c) for c in copies)
    assert not any(keyword == "ADD" for keyword, _ in instructions)  # hadolint DL3020
    copied = {c.split()[-2].rstrip("/") for c in copies}
    for package in ("rglcd", "trainer", "reward_service", "orchestration", "configs"):
        assert package in copied
