"""Any OpenAI-compatible `/v1/chat/completions` server, over the standard library only.

`base_url` is one server, or a list of servers of the same model. Requests of a batch run on a
bounded thread pool: at most `max_concurrency` in flight per server. Each try of a request goes
to the server with the fewest requests in flight (ties in turn, so a batch reaches every
server), servers that failed recently last: a failed server is passed over while another one
works, for a cool-down that doubles with each failure in a row (from `backoff_s`, capped at
`backoff_max_s`, or its `Retry-After`), after which one request tries it again. A request
waits for a free slot rather than go to a server in cool-down while a working one is busy.

Each HTTP request has a deadline of `timeout_s` for the whole exchange, from connecting to the
last byte of the reply: a socket timeout alone bounds each read, so a server trickling its
reply a byte at a time could hold a request for ever; at the deadline the request's socket is
shut down. HTTP 429, 5xx, timeouts and dropped connections are retried: at once on another
server the request has not tried since its last backoff, and once every server has failed it,
after an exponential backoff (doubling from `backoff_s`, capped, with jitter; a `Retry-After`
header is honoured up to the cap), at most `max_retries` times. So one server that keeps
failing costs a request one extra try, not its answer, while another server works; with a
single server this is a plain retry with backoff. The error of a request that never got an
answer names each server's last failure. Other 4xx are final. Images are sent as base64
`data:` URIs in `image_url` parts. A request with a `response_schema` (the structured prompt
mode) asks for it as `response_format: {"type": "json_schema", ...}`, which vLLM's server
enforces by guided decoding (less `uniqueItems`, which vLLM refuses: see `server_schema`;
OpenAI's own API needs schemas its strict mode accepts; a server that refuses the field answers
400, which is that request's error). The reply's `usage` (prompt and completion tokens, which
vLLM's server and OpenAI's API send) goes into the result's token counts.

The cache fingerprint is the model name alone: moving the server (another host or port) or
adding servers does not throw away what the same model generated, and every server of a list
shares the same cache entries.

The API key is read from the environment variable named in the config when the engine is
built; it is only ever placed in the Authorization header (the same key for every server). It
is not in the engine's repr, in log records or in any error message (server replies are
scrubbed of it too).
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

from pipeline.config.generation import OpenAIEngineConfig
from pipeline.llm.engines.base import Engine, EngineUnavailable
from pipeline.llm.types import ImagePart, Message, Request, Result, TextPart

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
_MAX_ERROR_BODY = 300


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Final(Exception):
    pass


def message_payload(message: Message) -> dict:
    """One chat message in the OpenAI wire format (plain string content when text-only)."""
    if all(isinstance(p, TextPart) for p in message.content):
        return {"role": message.role, "content": message.text}
    content = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        else:
            content.append({"type": "image_url", "image_url": {"url": data_uri(part)}})
    return {"role": message.role, "content": content}


def server_schema(schema: dict) -> dict:
    """`schema` as a server's structured outputs take it: without `uniqueItems`, which vLLM's
    grammar backends (xgrammar, llguidance) refuse, so that `vllm serve` answers HTTP 400. Only
    the masking schema has it, and a word named twice masks the same word: the answer applies
    as it would without the repeat. The request keeps the whole schema (and its cache key)."""
    if isinstance(schema, dict):
        return {k: server_schema(v) for k, v in schema.items() if k != "uniqueItems"}
    if isinstance(schema, list):
        return [server_schema(v) for v in schema]
    return schema


def response_format(request: Request) -> dict:
    """The OpenAI `response_format` asking for JSON under the request's schema."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.template or "answer")[:64]
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": server_schema(request.response_schema), "strict": True}}  # fmt: skip


