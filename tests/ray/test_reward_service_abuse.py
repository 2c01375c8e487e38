"""Requests meant to exhaust or crash the reward service, against the real Serve app over HTTP.

Each case must get a clear 4xx (or 503 / 504 with a reason), never a bare 500; the service's
processes must not grow past MEMORY_BOUND_BYTES over all cases; nothing may be restarted by a
bad request; and a valid request must answer correctly afterwards. The shared scorer app
(tests/helpers/scorers.py) has small limits: 64x64 pixels an image, 8 such images a request.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import time

import httpx
import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from rglcd import codecs
from tests.helpers.scorers import APP, PREFIX, TOKEN

# Growth of any one service process (ingress, scorer or VAE replica) over all cases. Without
# the header-first checks, the first case alone would decode 8 x 16.7 M pixels (400 MB).
MEMORY_BOUND_BYTES = 150 * 1024 * 1024


@pytest.fixture(scope="module")
def client(scorer_app, serve_http_port):
    base = f"http://127.0.0.1:{serve_http_port}{PREFIX}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        yield http


def _replicas() -> dict[str, psutil.Process]:
    """Serve replica processes of the test app by deployment name (their process titles)."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if f"ServeReplica:{APP}:" in title:
            # The title is "ray::ServeReplica:<app>:<deployment>[.<method running>]".
            found[title.split(f"ServeReplica:{APP}:")[1].split()[0].split(".")[0]] = proc
    return found


def _rss(procs: dict[str, psutil.Process]) -> dict[str, int]:
    return {name: proc.memory_info().rss for name, proc in procs.items() if proc.is_running()}


