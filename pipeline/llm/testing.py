"""Stand-ins for tests and benchmarks of code that drives engines: a scripted engine (stages,
caches, assets) and a real OpenAI-compatible HTTP server on 127.0.0.1 (the `openai` engine);
and a real `vllm serve` to start, kill and restart (`VLLMServer`, with vLLM installed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.llm.engines.base import Engine
from pipeline.llm.types import Request, Result


class ScriptedEngine(Engine):
    """Answers each request with `answer(request)`; an exception it raises becomes that
    request's error. Counts calls and requests; `delay_s` sleeps per request."""

    kind = "scripted"

    def __init__(self, answer: Callable[[Request], str], model: str = "scripted-v1", delay_s: float = 0.0):
        super().__init__(model)
        self.answer = answer
        self.delay_s = delay_s
        self.calls = 0
        self.requests: list[Request] = []

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        self.calls += 1
        results = []
        for request in requests:
            self.requests.append(request)
            if self.delay_s:
                time.sleep(self.delay_s)
            try:
                text = self.answer(request)
            except Exception as err:  # noqa: BLE001 - the script's failure is the request's error
                results.append(self._error(f"{type(err).__name__}: {err}"))
                continue
            results.append(Result(text=text, engine=self.kind, model=self.model, finish_reason="stop"))
        return results


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when many clients connect at once


class FakeServer:
    """An OpenAI chat-completions server on 127.0.0.1 whose behaviour a test scripts via `plan`.

    `plan(n, body, headers)` gets the 1-based request number and returns
    (status, reply dict or text, sleep seconds).
    """

    def __init__(self, plan):
        self.plan = plan
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.count += 1
                    n = server.count
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                try:
                    status, reply, sleep = server.plan(n, body, dict(self.headers))
                    if sleep:
                        time.sleep(sleep)
                    data = (json.dumps(reply) if isinstance(reply, dict) else str(reply)).encode()
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text: str, finish: str = "stop") -> dict:
    """A chat-completions reply carrying `text`."""
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """A real vLLM OpenAI-compatible server (`vllm serve`, run as its module entry point) on
    127.0.0.1, started as users start it, for the tests and benchmarks of the `openai` engine.

    `start()` waits until `/health` answers; `kill()` is `kill -9` of the server and the engine
    processes it spawned (its own session); `start()` again serves the same port. Each start logs
    to its own file under `log_dir`; `answered(i)` counts the chat completions start `i` answered
    (uvicorn's access log). `--enforce-eager`: no torch.compile, a start about 15 s shorter on CPU.
    `--no-enable-chunked-prefill`: vLLM 0.32 on CPU fails the engine when a seeded request's prompt
    is split over steps; `guidance`: llguidance enforces the structured mode's schemas, vLLM's
    default xgrammar drops their length bounds (both: see engines/vllm_engine.py).
    """

    def __init__(self, model: Path, log_dir: Path, name: str = "smollm2", max_model_len: int = 2048,
                 kv_cache_gib: int = 1):  # fmt: skip
        self.model, self.name, self.log_dir = Path(model), name, Path(log_dir)
        self.port = free_port()
        self.args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                     "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
                     "--max-model-len", str(max_model_len), "--seed", "0", "--enforce-eager",
                     "--no-enable-chunked-prefill", "--structured-outputs-config", '{"backend": "guidance"}']  # fmt: skip
        # vLLM's CPU build sizes its KV cache from this (else it reserves 90% of the RAM); no
        # usage statistics, nothing fetched from the Hub
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib)),
                    "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 600.0) -> float:
        """Start the server and wait until it is ready; returns the seconds that took."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"vllm-serve-{len(self.logs)}.log"
        self.logs.append(log)
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)  # fmt: skip
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - t0
            except OSError:  # not listening yet, or not ready
                pass
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"vllm serve not ready after {timeout_s:g}s:\n{log.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9 of the server's session: the API server and its engine processes."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Shut the server down as Ctrl-C would; kill -9 after 60 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def answered(self, start: int) -> int:
        """Chat completions that start `start` (0 = the first) answered with HTTP 200."""
        return self.logs[start].read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
