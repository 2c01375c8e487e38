"""The reward service as a Ray Serve application: FastAPI ingress + batched scorers + VAEs.

Run it with `python -m reward_service` (local) or `serve deploy orchestration/serve_config.yaml`
(existing cluster; import path `reward_service.app:app_builder`). HTTP API (bodies in
reward_service/schemas.py):

  POST /score   {"model", "prompts", "images" | "latents"} -> {"model", "scores", "details"}
  GET  /models  scorers (kind, differentiable, input size, batch settings) and VAEs
  GET  /healthz liveness (no auth)

Per-item failures are answered 200 with `scores[i] = null` and `details[i]["error"]` (e.g.
latents that decode to NaN pixels). Request-level errors are JSON `{"detail": "..."}`:
401 missing/wrong bearer token (only when `serve.auth_token_env` is set), 404 unknown model
or VAE, 413 body, item count, prompt length, pixels of one image or of the whole request, or
latent size over the limits (reward_service/limits.py, checked before the work they guard),
422 malformed body / mismatched lengths / undecodable image / too thin an image / bad latents,
503 scorer queue full or a replica lost (with Retry-After), 504 no answer within
`serve.request_timeout_s` (latent decoding and scoring together). User text quoted in errors
is cut short. Nothing on the HTTP path is unpickled: images are PNG/JPEG and latents
safetensors/.npy (rglcd/codecs.py).
"""

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import time
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from reward_service.config import ServeConfig
from reward_service.deployments import ScorerDeployment, ScorerFactory, VaeDeployment
from reward_service.limits import (
    Limits,
    check_items,
    check_json_depth,
    check_latent_request,
    check_prompts,
    decode_images,
    echo,
)
from reward_service.metrics import IngressMetrics
from reward_service.scaling import replica_options
from reward_service.schemas import (
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    ScoreRequest,
    ScoreResponse,
)
from reward_service.scorers.base import ItemScore
from reward_service.scorers.registry import describe_scorer
from rglcd import codecs
from rglcd.codecs import PayloadTooLargeError
from rglcd.configuration import load_config
from rglcd.toy.paths import TOY_PIPELINE

INGRESS_NAME = "ingress"

# No /docs, /redoc or /openapi.json: they would answer without the bearer token.
fastapi_app = FastAPI(
    title="RG-LCD reward service", docs_url=None, redoc_url=None, openapi_url=None
)


def scorer_deployment_name(model: str) -> str:
    return f"scorer-{model}"


def vae_deployment_name(vae: str) -> str:
    return f"vae-{vae}"


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return echo("invalid request body: " + "; ".join(parts), 1000)


def _response(model: str, items: list[ItemScore]) -> ScoreResponse:
    details = [
        {**item.details, "error": echo(item.error, 500)} if item.error else dict(item.details)
        for item in items
    ]
    return ScoreResponse(model=model, scores=[item.score for item in items], details=details)


async def _await(response: Any) -> Any:
    return await response


def _parse(body: bytes, limits: Limits) -> ScoreRequest:
    """JSON body -> ScoreRequest: its nesting depth is checked before it is parsed, the item
    count before the items are validated."""
    check_json_depth(body)  # ValueError: 422
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPException(422, f"invalid request body: not JSON ({echo(str(err))})") from None
    if isinstance(raw, dict) and isinstance(raw.get("prompts"), list):
        check_items(len(raw["prompts"]), limits)
    try:
        return ScoreRequest.model_validate(raw)
    except ValidationError as err:
        raise HTTPException(422, _validation_message(err)) from None


