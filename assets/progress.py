"""A compact progress display for command-line runs: one line per step and per check.

Dagster's own console logger prints every engine event; this one prints what a person
follows (which asset runs, how long it took, each check's verdict) and the assets' own
log messages. Long computations inside a step draw their own tqdm bars.
"""

from __future__ import annotations

import logging
import sys
import time

import dagster as dg


def root_cause(error) -> str:
    """The message of the innermost cause of a Dagster error (the user's exception)."""
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip() if error is not None else "unknown error"


class _ProgressHandler(logging.Handler):
    def __init__(self, total: int, stream=None):
        super().__init__(level=logging.DEBUG)
        self.total = total
        self.started = 0
        self.stream = stream or sys.stderr
        self.t0: dict[str, float] = {}

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None:
            if record.levelno >= logging.INFO and "orig_message" in meta:
                self._say(f"    {meta['orig_message']}")
            return
        kind, step = event.event_type_value, event.step_key
        data = event.event_specific_data
        if kind == "STEP_START":
            self.started += 1
            self.t0[step] = time.perf_counter()
            self._say(f"[{self.started}/{self.total}] {step} ...")
        elif kind == "STEP_SUCCESS":
            seconds = time.perf_counter() - self.t0.get(step, time.perf_counter())
            self._say(f"[{self.started}/{self.total}] {step} done in {seconds:.1f}s")
        elif kind == "ASSET_CHECK_EVALUATION":
            verdict = "passed" if data.passed else "FAILED"
            self._say(f"    check {data.asset_check_key.name}: {verdict}")
        elif kind == "STEP_FAILURE":
            self._say(f"[{self.started}/{self.total}] {step} FAILED: {root_cause(data.error)}")
        elif kind == "STEP_SKIPPED":
            self._say(f"    {step} skipped (an upstream step or blocking check failed)")


@dg.logger(
    config_schema={"total_steps": dg.Field(int, default_value=0)},
    description="One line per step and check (used by `neggen materialize`).",
)
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("neggen.progress", level=logging.DEBUG)
    logger.addHandler(_ProgressHandler(init_context.logger_config["total_steps"]))
    return logger
