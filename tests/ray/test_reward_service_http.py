"""POST /score, GET /models and /healthz against a real `serve.run` on the shared cluster.

Every error case must come back with the right status and a helpful JSON `detail`, and the
service must answer a valid request correctly right after each one.
"""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import pytest
import torch
from PIL import Image

from reward_service.latents import LatentDecoder
from rglcd import codecs
from tests.helpers.scorers import PREFIX, TOKEN, ColorScorer


@pytest.fixture(scope="module")
def service(scorer_app, serve_http_port):
    """(client with the bearer token, the app's ServeConfig) for the shared scorer app."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=_base_url(serve_http_port), headers=headers, timeout=30) as client:
        yield client, scorer_app


def _base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{PREFIX}"


def _images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(n, 3, size, size)


def _quantised(images: torch.Tensor) -> torch.Tensor:
    return torch.round(images * 255) / 255


PROMPTS = ["a red circle", "a green square", "a blue cross"]


def _valid_body(model: str = "color") -> dict:
    images = _images(3)
    return {
        "model": model,
        "prompts": PROMPTS,
        "images": [codecs.encode_image_b64(img) for img in images],
    }


def _assert_still_serving(client: httpx.Client) -> None:
    response = client.post("/score", json=_valid_body())
    assert response.status_code == 200, response.text
    expected = ColorScorer("color")(_quantised(_images(3)), PROMPTS)
    assert response.json()["scores"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_scores_match_in_process_scorer_and_keep_request_order(service):
    client, _ = service
    images = _images(5, seed=1)
    prompts = ["red", "blue", "green", "blue", "red"]
    # Mixed sizes in one request are scored in groups and put back in request order.
    images_b64 = [codecs.encode_image_b64(img) for img in images]
    images_b64[2] = codecs.encode_image_b64(_images(1, size=24, seed=2)[0])
    body = {"model": "color", "prompts": prompts, "images": images_b64}
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    body = response.json()
    scorer = ColorScorer("color")
    expected = scorer(_quantised(images), prompts).tolist()
    expected[2] = float(scorer(_quantised(_images(1, size=24, seed=2)), ["green"])[0])
    assert body["model"] == "color"
    assert body["scores"] == pytest.approx(expected, abs=1e-6)
    assert body["details"] == [{}] * 5


def test_jpeg_images_are_accepted(service):
    client, _ = service
    image = torch.zeros(3, 16, 16)
    image[0] = 1.0
    jpeg = codecs.encode_image_b64(image, "JPEG")
    body = {"model": "color", "prompts": ["red"], "images": [jpeg]}
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["scores"][0] == pytest.approx(1.0, abs=0.02)


def test_latents_decode_with_configured_vae_and_score_like_the_decoded_image(service):
    client, config = service
    torch.manual_seed(3)
    latents = torch.randn(2, 4, 8, 8)
    decoded = LatentDecoder.from_config(config.vaes["tiny"]).decode(latents)  # (2, 3, 16, 16)
    expected = ColorScorer("color")(decoded, ["red", "blue"])
    for fmt in ("safetensors", "npy"):
        body = {
            "model": "color",
            "prompts": ["red", "blue"],
            "latents": {"data": codecs.encode_latents_b64(latents, fmt), "vae": "tiny"},
        }
        response = client.post("/score", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["scores"] == pytest.approx(expected.tolist(), abs=1e-5)


def test_per_item_errors_are_null_scores_with_a_reason(service):
    client, _ = service
    body = _valid_body("color")
    body["prompts"] = ["red", "unscorable", "blue"]
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    scores, details = response.json()["scores"], response.json()["details"]
    assert scores[1] is None and details[1] == {"error": "prompt names no colour"}
    assert scores[0] is not None and scores[2] is not None


def test_models_and_healthz(service, serve_http_port):
    client, _ = service
    models = client.get("/models")
    assert models.status_code == 200, models.text
    by_name = {m["name"]: m for m in models.json()["models"]}
    assert by_name["color"]["max_batch_size"] == 8
    assert by_name["color"]["differentiable"] is True and by_name["color"]["input_size"] == 16
    assert by_name["slow"]["max_queued_requests"] == 1
    assert models.json()["vaes"] == ["tiny"]
    health = httpx.get(_base_url(serve_http_port) + "/healthz")  # no token needed
    assert health.status_code == 200 and "color" in health.json()["models"]


def _png_of_size(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _latent_body(latents: torch.Tensor, prompts: list[str], vae: str = "tiny") -> dict:
    return {"model": "color", "prompts": prompts,
            "latents": {"data": codecs.encode_latents_b64(latents), "vae": vae}}


ERROR_CASES = {
    "not json": (b"{not json", 422, "invalid request body"),
    "missing prompts": ({"model": "color", "images": []}, 422, "prompts"),
    "both inputs": ({**_valid_body(), "latents": {"data": "", "vae": "tiny"}}, 422, "exactly one"),
    "unknown field": ({**_valid_body(), "extra": 1}, 422, "extra"),
    "length mismatch": ({**_valid_body(), "prompts": ["red"]}, 422, "3 images but 1 prompts"),
    "bad base64": ({**_valid_body(), "images": ["%%%"] * 3}, 422, "images[0] is not valid base64"),
    "not an image": (
        {**_valid_body(), "images": [base64.b64encode(b"hello").decode()] * 3},
        422, "could not be read as PNG or JPEG",
    ),
    "latent shape": (_latent_body(torch.randn(1, 3, 8, 8), ["red"]), 422, "expects [N, 4, H, W]"),
    "latent ndim": (_latent_body(torch.randn(4, 8, 8), ["red"]), 422, "[N, C, H, W]"),
    "latent nan": (_latent_body(torch.full((1, 4, 8, 8), float("nan")), ["red"]), 422, "NaN"),
    "latent count": (_latent_body(torch.randn(2, 4, 8, 8), ["red"]), 422, "2 latents but 1"),
    "unknown model": ({**_valid_body(), "model": "nope"}, 404, "available models: bright, color, slow, toy-clip, toy-judge"),
    "unknown vae": (_latent_body(torch.randn(1, 4, 8, 8), ["red"], "sd"), 404, "available VAEs"),
    "image pixels": (
        {**_valid_body(), "images": [_png_of_size(65, 64)] * 3}, 413, "above the limit"
    ),
    "latent pixels": (_latent_body(torch.randn(1, 4, 40, 40), ["red"]), 413, "larger than vae"),
    "too many items": (
        {**_valid_body(), "prompts": ["red"] * 17, "images": [_png_of_size(2, 2)] * 17},
        413, "17 items, above the limit of 16",
    ),
    "body too large": ({**_valid_body(), "prompts": ["x" * 300_000] * 3}, 413, "200000 bytes"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_cases_answer_json_detail_then_service_still_works(service, case):
    client, _ = service
    body, status, fragment = ERROR_CASES[case]
    if isinstance(body, bytes):
        response = client.post("/score", content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post("/score", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    _assert_still_serving(client)


def test_body_size_is_counted_without_content_length(service):
    client, _ = service

    def chunks():  # a generator body is sent chunked, with no Content-Length header
        yield b'{"model": "color", "prompts": ["' + b"x" * 250_000 + b'"]}'

    response = client.post("/score", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    _assert_still_serving(client)


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret-token", f"bearer{TOKEN}"])
def test_missing_or_wrong_token_is_401(service, serve_http_port, header):
    client, _ = service
    headers = {} if header is None else {"Authorization": header}
    base = _base_url(serve_http_port)
    response = httpx.post(base + "/score", json=_valid_body(), headers=headers)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]
    assert httpx.get(base + "/models", headers=headers).status_code == 401
    _assert_still_serving(client)


def test_overload_is_503_and_slow_scorer_times_out_with_504(service):
    """`slow`: 1 ongoing + 1 queued; the rest of 6 simultaneous requests are refused (503)."""
    client, _ = service
    body = _valid_body("slow")
    body["prompts"], body["images"] = body["prompts"][:1], body["images"][:1]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers,
                                     timeout=30) as aclient:
            return await asyncio.gather(*(aclient.post("/score", json=body) for _ in range(6)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(503) >= 3, statuses
    assert set(statuses) <= {503, 504}, statuses
    assert 504 in statuses  # the admitted ones exceed request_timeout_s = 1.5 s
    for response in responses:
        detail = response.json()["detail"]
        expected = "overloaded" if response.status_code == 503 else "within 1.5 s"
        assert expected in detail
    _assert_still_serving(client)


def test_toy_judge_over_http_matches_in_process(service):
    from reward_service.scorers.registry import build_scorer
    from rglcd.toy.scenes import render, sample_scenes

    client, config = service
    scenes = sample_scenes("train", 4, seed=7)
    images = torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1) for s in scenes]) / 255.0
    # Right captions, swapped captions, and one outside the toy grammar (a per-item error).
    prompts = [scenes[0].caption, scenes[1].caption, scenes[0].caption, "a photo of a dog"]
    body = {"model": "toy-judge", "prompts": prompts,
            "images": [codecs.encode_image_b64(img) for img in images]}
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    expected = build_scorer(config.scorer("toy-judge")).score_items(images, prompts)
    scores = response.json()["scores"]
    assert scores[:3] == pytest.approx([i.score for i in expected[:3]], abs=1e-6)
    assert scores[3] is None and expected[3].score is None
    assert "toy-judge" in response.json()["details"][3]["error"]
