"""Deployment files: the KubeRay RayJob, the Ray cluster launcher config, the Serve config and
the Dockerfile.

No Kubernetes API server or Docker daemon here, so each manifest goes through the validator
the real tool runs first: `ray up`'s `prepare_config` + `validate_config` for the launcher
config, the KubeRay `RayJob` CRD's OpenAPI schema (tests/data/kuberay, with unknown fields
rejected as `kubectl apply --validate=strict` does) for the RayJob, and Serve's
`ServeDeploySchema` (what `serve deploy` parses) for the Serve config. A parametrised test
breaks one field at a time and sees the matching validator fail. The Dockerfile is checked
against the lint rules that matter for it (pinned base tag, non-root user, project installed,
no weights baked in). Further tests check the pieces agree: one image everywhere, an existing
recipe in the entrypoint, and enough GPUs in the RayJob for that recipe's train workers plus
its reward service.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from trainer.cluster.placement import gpu_placement_problem
from trainer.config import load_trainer_config

ROOT = Path(__file__).resolve().parents[2]
RAYJOB = ROOT / "orchestration" / "rayjob.yaml"
CLUSTER = ROOT / "orchestration" / "cluster.yaml"
SERVE_CONFIG = ROOT / "orchestration" / "serve_config.yaml"
RAYJOB_CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
GPU = "nvidia.com/gpu"


def _load(path: Path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 1.4 MB of YAML
    return yaml.load(path.read_text(), Loader=loader)


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _load(RAYJOB)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return _load(CLUSTER)


@pytest.fixture(scope="module")
def serve_config() -> dict:
    return _load(SERVE_CONFIG)


def _strict(schema: dict) -> dict:
    """The schema with unknown fields made errors wherever the CRD does not keep them.

    The API server prunes unknown fields silently; `kubectl apply` (strict field validation,
    its default) rejects them, which is what catches a misspelt or too-new field.
    """
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(s) for name, s in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    return out


@pytest.fixture(scope="module")
def rayjob_validator() -> jsonschema.Draft4Validator:
    crd = _load(RAYJOB_CRD)
    assert crd["spec"]["names"]["kind"] == "RayJob"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    # CRD schemas are OpenAPI 3.0 (boolean exclusiveMinimum etc.): draft 4 semantics.
    return jsonschema.Draft4Validator(_strict(v1["schema"]["openAPIV3Schema"]))


def validate_rayjob(validator: jsonschema.Draft4Validator, doc: dict) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise jsonschema.ValidationError(
            "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        )
    # The metadata schema is a bare object; the API server checks the name (RFC 1123 label).
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), "bad name"


def validate_cluster(doc: dict) -> None:
    """What `ray up` runs before touching the cloud: fill the provider's defaults, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(doc)))


def validate_serve(doc: dict) -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(doc)


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _quantity(value) -> float:
    return float(str(value))


