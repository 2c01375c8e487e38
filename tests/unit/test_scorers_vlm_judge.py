"""vlm-judge against a fake OpenAI-compatible chat server on 127.0.0.1 (a real HTTP server)."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

from reward_service.config import ScorerConfig
from reward_service.scorers.registry import build_scorer, scorer_classes
from reward_service.scorers.vlm_judge import VlmJudgeOptions, parse_scores, viescore

SC_ANSWER = {"score": [8], "reasoning": "follows the prompt"}
PQ_ANSWER = {"score": [9, 6], "reasoning": "natural, some artifacts"}


class FakeJudge:
    """Answers chat completions by the prompt's keyword: ok / malformed / slow / http500."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def answer(self, body: dict) -> tuple[int, str]:
        text = body["messages"][0]["content"][0]["text"]
        is_sc = "Text prompt:" in text
        content = json.dumps(SC_ANSWER if is_sc else PQ_ANSWER)
        if is_sc and "malformed" in text:
            content = "I would say roughly a seven out of ten."
        if is_sc and "slow" in text:
            time.sleep(1.5)
        if is_sc and "http500" in text:
            return 500, '{"error": "model overloaded"}'
        if is_sc and "nocontent" in text:
            return 200, json.dumps({"choices": [{"message": {"content": None}}]})
        time.sleep(0.05)  # long enough for concurrent calls to overlap
        message = {"role": "assistant", "content": content}
        return 200, json.dumps({"choices": [{"message": message}]})

    def handler(self):
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append(body)
                    judge.headers.append(dict(self.headers))
                    judge.active += 1
                    judge.max_active = max(judge.max_active, judge.active)
                try:
                    status, payload = judge.answer(body)
                    data = payload.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left
                finally:
                    with judge.lock:
                        judge.active -= 1

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def judge_server(monkeypatch):
    judge = FakeJudge()
    server = ThreadingHTTPServer(("127.0.0.1", 0), judge.handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("FAKE_JUDGE_KEY", "secret-token")
    yield judge, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _scorer(base_url, **options):
    options = {"base_url": base_url, "model": "fake-vlm", "api_key_env": "FAKE_JUDGE_KEY",
               "timeout_s": 0.5, "max_concurrency": 2, "image_max_side": 16, **options}
    return build_scorer(ScorerConfig(name="judge", kind="vlm-judge", options=options))


def test_correct_answers_give_the_viescore_combination(judge_server):
    judge, url = judge_server
    scorer = _scorer(url)
    images = torch.rand(4, 3, 40, 24)
    items = scorer.score_items(images, [f"a cat number {i}" for i in range(4)])
    expected = math.sqrt(min(SC_ANSWER["score"]) * min(PQ_ANSWER["score"]))  # sqrt(8 * 6)
    assert [i.score for i in items] == pytest.approx([expected] * 4)
    assert items[0].details["SC"] == 8 and items[0].details["PQ"] == 6
    assert len(judge.requests) == 8  # two calls per image
    assert judge.max_active <= 2  # max_concurrency holds
    request = judge.requests[0]
    assert request["model"] == "fake-vlm" and request["temperature"] == 0
    assert judge.headers[0]["Authorization"] == "Bearer secret-token"
    url_part = request["messages"][0]["content"][1]["image_url"]["url"]
    assert url_part.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(url_part.split(",", 1)[1])))
    assert png.size == (10, 16)  # downscaled to image_max_side, aspect kept
    assert torch.allclose(scorer(images, ["a cat number 0"] * 4), torch.tensor([expected] * 4))


def test_malformed_answer_is_a_per_item_error_not_a_score(judge_server):
    _, url = judge_server
    scorer = _scorer(url)
    images = torch.rand(2, 3, 16, 16)
    items = scorer.score_items(images, ["a malformed dog", "a fine dog"])
    assert items[0].score is None and "no JSON object" in items[0].error
    assert items[1].score == pytest.approx(math.sqrt(48))
    with pytest.raises(RuntimeError, match="could not score 1 item"):
        scorer(images, ["a malformed dog", "a fine dog"])


def test_slow_server_times_out_and_http_errors_are_per_item(judge_server):
    _, url = judge_server
    scorer = _scorer(url)
    prompts = ["a slow fox", "an http500 fox", "a nocontent fox", "a quick fox"]
    items = scorer.score_items(torch.rand(4, 3, 16, 16), prompts)
    assert items[0].score is None and "timed out after 0.5 s" in items[0].error
    assert items[1].score is None and "HTTP 500" in items[1].error
    assert items[2].score is None and "not a chat completion" in items[2].error
    assert items[3].score == pytest.approx(math.sqrt(48))


def test_cache_avoids_a_second_call(judge_server):
    judge, url = judge_server
    scorer = _scorer(url)
    images = torch.rand(2, 3, 16, 16)
    first = scorer.score_items(images, ["a red kite", "a red kite"])
    calls = len(judge.requests)
    assert calls == 4 and scorer.calls_made == 4
    second = scorer.score_items(images, ["a red kite", "a red kite"])
    assert len(judge.requests) == calls  # served from the (prompt, image hash) cache
    assert [i.score for i in second] == [i.score for i in first]
    scorer.score_items(images[:1], ["another prompt"])
    assert len(judge.requests) == calls + 2  # a new prompt is a new key


def test_a_small_cache_still_answers_every_item(judge_server, monkeypatch):
    """Entries are read before the cache evicts, so a batch larger than the cache is whole."""
    import reward_service.scorers.vlm_judge as vlm

    monkeypatch.setattr(vlm, "RESULT_CACHE_SIZE", 2)
    scorer = _scorer(judge_server[1])
    items = scorer.score_items(torch.rand(4, 3, 16, 16), [f"kite {i}" for i in range(4)])
    assert [i.score for i in items] == [pytest.approx(math.sqrt(48))] * 4
    assert len(scorer._cache) == 2


def test_failures_are_not_cached(judge_server):
    judge, url = judge_server
    scorer = _scorer(url)
    image = torch.rand(1, 3, 16, 16)
    scorer.score_items(image, ["a malformed cloud"])
    scorer.score_items(image, ["a malformed cloud"])
    assert len(judge.requests) == 4


def test_parse_and_combine_are_strict():
    assert parse_scores('```json\n{"score": [7], "reasoning": "ok"}\n```', 1) == ([7.0], "ok")
    for bad in ['{"score": [11]}', '{"score": [3, 4]}', '{"score": "7"}', '{"score": [true]}',
                "{not json}", "seven"]:
        with pytest.raises(ValueError):
            parse_scores(bad, 1)
    assert viescore([8.0], [9.0, 6.0]) == (pytest.approx(math.sqrt(48)), 8.0, 6.0)
    assert viescore([0.0], [9.0, 6.0])[0] == 0.0


def test_options_are_validated(monkeypatch):
    monkeypatch.delenv("FAKE_JUDGE_KEY", raising=False)
    with pytest.raises(ValueError, match="FAKE_JUDGE_KEY"):
        _scorer("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="unknown options"):
        _scorer("http://127.0.0.1:9/v1", temperature=0.7)
    assert set(scorer_classes()["vlm-judge"].options) == set(VlmJudgeOptions.model_fields)