def data_uri(image: ImagePart) -> str:
    data = image.read_bytes()
    return f"data:{image.mime_type(data)};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAIEngine(Engine):
    kind = "openai"

    def __init__(self, config: OpenAIEngineConfig):
        super().__init__(config.model)
        self.config = config
        urls = [url.rstrip("/") + "/chat/completions" for url in config.base_urls]
        self._servers = _Servers(urls, config.max_concurrency, config.backoff_s, config.backoff_max_s)
        self.__key: str | None = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise EngineUnavailable(
                    f"openai engine: environment variable {config.api_key_env} (the API key) is not set"
                )
            self.__key = key
        self._pool = ThreadPoolExecutor(config.max_concurrency * len(urls), thread_name_prefix="neggen-openai")
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.config.base_url!r}, model={self.model!r})"

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        if self._closed:
            raise RuntimeError("openai engine is closed")
        return list(self._pool.map(self._generate_one, requests))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.shutdown(wait=True)

    # -- one request -------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self.__key:
            text = text.replace(self.__key, "***")
        return text

    def _body(self, request: Request) -> bytes:
        s = request.sampling
        payload = {
            "model": self.model,
            "messages": [message_payload(m) for m in request.messages],
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
        }
        if request.response_schema is not None:
            payload["response_format"] = response_format(request)
        return json.dumps(payload).encode("utf-8")

    def _generate_one(self, request: Request) -> Result:
        t0 = time.perf_counter()
        try:
            body = self._body(request)
        except OSError as err:
            return self._error(f"cannot read image: {err}", time.perf_counter() - t0, tries=0)
        cfg = self.config
        tries = retries = 0
        failed: dict[_Server, str] = {}  # the servers this request failed on since its last backoff
        while True:
            tries += 1
            try:
                with self._servers.slot(avoid=failed) as server:
                    reply = self._post(server.url, body)
                return Result(text=reply.text, engine=self.kind, model=self.model, finish_reason=reply.finish_reason,
                              latency_s=time.perf_counter() - t0, tries=tries, prompt_tokens=reply.prompt_tokens,
                              completion_tokens=reply.completion_tokens)  # fmt: skip
            except _Final as err:
                message = self._scrub(str(err))
                log.warning("openai request failed (no retry): %s", message)
                return self._error(message, time.perf_counter() - t0, tries)
            except _Retryable as err:
                message = self._scrub(str(err))
                failed[server] = message
                if len(failed) < len(self._servers):
                    log.info("openai request: %s; trying another server", message)
                    continue
                if retries >= cfg.max_retries:
                    every = "; ".join(failed.values())  # each server's last failure
                    log.warning("openai request failed after %d tries: %s", tries, every)
                    return self._error(f"{every} (after {tries} tries)", time.perf_counter() - t0, tries)
                retries += 1
                delay = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (retries - 1))
                delay *= 0.5 + random.random() / 2
                if err.retry_after is not None:
                    delay = min(cfg.backoff_max_s, max(delay, err.retry_after))
                log.info("openai request: %s; retry %d/%d in %.2fs", message, retries, cfg.max_retries, delay)
                time.sleep(delay)
                failed = {}

    def _post(self, url: str, body: bytes) -> _Reply:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        deadline = _Deadline(self.config.timeout_s)
        late = f"timed out: no complete reply within {self.config.timeout_s:g}s ({url})"
        try:
            try:
                with self._opener_until(deadline).open(req, timeout=self.config.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as err:
                detail = _read_error(err)
                message = f"HTTP {err.code} from {url}: {detail}"
                if err.code in RETRY_STATUS:
                    raise _Retryable(message, _retry_after(err.headers.get("Retry-After"))) from None
                raise _Final(message) from None
            except (TimeoutError, socket.timeout):
                raise _Retryable(f"timed out after {self.config.timeout_s:g}s ({url})") from None
            except urllib.error.URLError as err:
                if isinstance(err.reason, TimeoutError | socket.timeout):
                    raise _Retryable(f"timed out after {self.config.timeout_s:g}s ({url})") from None
                raise _Retryable(f"cannot reach {url}: {err.reason}") from None
            except (OSError, http.client.HTTPException) as err:
                raise _Retryable(f"connection to {url} failed: {type(err).__name__}: {err}") from None
        except (_Retryable, _Final):
            if deadline.expired:  # the error is the socket shut down at the deadline
                raise _Retryable(late) from None
            raise
        finally:
            deadline.cancel()
        if deadline.expired:  # a reply without a length ends early, without an error, when cut
            raise _Retryable(late)
        return _parse(raw, url)

    def _opener_until(self, deadline: _Deadline) -> urllib.request.OpenerDirector:
        """An opener whose connections `deadline` shuts down when it expires (it starts now)."""
        proxies = [] if self.config.use_env_proxy else [urllib.request.ProxyHandler({})]
        opener = urllib.request.build_opener(*proxies, _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
        deadline.start()
        return opener


class _Server:
    """One server: its chat-completions URL, its requests in flight, its failures in a row."""

    __slots__ = ("url", "position", "in_flight", "failures", "cool_until")

    def __init__(self, url: str, position: int):
        self.url, self.position = url, position
        self.in_flight = self.failures = 0
        self.cool_until = 0.0  # time.monotonic() before which the server is passed over


class _Servers:
    """Picks the server of each try (see the module docstring) and counts its slots."""

    def __init__(self, urls: Sequence[str], slots: int, cool_s: float, cool_max_s: float):
        self._servers = [_Server(url, i) for i, url in enumerate(urls)]
        self._slots, self._cool_s, self._cool_max_s = slots, cool_s, cool_max_s
        self._turn = 0  # breaks ties between equally busy servers in turn
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._servers)

    @contextmanager
    def slot(self, avoid: Collection[_Server]) -> Iterator[_Server]:
        """One try's slot on the best server outside `avoid` (one always remains), waiting for a
        free slot; a retryable failure of the try puts the server in cool-down."""
        server = self._acquire(avoid)
        failure = None
        try:
            yield server
        except _Retryable as err:
            failure = err
            raise
        finally:
            self._release(server, failure)

    def _acquire(self, avoid: Collection[_Server]) -> _Server:
        with self._changed:
            while True:
                now = time.monotonic()
                candidates = [s for s in self._servers if s not in avoid]
                working = [s for s in candidates if s.cool_until <= now]
                free = [s for s in working or candidates if s.in_flight < self._slots]
                if free:
                    n = len(self._servers)
                    server = min(free, key=lambda s: (s.in_flight, (s.position - self._turn) % n))
                    self._turn = server.position + 1
                    server.in_flight += 1
                    return server
                cooling = [s.cool_until - now for s in candidates if s.cool_until > now]
                self._changed.wait(timeout=min(cooling) if cooling else None)  # a slot frees or a cool-down ends

    def _release(self, server: _Server, failure: _Retryable | None) -> None:
        with self._changed:
            server.in_flight -= 1
            if failure is None:  # answered (an HTTP 400 too: then the request is at fault, not the server)
                server.failures, server.cool_until = 0, 0.0
            else:
                server.failures += 1
                cool = min(self._cool_max_s, self._cool_s * 2 ** (server.failures - 1))
                if failure.retry_after is not None:
                    cool = min(self._cool_max_s, max(cool, failure.retry_after))
                server.cool_until = time.monotonic() + cool
            self._changed.notify_all()


class _Deadline:
    """Shuts down the socket of one HTTP exchange when `seconds` have passed since `start()`."""

    def __init__(self, seconds: float):
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            if self.expired:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once
            except OSError:
                pass


def _connection_class(base: type[http.client.HTTPConnection], deadline: _Deadline):
    class _Connection(base):
        def connect(self):
            super().connect()
            deadline.attach(self.sock)

    return _Connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(_connection_class(http.client.HTTPConnection, self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(_connection_class(http.client.HTTPSConnection, self._deadline), req, context=self._context)


def _read_error(err: urllib.error.HTTPError) -> str:
    try:
        raw = err.read(_MAX_ERROR_BODY + 1)
    except (OSError, http.client.HTTPException):
        return err.reason or ""
    text = raw.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            text = str(parsed["error"].get("message", text))
    except ValueError:
        pass
    return (text[:_MAX_ERROR_BODY] + "...") if len(text) > _MAX_ERROR_BODY else (text or str(err.reason))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class _Reply(NamedTuple):
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def _token_count(usage, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _parse(raw: bytes, url: str) -> _Reply:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Final(f"{url}: reply is not a chat completion: {raw[:200]!r}") from None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        raise _Final(f"{url}: reply has no message content")
    usage = data.get("usage")  # optional in the protocol; a malformed one counts nothing
    return _Reply(str(content), choice.get("finish_reason"), _token_count(usage, "prompt_tokens"),
                  _token_count(usage, "completion_tokens"))
