"""Judges: an OpenAI-compatible HTTP endpoint or a local transformers model, behind one cache of judgments.

Why plain `httpx` and not the `openai` client: the protocol used is one POST (`/chat/completions`) and one GET
(`/models`); httpx is a small, well-kept client (the `judge` extra; huggingface_hub 1.x also brings it), and owning
the retry loop lets us retry exactly what should be retried and count every call (the resume test relies on that).

What judges and networks do, and what happens:
- 429, 5xx, timeouts, dropped connections: retried with exponential backoff and jitter (or the server's
  `Retry-After`), up to `max_retries` times; then the judgment is an *error*: counted, reported, not cached, and
  retried by the next run.
- other 4xx (bad key, unknown model, a prompt too long): not retried (the same request would fail again).
- an unreachable endpoint, a rejected key or an unknown model: found by `check()` before any answer is generated.
- a reply without a readable rating: cached as it is (the judge's verdict, repeatable at temperature 0) and
  counted as *unparsed*.

The cache is an SQLite file keyed by sha256(judge identity, messages): the judge identity is the backend, the
model and the sampling settings, not the URL, so the same model behind another endpoint reuses its judgments.
Every judgment is committed as soon as it arrives, so a killed run loses at most the requests in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Messages = tuple[dict[str, str], ...] | list[dict[str, str]]


def import_httpx():
    """httpx, or one message saying which extra brings it (huggingface_hub 2.x no longer does)."""
    try:
        import httpx
    except ImportError:
        raise ImportError("wonton-hf eval-chat needs httpx: pip install 'wonton_hf[judge]'") from None
    return httpx


class JudgeError(RuntimeError):
    """A judgment that could not be obtained (after retries where they make sense)."""


class JudgeUnavailable(ValueError):
    """The judge cannot be used at all (unreachable, key rejected, model unknown): raised before any work."""


class Judge(Protocol):
    name: str
    """for reports: the judge model"""
    concurrency: int
    """how many judgments may be requested at once"""
    calls: int
    """requests sent to the judge (attempts, retries included)"""

    def identity(self) -> dict[str, Any]: ...

    def check(self) -> None: ...

    def complete(self, messages: Messages) -> str: ...


# ---------------------------------------------------------------- HTTP (OpenAI-compatible)


@dataclass
class OpenAICompatibleJudge:
    """A chat-completions endpoint: OpenAI, vLLM, TGI, llama.cpp's server, LiteLLM, ...

    `api_key` defaults to the environment variable `api_key_env` (OPENAI_API_KEY); endpoints that need no key
    (a local vLLM) accept any.
    """

    base_url: str
    model: str
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 2048
    timeout: float = 120.0
    max_retries: int = 6
    backoff: float = 1.0
    """first retry delay in seconds; doubled each retry (plus up to 25% jitter), capped at `max_backoff`"""
    max_backoff: float = 60.0
    concurrency: int = 8
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.api_key is None:
            self.api_key = os.environ.get(self.api_key_env)

    @property
    def name(self) -> str:
        return self.model

    def identity(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def client(self):
        httpx = import_httpx()

        if self._client is None:
            logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per judgment
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            limits = httpx.Limits(max_connections=max(self.concurrency, 1))
            self._client = httpx.Client(headers=headers, timeout=self.timeout, limits=limits)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def check(self) -> None:
        """One GET /models: the endpoint answers, accepts the key and (if it lists models) serves `model`."""
        httpx = import_httpx()

        url = f"{self.base_url}/models"
        try:
            response = self.client().get(url, timeout=min(self.timeout, 30.0))
        except httpx.HTTPError as error:
            raise JudgeUnavailable(
                f"The judge at {self.base_url} is unreachable ({type(error).__name__}: {error}); nothing was "
                "generated. Check --judge-url (an OpenAI-compatible base URL ending in /v1) and the network."
            ) from None
        if response.status_code in (401, 403):
            raise JudgeUnavailable(
                f"The judge at {self.base_url} rejected the API key (HTTP {response.status_code}); set "
                f"{self.api_key_env} (or --judge-api-key-env) to a valid key."
            )
        if response.status_code == 404:  # some servers do not list models; the first judgment will tell
            return
        if response.status_code >= 400:
            raise JudgeUnavailable(f"The judge at {url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            served = [m.get("id") for m in response.json().get("data", [])]
        except (ValueError, AttributeError):
            return
        if served and self.model not in served:
            raise JudgeUnavailable(
                f"The judge at {self.base_url} does not serve model {self.model!r}; it serves: {', '.join(map(str, served))}."
            )

    def complete(self, messages: Messages) -> str:
        httpx = import_httpx()

        payload = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last, retry_after = "no attempt", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, last, retry_after))
                retry_after = None
            with self._lock:
                self.calls += 1
            try:
                response = self.client().post(f"{self.base_url}/chat/completions", json=payload)
            except httpx.TimeoutException as error:
                last = f"timeout ({type(error).__name__})"
                continue
            except httpx.TransportError as error:
                last = f"connection error ({type(error).__name__}: {error})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                retry_after = response.headers.get("retry-after")
                continue
            if response.status_code >= 400:
                raise JudgeError(f"HTTP {response.status_code} from the judge: {response.text[:300]}")
            try:
                return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"a malformed response body ({response.text[:100]!r})"
                continue
        raise JudgeError(f"gave up after {self.max_retries + 1} attempts; last: {last}")

    def _delay(self, attempt: int, last: str, retry_after: str | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (1 + 0.25 * random.random())
        if retry_after:
            try:
                delay = min(self.max_backoff, max(delay, float(retry_after)))
            except ValueError:
                pass
        logger.debug("judge: %s; retrying in %.2f s", last, delay)
        return delay


# ---------------------------------------------------------------- local transformers model


@dataclass
class TransformersJudge:
    """A local judge model (a save_pretrained directory or a hub id), greedy decoding, one judgment at a time.

    Its chat template renders the messages when it has one; otherwise they are joined as plain text.
    """

    model_path: str
    max_new_tokens: int = 512
    device: str | None = None
    trust_remote_code: bool = False
    concurrency: int = 1
    calls: int = 0
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return Path(self.model_path).name if Path(self.model_path).exists() else self.model_path

    def identity(self) -> dict[str, Any]:
        return {"backend": "transformers", "model": self.name, "max_new_tokens": self.max_new_tokens, "greedy": True}

    def check(self) -> None:
        from ...remote_code import check_remote_code

        if self.model_path.startswith(("/", "./", "../", "~")) and not Path(self.model_path).expanduser().is_dir():
            raise JudgeUnavailable(f"Judge model directory {self.model_path} does not exist.")
        try:
            check_remote_code(self.model_path, self.trust_remote_code, flag="--trust-remote-code")
        except FileNotFoundError as error:
            raise JudgeUnavailable(f"Cannot load the judge model: {error}") from None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from .generate import load_model

            self._loaded = load_model(self.model_path, self.device, self.trust_remote_code)
        return self._loaded

    def complete(self, messages: Messages) -> str:
        import torch

        with self._lock:
            self.calls += 1
            model, tokenizer = self._load()
            if tokenizer.chat_template:
                ids = tokenizer.apply_chat_template(
                    list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
                )["input_ids"]
            else:
                text = "\n\n".join(m["content"] for m in messages) + "\n\n"
                ids = tokenizer(text, return_tensors="pt")["input_ids"]
            limit = getattr(model.config, "max_position_embeddings", None)
            if limit is not None and ids.shape[1] + self.max_new_tokens > limit:
                ids = ids[:, -(limit - self.max_new_tokens) :]  # keep the end: the answer and the rating request
            ids = ids.to(model.device)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id
                    if tokenizer.pad_token_id is not None
                    else tokenizer.eos_token_id,
                )
            return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


# ---------------------------------------------------------------- cache


def cache_key(judge_identity: dict[str, Any], messages: Messages) -> str:
    blob = json.dumps({"judge": judge_identity, "messages": list(messages)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgmentCache:
    """Judge replies in SQLite, keyed by `cache_key`; safe from several threads; committed on every write."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, judge TEXT, messages TEXT, reply TEXT, "
            "created REAL)"
        )
        self._db.commit()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM judgments WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, judge: dict[str, Any], messages: Messages, reply: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?)",
                (
                    key,
                    json.dumps(judge, sort_keys=True),
                    json.dumps(list(messages), ensure_ascii=False),
                    reply,
                    time.time(),
                ),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = [
    "Judge",
    "JudgeError",
    "JudgeUnavailable",
    "JudgmentCache",
    "OpenAICompatibleJudge",
    "TransformersJudge",
    "cache_key",
]