def _backend_error(model: str, err: BaseException) -> HTTPException:
    """An exception from a scorer or VAE replica -> the HTTP error a client can act on."""
    if isinstance(err, BackPressureError):
        return HTTPException(503, f"model {model!r} is overloaded; retry later",
                             headers={"Retry-After": "1"})
    cause = err.cause if isinstance(err, RayTaskError) else err
    if isinstance(cause, PayloadTooLargeError):
        return HTTPException(413, echo(str(cause), 500))
    if isinstance(cause, ValueError):
        return HTTPException(422, echo(str(cause), 500))
    if isinstance(cause, TimeoutError):
        return HTTPException(504, f"model {model!r}: {echo(str(cause))}")
    if isinstance(err, RayError) and not isinstance(err, RayTaskError):
        # A replica died or is restarting (Serve replaces it): the request may be resent.
        return HTTPException(503, f"model {model!r} lost a replica ({type(err).__name__}); "
                             "retry shortly", headers={"Retry-After": "2"})
    return HTTPException(500, f"model {model!r} failed: {type(cause).__name__}: "
                         f"{echo(str(cause))}")


# Everything the ingress uses must be defined above it: `serve.ingress` pickles the class.
@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(fastapi_app)
class RewardIngress:
    """HTTP front: auth, size limits, decoding, routing to scorer/VAE deployments."""

    def __init__(
        self,
        config: dict,
        scorers: dict[str, DeploymentHandle],
        vaes: dict[str, DeploymentHandle],
        token_sha256: str | None = None,
    ) -> None:
        self.config = ServeConfig.model_validate(config)
        self.limits = Limits.from_config(self.config)
        self.scorers = scorers
        self.vaes = vaes
        self._token_sha256 = token_sha256
        self._vae_info: dict[str, dict] = {}
        self._model_info: dict[str, dict] = {}
        self._metrics = IngressMetrics()

    # ---------------------------------------------------------------- routes

    @fastapi_app.get("/healthz")
    def healthz(self) -> HealthResponse:
        return HealthResponse(status="ok", models=sorted(self.scorers))

    @fastapi_app.get("/models")
    async def models(self, request: Request) -> ModelsResponse:
        self._check_auth(request)
        infos = []
        for spec in self.config.scorers:
            if spec.name not in self._model_info:
                self._model_info[spec.name] = await self.scorers[spec.name].info.remote()
            info = self._model_info[spec.name]
            infos.append(
                ModelInfo(
                    name=spec.name,
                    kind=spec.kind,
                    differentiable=info["differentiable"],
                    input_size=info["input_size"],
                    max_batch_size=spec.max_batch_size,
                    batch_wait_timeout_s=spec.batch_wait_timeout_s,
                    max_ongoing_requests=spec.ongoing_requests,
                    max_queued_requests=spec.max_queued_requests,
                    num_replicas=spec.num_replicas,
                )
            )
        return ModelsResponse(models=infos, vaes=sorted(self.vaes))

    @fastapi_app.post("/score")
    async def score(self, request: Request) -> ScoreResponse:
        start, model, status = time.perf_counter(), "?", 500
        try:
            self._check_auth(request)
            parsed = _parse(await self._read_body(request), self.limits)
            model = parsed.model if parsed.model in self.scorers else "?"
            response = await self._score(parsed, time.time() + self.config.request_timeout_s)
            status = 200
            return response
        except HTTPException as err:
            status = err.status_code
            raise
        except PayloadTooLargeError as err:
            status = 413
            raise HTTPException(413, echo(str(err), 500)) from None
        except ValueError as err:
            status = 422
            raise HTTPException(422, echo(str(err), 500)) from None
        except Exception as err:  # a JSON answer even for what nobody foresaw
            raise HTTPException(
                500, f"internal error: {type(err).__name__}: {echo(str(err))}"
            ) from None
        finally:
            self._metrics.observe(model, status, time.perf_counter() - start)

    # ---------------------------------------------------------------- checks

    def _check_auth(self, request: Request) -> None:
        if self._token_sha256 is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = _token_digest(token.strip()) if scheme.lower() == "bearer" else ""
        # Compare fixed-length digests in constant time (no length or prefix leak).
        if not hmac.compare_digest(given.encode(), self._token_sha256.encode()):
            raise HTTPException(
                401,
                "missing or wrong bearer token; send the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_request_bytes
        too_large = f"request body is larger than the limit of {limit} bytes; send fewer items"
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HTTPException(413, too_large)
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:  # Content-Length may be absent or wrong: count what arrives
                raise HTTPException(413, too_large)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_model(self, model: str) -> DeploymentHandle:
        if model not in self.scorers:
            available = ", ".join(sorted(self.scorers))
            raise HTTPException(404, f"unknown model {echo(model)!r}; available models: "
                                f"{available}")
        return self.scorers[model]

    # ---------------------------------------------------------------- scoring

    async def _score(self, req: ScoreRequest, deadline: float) -> ScoreResponse:
        """Decode and score `req` by `deadline` (time.time()): 504 past it, nothing left running
        for it but the chunk a VAE is decoding."""
        scorer = self._check_model(req.model)
        check_prompts(req.prompts, self.limits)
        timeout = self.config.request_timeout_s
        try:
            groups = await asyncio.wait_for(
                self._groups(req, deadline), timeout=max(deadline - time.time(), 0.0)
            )
            remaining = max(deadline - time.time(), 0.0)
            call = scorer.score_groups.remote(
                [(images, [req.prompts[i] for i in idx]) for idx, images in groups]
            )
            try:
                results = await asyncio.wait_for(_await(call), timeout=remaining)
            except asyncio.TimeoutError:
                call.cancel()
                raise
        except asyncio.TimeoutError:
            raise HTTPException(
                504, f"model {req.model!r} did not answer within {timeout} s"
            ) from None
        except (RayError, BackPressureError, TimeoutError) as err:
            raise _backend_error(req.model, err) from None
        items: list[ItemScore | None] = [None] * len(req.prompts)
        for (indices, _), result in zip(groups, results, strict=True):
            for i, item in zip(indices, result, strict=True):
                items[i] = item
        return _response(req.model, items)

    async def _groups(self, req: ScoreRequest, deadline: float) -> list[tuple[list[int], Any]]:
        """The request's images as (item indices, (n, 3, H, W) batch) groups of equal size."""
        if req.images is not None:
            return await asyncio.to_thread(decode_images, req.images, self.limits)
        return [(list(range(len(req.prompts))), await self._decode_latents(req, deadline))]

    async def _decode_latents(self, req: ScoreRequest, deadline: float) -> torch.Tensor:
        name = req.latents.vae
        if name not in self.vaes:
            available = ", ".join(sorted(self.vaes)) or "none configured"
            raise HTTPException(404, f"unknown vae {echo(name)!r}; available VAEs: {available}")
        latents = await asyncio.to_thread(codecs.decode_latents_b64, req.latents.data)
        if len(latents) != len(req.prompts):
            raise ValueError(f"got {len(latents)} latents but {len(req.prompts)} prompts; "
                             "send one prompt per latent")
        check_latent_request(tuple(latents.shape), await self._vae(name), self.limits, name)
        call = self.vaes[name].decode.remote(latents, deadline)
        try:
            return await call
        except asyncio.CancelledError:
            call.cancel()  # the request's deadline passed: stop the decode too
            raise

    async def _vae(self, name: str) -> dict:
        if name not in self._vae_info:
            self._vae_info[name] = await self.vaes[name].info.remote()
        return self._vae_info[name]


def build_app(
    config: ServeConfig, scorer_factory: ScorerFactory | None = None
) -> serve.Application:
    """The Serve application for `config` (`scorer_factory` replaces the registry, in tests)."""
    unset = sorted(name for name, spec in config.vaes.items() if spec.path is None)
    if unset:
        raise ValueError(
            f"serve.vaes {unset} have no path; load the config with load_serve_config or "
            "load_trainer_config (they fill in the teacher's VAE), or set serve.vaes.<name>.path"
        )
    token_sha256 = None
    if config.auth_token_env:
        token = os.environ.get(config.auth_token_env, "")
        if not token:
            raise ValueError(
                f"serve.auth_token_env={config.auth_token_env!r} but that environment variable "
                "is empty; export the token or unset serve.auth_token_env"
            )
        token_sha256 = _token_digest(token)  # only the digest reaches the cluster
    limits = dataclasses.asdict(Limits.from_config(config))  # plain dict: crosses to replicas
    scorers = {spec.name: _scorer_app(spec, scorer_factory, limits) for spec in config.scorers}
    vaes = {
        name: VaeDeployment.options(
            name=vae_deployment_name(name),
            **replica_options(spec),
            max_ongoing_requests=spec.max_ongoing_requests,
            max_queued_requests=spec.max_queued_requests,
            ray_actor_options=spec.actor_options(spec.num_cpus, spec.num_gpus),
        ).bind(spec.model_dump())
        for name, spec in config.vaes.items()
    }
    return RewardIngress.options(name=INGRESS_NAME).bind(
        config.model_dump(), scorers, vaes, token_sha256
    )


def _scorer_app(
    spec, scorer_factory: ScorerFactory | None, limits: dict
) -> serve.Application:
    actor_options: dict[str, Any] = spec.actor_options(spec.num_cpus, spec.num_gpus)
    if scorer_factory is None:
        runtime_env = describe_scorer(spec).runtime_env  # the scorer's isolated environment
        if runtime_env is not None:
            actor_options["runtime_env"] = runtime_env
    return ScorerDeployment.options(
        name=scorer_deployment_name(spec.name),
        **replica_options(spec),
        max_ongoing_requests=spec.ongoing_requests,
        max_queued_requests=spec.max_queued_requests,
        health_check_period_s=spec.health_check_period_s,
        ray_actor_options=actor_options,
    ).bind(spec.model_dump(), scorer_factory, limits)


class TeacherSource(BaseModel):
    """What the service reads of a trainer recipe's `model:` section: where the VAE is."""

    model_config = ConfigDict(extra="ignore")
    teacher: str | None = None
    vae: str | None = None


class ServeFile(BaseModel):
    """A config file as the service reads it: only its `serve:` section (strict) matters, so
    the trainer's full config file can be given too (its other sections are ignored)."""

    model_config = ConfigDict(extra="ignore")
    serve: ServeConfig = Field(default_factory=ServeConfig)
    model: TeacherSource = Field(default_factory=TeacherSource)

    @model_validator(mode="after")
    def _teacher_vae(self) -> "ServeFile":
        """VAEs without a path decode with the teacher's: the file's model.vae or
        model.teacher (a trainer recipe), else the toy world's teacher (the trainer's default)."""
        if self.model.vae is not None:
            self.serve.fill_vae_paths(self.model.vae, None)
        else:  # no recipe: the service's defaults are the toy world's
            self.serve.fill_vae_paths(self.model.teacher or TOY_PIPELINE, "vae")
        return self


def load_serve_config(path: str | None = None, overrides: list[str] | tuple = ()) -> ServeConfig:
    """ServeConfig from defaults, a YAML file's `serve:` section and `serve.key=value` overrides
    (rglcd/configuration.py rules; every problem raises ConfigError, a ValueError)."""
    return load_config(ServeFile, path, list(overrides)).serve


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Serve config-file entry point (`import_path: reward_service.app:app_builder`).

    `args` may hold `config_file` (YAML with a `serve:` section) and `overrides`
    (list of `serve.key=value`).
    """
    args = dict(args or {})
    unknown = sorted(set(args) - {"config_file", "overrides"})
    if unknown:
        raise ValueError(f"unknown app args {unknown}; allowed: config_file, overrides")
    return build_app(load_serve_config(args.get("config_file"), args.get("overrides") or ()))
