"""A scripted engine for tests of code that drives engines (stages, caches, assets)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

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