def _png(width: int, height: int, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _npy_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return base64.b64encode(buffer.getvalue()).decode()


def _images(model: str, images: list[str], prompt: str = "red") -> dict:
    return {"model": model, "prompts": [prompt] * len(images), "images": images}


def _latents(data: str, count: int = 1) -> dict:
    return {"model": "color", "prompts": ["red"] * count, "latents": {"data": data, "vae": "tiny"}}


def _lying_npy() -> str:
    raw = base64.b64decode(_npy_b64(np.zeros((1, 4, 8, 8), dtype=np.float32)))
    start, end = raw.index(b"(1, 4, 8, 8), }"), raw.index(b"\n")
    raw = raw[:start] + b"(10000, 4, 1000, 1000), }".ljust(end - start) + raw[end:]
    return base64.b64encode(raw).decode()  # a header claiming 149 GiB


CASES = {
    "eight 1-bit 4096x4096 PNGs": (_images("color", [_png(4096, 4096, "1")] * 8), 413,
                                   "is 4096x4096"),
    "pixels summed over a request": (_images("color", [_png(64, 64)] * 9), 413,
                                     "pixels together, above the limit of 32768"),
    "a 1 x 16777216 PNG to a CLIP scorer": (_images("toy-clip", [_png(16_777_216, 1, "1")]), 413,
                                            "above the limit of 4096"),
    "a thin PNG to a CLIP scorer": (_images("toy-clip", [_png(300, 4)]), 422, "aspect ratio"),
    "latents larger than the VAE decodes": (
        _latents(codecs.encode_latents_b64(torch.zeros(1, 4, 64, 64))), 413, "larger than vae"),
    "npy header claiming 149 GiB": (_latents(_lying_npy()), 422, "header claims shape"),
    "float128 npy": (_latents(_npy_b64(np.zeros((1, 4, 8, 8), np.longdouble))), 422,
                     "float16, float32 or float64"),
    "a long prompt": ({**_images("color", [_png(8, 8)]), "prompts": ["z" * 5000]}, 413,
                      "5000 characters"),
    "a long unknown model name": (_images("m" * 100_000, [_png(8, 8)]), 404, "more characters"),
}


@pytest.fixture(scope="module")
def baseline_rss(client):
    client.post("/score", json=_images("color", [_png(16, 16)]))  # every lazy import done
    procs = _replicas()
    assert {"ingress", "scorer-color", "scorer-toy-clip", "vae-tiny"} <= set(procs), set(procs)
    return procs, _rss(procs)


@pytest.mark.parametrize("case", list(CASES))
def test_abusive_request_is_refused_with_a_reason(client, baseline_rss, case):
    body, status, fragment = CASES[case]
    response = client.post("/score", json=body)
    assert response.status_code == status, response.text[:500]
    detail = response.json()["detail"]
    assert fragment in detail and len(detail) < 1000 and " at 0x" not in detail


@pytest.mark.parametrize("depth", [3000, 90_000])  # the test app takes 200 kB bodies
def test_deeply_nested_body_is_refused_before_it_is_parsed(client, baseline_rss, depth):
    # Built by hand: a JSON encoder would itself recurse this deep.
    body = b'{"model": "color", "prompts": ' + b"[" * depth + b"]" * depth + b"}"
    response = client.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text[:500]
    assert "nested deeper than 32 levels" in response.json()["detail"]


def test_thin_images_never_restart_the_clip_replica(client, baseline_rss):
    before = _replicas()["scorer-toy-clip"].pid
    for _ in range(4):
        assert client.post("/score", json=_images("toy-clip", [_png(512, 8)])).status_code == 422
    assert _replicas()["scorer-toy-clip"].pid == before


def test_failing_batches_do_not_trip_the_health_check(client, baseline_rss):
    """Prompts that make the `color` scorer raise fail their items, not the replica: its
    health check (every second here) rescores its last good item and finds it working."""
    client.post("/score", json=_images("color", [_png(8, 8)]))  # a good item for the canary
    before = _replicas()["scorer-color"].pid
    for _ in range(4):
        response = client.post("/score", json=_images("color", [_png(8, 8)], "no colour named"))
        assert response.status_code == 200
        body = response.json()
        assert body["scores"] == [None] and "scorer failed" in body["details"][0]["error"]
    time.sleep(3.0)  # three health-check periods
    assert _replicas()["scorer-color"].pid == before
    assert client.post("/score", json=_images("color", [_png(8, 8)])).json()["scores"][0] is not None


def test_latents_that_decode_to_nan_are_null_items_not_errors(client, baseline_rss):
    latents = torch.zeros(2, 4, 8, 8)
    latents[1] = 1e38  # finite, but the decoder's arithmetic overflows to NaN
    response = client.post("/score", json=_latents(codecs.encode_latents_b64(latents), 2))
    assert response.status_code == 200, response.text
    scores, details = response.json()["scores"], response.json()["details"]
    assert scores[0] is not None and details[0] == {}
    assert scores[1] is None and "NaN or infinite" in details[1]["error"]


def test_many_distinct_sizes_take_one_place_in_the_queue(client, baseline_rss):
    """16 sizes used to be 16 scorer calls against 4 ongoing + 2 queued: 503 every time."""
    sizes = [(16 + i, 16 + (i * 3) % 11) for i in range(16)]
    response = client.post("/score", json=_images("toy-clip", [_png(w, h) for w, h in sizes]))
    assert response.status_code == 200, response.text[:500]
    assert all(isinstance(s, float) for s in response.json()["scores"])


def test_docs_and_schema_are_not_served(client):
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 404


def test_memory_of_the_service_stays_bounded(client, baseline_rss):
    procs, before = baseline_rss
    after = _rss(procs)
    assert {"ingress", "scorer-color", "scorer-toy-clip", "vae-tiny"} <= set(after)
    growth = {name: after[name] - before[name] for name in after}
    assert max(growth.values()) < MEMORY_BOUND_BYTES, growth


def test_killed_replica_answers_503_with_retry_after_then_recovers(client, baseline_rss):
    """SIGKILL of a replica (this test's own cluster) with 8 requests in flight."""
    body = _images("bright", [_png(8, 8)], "slow one")  # the bright scorer sleeps on "slow"

    async def in_flight() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers,
                                     timeout=60) as aclient:
            sent = [asyncio.create_task(aclient.post("/score", json=body)) for _ in range(8)]
            await asyncio.sleep(0.5)
            os.kill(_replicas()["scorer-bright"].pid, signal.SIGKILL)
            return await asyncio.gather(*sent)

    responses = asyncio.run(in_flight())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {503, 504}, [r.text[:300] for r in responses]
    assert 503 in statuses, statuses  # those in the dead replica are answered at once
    for response in responses:
        assert " at 0x" not in response.json()["detail"]
        if response.status_code == 503:
            assert response.headers.get("Retry-After")
    deadline = time.monotonic() + 180  # Serve replaces the replica
    while time.monotonic() < deadline:
        ok = client.post("/score", json=_images("bright", [_png(8, 8)], "a b"))
        if ok.status_code == 200:
            break
        time.sleep(1.0)
    assert ok.status_code == 200, ok.text


def test_valid_request_still_answers_correctly(client):
    image = torch.zeros(3, 16, 16)
    image[0] = 1.0
    body = {"model": "color", "prompts": ["red"], "images": [codecs.encode_image_b64(image)]}
    response = client.post("/score", json=body)
    assert response.status_code == 200 and response.json()["scores"] == [pytest.approx(1.0)]
