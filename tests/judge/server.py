"""A small OpenAI-compatible judge for the tests: a real HTTP server on 127.0.0.1 speaking chat completions.

Its verdicts follow fixed rules (deterministic, so tests can recompute every rating), and it injects the faults
real judges and networks produce, also by fixed rules: 429s (with Retry-After), 500s, replies slower than the
client's timeout, and replies without a readable rating. Every request is logged for the tests to count.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "test-judge"
MALFORMED_MARKER = "Anna ist älter als Ben"
"""the German reasoning question of the sample set: the judge's replies about it carry no rating"""


def prompt_digest(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def judged_answer(user_text: str) -> str:
    """The answer being rated: the single-turn block, or the assistant's last turn in a conversation."""
    single = re.search(
        r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", user_text, re.S
    )
    if single:
        return single.group(1)
    turns = re.findall(r"### Assistant A:\n(.*?)\n\n(?=### User:|<\|The End)", user_text, re.S)
    return turns[-1] if turns else ""


def rule_rating(user_text: str) -> int:
    """The verdict: 1-10 from the answer's length, so tests recompute it from judgments.jsonl."""
    return 1 + len(judged_answer(user_text)) % 10


class FirstAttemptFaults:
    """First attempts only, by the order prompts arrive: of every 7 distinct prompts the 1st gets a 429, the 2nd a
    500 and the 4th a slow reply, so 7 or more prompts meet every kind. By order, not by a rule on the digest: the
    prompts hold what untrained models answer, which float rounding changes between machines, and a digest rule
    could then pick none of them."""

    PATTERN = {0: "429", 1: "500", 3: "slow"}

    def __init__(self) -> None:
        self.order: dict[str, int] = {}

    def __call__(self, digest: str, attempt: int) -> str | None:
        if attempt > 0:
            return None
        index = self.order.setdefault(digest, len(self.order))
        return self.PATTERN.get(index % 7)


@dataclass
class JudgeServer:
    fault: Callable[[str, int], str | None] = field(default_factory=FirstAttemptFaults)
    slow_seconds: float = 1.0
    delay: float = 0.0
    """seconds added to every reply (the resume test uses it to kill a run mid-way)"""
    api_key: str | None = None
    requests: list[dict] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> JudgeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def _authorised(self) -> bool:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, {"error": {"message": "bad key"}})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = body["messages"]
                digest = prompt_digest(messages)
                with server._lock:
                    attempt = server.attempts[digest]
                    server.attempts[digest] += 1
                    fault = server.fault(digest, attempt)
                    server.requests.append({"digest": digest, "attempt": attempt, "fault": fault})
                if server.delay:
                    time.sleep(server.delay)
                if fault == "429":
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                    return
                if fault == "500":
                    self._send(500, {"error": {"message": "overloaded"}})
                    return
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                user = messages[-1]["content"]
                if MALFORMED_MARKER in user:
                    text = "The answer is fine. Rating: excellent"
                else:
                    text = f"The answer is judged by length. Rating: [[{rule_rating(user)}]]"
                self._send(
                    200,
                    {
                        "id": "cmpl-test",
                        "object": "chat.completion",
                        "model": body.get("model", MODEL),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def completions(self) -> int:
        return len(self.requests)


def serve_forever(port_file: str, **kwargs) -> None:  # pragma: no cover - used by the resume test's subprocess
    server = JudgeServer(**kwargs).start()
    with open(port_file, "w") as f:
        f.write(server.url)
    while True:
        time.sleep(3600)
