"""A small OpenAI-compatible chat-completions server, run as its own process, for the VLM judge.

    python -m orchestration.rehearsal.judge_server --port 0 [--model judge] [--latency-s 0.2]
        [--fail-on http500] [--malformed-on malformed] [--api-key-env JUDGE_KEY]

It prints `listening on http://127.0.0.1:<port>/v1` once it accepts connections (port 0 = a
free one) and serves until killed. It speaks the part of the API the vlm-judge scorer uses,
as vLLM / SGLang do: `GET /v1/models`, `POST /v1/chat/completions` with a text part and an
`image_url` data URL, optional `response_format={"type": "json_object"}`, bearer auth.
Answers are deterministic VIEScore JSON: the semantic-consistency call (its text holds
"Text prompt:") gets one score, the perceptual-quality call two, each from the SHA-256 of the
prompt text and image bytes, so one (prompt, image) always gets the same scores. Faults on
request, chosen by the request's text so each item's fate is fixed: HTTP 500 when it holds the
`--fail-on` word, prose instead of JSON when it holds the `--malformed-on` word; and a fixed
latency per request.
Bad requests get 400/401/404 with an OpenAI-style `{"error": {...}}` body. Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def judge_scores(text: str, image: bytes, count: int) -> list[int]:
    """`count` scores in 0..10, a pure function of the request's text and image bytes."""
    digest = hashlib.sha256(text.encode() + image).digest()
    return [digest[i] % 11 for i in range(count)]


def _image_bytes(url: str) -> bytes:
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("image_url must be a base64 data URL (data:image/...;base64,...)")
    return base64.b64decode(url.split(";base64,", 1)[1], validate=True)


def answer_content(body: dict, model: str) -> str:
    """The assistant message of a valid request (ValueError for a malformed one)."""
    if body.get("model") != model:
        raise ValueError(
            f"model {body.get('model')!r} is not served here; this server has {model!r}"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    parts = messages[-1].get("content")
    if not isinstance(parts, list):
        raise ValueError("the last message's content must be a list of parts")
    texts = [p["text"] for p in parts if p.get("type") == "text"]
    images = [_image_bytes(p["image_url"]["url"]) for p in parts if p.get("type") == "image_url"]
    if len(texts) != 1 or len(images) != 1:
        raise ValueError("expected one text part and one image_url part")
    is_sc = "Text prompt:" in texts[0]
    scores = judge_scores(texts[0], images[0], 1 if is_sc else 2)
    return json.dumps({"score": scores, "reasoning": "deterministic test judge"})


class JudgeState:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
        self.lock = threading.Lock()
        self.requests = 0

    def next_request(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests


def make_handler(state: JudgeState) -> type[BaseHTTPRequestHandler]:
    args = state.args

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_) -> None:  # keep the test's output clean
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind}})

        def _authorised(self) -> bool:
            if (
                state.api_key is None
                or self.headers.get("Authorization") == f"Bearer {state.api_key}"
            ):
                return True
            self._error(401, "missing or wrong bearer token", "authentication_error")
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/v1/models":
                return self._error(404, f"no route {self.path}", "not_found")
            if self._authorised():
                self._send(200, {"object": "list", "data": [{"id": args.model, "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}", "not_found")
            if not self._authorised():
                return
            number = state.next_request()
            time.sleep(args.latency_s)
            if args.fail_on and args.fail_on.encode() in raw:
                return self._error(500, "injected failure", "server_error")
            try:
                content = answer_content(json.loads(raw), args.model)
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                return self._error(400, str(err), "invalid_request_error")
            if args.malformed_on and args.malformed_on.encode() in raw:
                content = "I would give it a seven."
            message = {"role": "assistant", "content": content}
            self._send(
                200,
                {
                    "id": f"chatcmpl-{number}",
                    "object": "chat.completion",
                    "model": args.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                },
            )

    return Handler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--model", default="judge")
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--fail-on", default=None, help="HTTP 500 for requests with this text")
    parser.add_argument("--malformed-on", default=None, help="prose for requests with this text")
    parser.add_argument("--api-key-env", default=None, help="require this env var as bearer")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(JudgeState(args)))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