def test_rayjob_passes_the_kuberay_crd_schema(rayjob, rayjob_validator):
    validate_rayjob(rayjob_validator, rayjob)
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    cluster_spec = rayjob["spec"]["rayClusterSpec"]
    for group in [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        # Ray's object store and NCCL live in /dev/shm, 64 MiB in a container without a volume.
        shm = {
            m["name"]
            for c in pod["containers"]
            for m in c["volumeMounts"]
            if m["mountPath"] == "/dev/shm"
        }
        assert any(v["name"] in shm and v["emptyDir"]["medium"] == "Memory" for v in pod["volumes"])
        for container in pod["containers"]:
            # Kubernetes rejects extended resources whose request differs from the limit.
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert requests.get(GPU) == limits.get(GPU)
    assert rayjob["spec"]["ttlSecondsAfterFinished"] <= 300  # GPUs are not held after the job


def test_cluster_config_passes_ray_ups_validator(cluster):
    validate_cluster(cluster)
    # The working tree is synced to every node: never the virtual environment or outputs.
    assert {".venv", "outputs"} <= set(cluster["rsync_exclude"])
    assert ".gitignore" in cluster["rsync_filter"]
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in head_start  # `ray job submit` talks to the dashboard


def test_serve_config_passes_serve_deploy_schema(serve_config):
    validate_serve(serve_config)
    (app,) = serve_config["applications"]
    assert app["import_path"] == "reward_service.app:app_builder"


def _break(doc: dict, path: str, value) -> dict:
    """A deep copy of `doc` with the field at dotted `path` set to `value` (list items by index)."""
    broken = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = broken
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return broken


WORKER = "spec.rayClusterSpec.workerGroupSpecs.0"
BROKEN_FIELDS = [
    # (manifest, dotted path, wrong value, what the validator must say)
    ("cluster", "sync_file_mounts_at_runtime", False, "Additional properties are not allowed"),
    ("cluster", "max_workers", -1, "less than the minimum"),
    ("cluster", "docker.run_options", "--shm-size=32g", "is not of type 'array'"),
    ("cluster", "available_node_types.gpu_worker.min_workers", 3, "max_workers"),
    ("rayjob", "spec.backofLimit", 0, "Additional properties are not allowed"),
    ("rayjob", "spec.ttlSecondsAfterFinished", "1h", "is not of type 'integer'"),
    (
        "rayjob",
        "spec.rayClusterSpec.headGroupSpec.rayStartParams.num-gpus",
        0,
        "is not of type 'string'",
    ),
    ("rayjob", f"{WORKER}.replicas", "one", "is not of type 'integer'"),
    ("rayjob", f"{WORKER}.template.spec.containers.0.resources.limits.memory", [], "is not valid"),
    ("rayjob", f"{WORKER}.template.spec.volumes.1.emptyDir.sizeLimit", {"Gi": 64}, "is not valid"),
    ("serve", "proxy_location", "Everywhere", "proxy_location"),
    ("serve", "http_options.port", "eight thousand", "port"),
    ("serve", "applications.0.import_path", "app_builder", "import_path"),
    ("serve", "applications.0.runtime_env", "HF_HUB_OFFLINE=1", "runtime_env"),
]


@pytest.mark.parametrize(("manifest", "path", "value", "message"), BROKEN_FIELDS)
def test_a_broken_field_fails_its_validator(
    manifest, path, value, message, rayjob, cluster, serve_config, rayjob_validator
):
    docs = {"rayjob": rayjob, "cluster": cluster, "serve": serve_config}
    validate = {
        "rayjob": lambda doc: validate_rayjob(rayjob_validator, doc),
        "cluster": validate_cluster,
        "serve": validate_serve,
    }[manifest]
    with pytest.raises((jsonschema.ValidationError, ValueError)) as failure:
        validate(_break(docs[manifest], path, value))
    assert message in str(failure.value)


def test_rayjob_runs_an_existing_recipe_with_enough_gpus(rayjob):
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:2] == ["python", "trainer/run.py"]
    recipe = words[words.index("--config") + 1]
    overrides = [w for w in words[words.index("--config") + 2 :] if "=" in w]
    cfg = load_trainer_config(ROOT / recipe, overrides, check_paths=False)

    assert cfg.scaling.use_gpu
    spec = rayjob["spec"]["rayClusterSpec"]
    head_gpus = float(spec["headGroupSpec"]["rayStartParams"].get("num-gpus", 0))
    groups = spec["workerGroupSpecs"]
    pods = [_quantity(_containers(g)[0]["resources"]["limits"][GPU]) for g in groups]
    nodes = [head_gpus] + [
        n for n, g in zip(pods, groups, strict=True) for _ in range(g["replicas"])
    ]
    # The trainer's own check before Ray Train and Serve start (trainer/cluster/placement.py).
    assert gpu_placement_problem(cfg, nodes) is None
    assert sum(nodes) == 8  # the paper's 8 GPUs, no more
    fewer = sorted(nodes)[:-1] + [max(nodes) - 1]
    assert gpu_placement_problem(cfg, fewer) is not None  # one GPU less is too few


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_the_launcher_cluster_holds_every_recipe(cluster, recipe):
    """At min_workers (one p4de node, 8 GPUs), the GPU nodes hold the recipe's train workers
    plus its reward service."""
    gpu_nodes = cluster["available_node_types"]["gpu_worker"]["min_workers"]
    cfg = load_trainer_config(ROOT / "configs" / recipe, check_paths=False)
    assert gpu_placement_problem(cfg, [0.0] + [8.0] * gpu_nodes) is None


def test_one_image_everywhere(rayjob, cluster):
    spec = rayjob["spec"]["rayClusterSpec"]
    images = {_containers(spec["headGroupSpec"])[0]["image"]}
    images |= {_containers(g)[0]["image"] for g in spec["workerGroupSpecs"]}
    images.add(cluster["docker"]["image"])
    assert len(images) == 1


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
    # editable, as `make env`: python trainer/run.py and the entry points import the image's copy
    assert any(re.search(r"pip install --no-cache-dir --no-deps -e \.(\s|$)", r) for r in runs)
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


def test_dockerfile_bakes_imagerewards_own_environment():
    """The reward service's ImageReward deployment uses it instead of pip at deploy time."""
    from reward_service.scorers.imagereward import IMAGEREWARD_PYTHON_ENV, REQUIREMENTS

    instructions = _dockerfile_instructions()
    envs = " ".join(args for keyword, args in instructions if keyword == "ENV")
    python = re.search(rf"{IMAGEREWARD_PYTHON_ENV}=(\S+)", envs).group(1)
    venv = python.removesuffix("/bin/python")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    (build,) = [" ".join(r.split()) for r in runs if f"venv --system-site-packages {venv}" in r]
    requirements = REQUIREMENTS.relative_to(ROOT).as_posix()
    assert any(
        k == "COPY" and a.startswith(f"--chown=ray:users {requirements} ") for k, a in instructions
    )
    assert f"{venv}/bin/pip install --no-cache-dir -r /tmp/{REQUIREMENTS.name}" in build
    assert "import ImageReward" in build  # the build fails if the pins stop importing


def test_rayjob_writes_to_object_storage_and_retries(rayjob):
    """The pods share no writable disk: outputs go to a bucket whose credentials every pod
    gets from one Secret; a failed job is retried and lost workers restart."""
    words = shlex.split(rayjob["spec"]["entrypoint"])
    root = next(w.split("=", 1)[1] for w in words if w.startswith("output.root_dir="))
    assert root.startswith("s3://")
    spec = rayjob["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        container = _containers(group)[0]
        assert {"secretRef": {"name": "rglcd-storage"}} in container["envFrom"]
        assert all(m["mountPath"] != "/outputs" for m in container["volumeMounts"])
    assert rayjob["spec"]["backoffLimit"] > 0
    recipe = words[words.index("--config") + 1]
    assert load_trainer_config(ROOT / recipe, check_paths=False).scaling.max_failures > 0
