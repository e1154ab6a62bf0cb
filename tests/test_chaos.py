"""Chaos test of the whole pipeline (marker `chaos`, opt-in: `pytest -m chaos tests/test_chaos.py`).

A small demo whose four generation stages are answered by a local OpenAI-compatible server (a
scripted model: valid, deterministic answers) is materialized three ways, each in its own home:

1. once without interruption, with `neggen materialize --dataset demo`;
2. the same command, killed with SIGKILL (its whole process group) at KILLS random moments
   spread over its generation, encoding and training steps, and restarted after each kill; the
   last restart runs to the end;
3. the data and generation assets once more, against the same model behind a server that fails
   FAILURE_RATE of the requests at random (HTTP 500).

Then every parquet table of runs 2 and 3 equals run 1's, row for row and in order, except the
columns that record how a run went (RUN_COLUMNS: timings, and whether a generation came from the
cache); the trained weights of run 2 equal run 1's. No finished item was lost or done again:
- generation: no request whose answer was in the generation cache at a kill reached the server
  after that kill (the server logs every request it answered; each answer names its request, so
  the cache's rows map back to the server's log), and every request answered once only, except
  those whose answer a kill lost before it was stored;
- encoding: every embedding stored before a kill is in the final cache as it was (computing it
  again would rewrite its row, with a new time);
- training: every epoch checkpointed before a kill has the same record at the end, its own
  timings included (training it again would record new ones).

Where the kills land: each step of the three groups gets its share of KILLS (in turn), and each
kill a random point of its step's progress as stored on disk (generations stored for that stage,
embeddings stored by that encoder, epochs checkpointed), drawn uniformly below the uninterrupted
run's total, plus a random fraction of the time one unit took there; a restart is killed once its
step is running and has got that far. Progress that was stored survives the kills, so the points
of one step are sorted and the kills move through it. The draws are seeded:
NEGGEN_CHAOS_SEED=<int> replays or varies them; the seed, the step each kill landed in and the
figures are printed (`-s` shows them).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas.testing
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from neggen_model.trainer import STATE_JSON
from pipeline.encoding import CACHE_FILE as EMBEDDING_FILE
from pipeline.encoding import CACHE_FOLDER as EMBEDDING_CACHE
from pipeline.generation import CACHE_FOLDER as GENERATION_CACHE
from pipeline.llm.cache import FILENAME as GENERATION_FILE
from pipeline.llm.stages import STAGE_OF_TABLE
from pipeline.llm.testing import FakeServer, completion
from tests.conftest import REPO

pytestmark = pytest.mark.chaos

SEED_ENV = "NEGGEN_CHAOS_SEED"
DEFAULT_SEED = 14
KILLS = {"generation": 7, "encoding": 7, "training": 6}
STEPS = {
    "generation": tuple(STAGE_OF_TABLE),
    "encoding": ("text_embeddings", "image_embeddings"),
    "training": ("base_model", "neggen_model"),
}
POLL_S = 0.05  # how often a restart's progress is read while waiting to kill it
FAILURE_RATE = 0.3
# Seconds the scripted model takes per answer: a few seconds of generation, so kills land in it.
ANSWER_S = 0.02
RUN_TIMEOUT_S = 300

# Columns that record how a run went rather than what it computed: the time a step, an epoch or
# a run took or finished at, and whether a generation was found in the cache (after a kill, the
# ones stored before it are).
RUN_COLUMNS = {"cache_hit", "seconds", "eval_seconds", "wall_seconds", "finished_at"}

# A demo small enough for one core: one NegGen run and no baseline grid; every one of the 30
# epochs runs (patience 30), so each training has 30 checkpoints to be killed between. The
# engines retry a failed request up to 20 times (0.3^21: never in practice), without waiting long.
CONFIG = """\
datasets:
  demo: {{format: demo, demo: {{n_users: 150, n_items: 60, mean_interactions: 10}}}}
train: {{epochs: 30, early_stop_patience: 30, n_layers: 2, seed: 1}}
encoding: {{image_batch_size: 8, text_batch_size: 16}}
neggen: {{seeds: [1], variants: [neggen], sensitivity: {{}}, workers: 1}}
baselines: {{models: []}}
generation:
  describer: &model {{kind: openai, base_url: '{url}', model: scripted-model, max_concurrency: 2,
                     max_retries: 20, backoff_s: 0.01, backoff_max_s: 0.05, timeout_s: 30}}
  generator: *model
  batch_size: 8
"""


def chaos_seed() -> int:
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


# --------------------------------------------------------------------------- the model


class ScriptedModel:
    """Stands in for the (V)LM behind the server: a valid answer to each generation prompt, a
    function of the request alone. Each answer names its request: the description carries a
    digest of the picture, and every later text keeps it; so a generation stored in the cache
    maps back to the request the server answered."""

    NEGATIVE_WORDS = ("crimson", "woollen", "oval", "striped", "matte")
    DIRECT_WORDS = ("azure", "leather", "square", "dotted", "glossy")

    def answer(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, list):  # the description prompt: the picture as a data: URI
            picture = next(part["image_url"]["url"] for part in content if part["type"] == "image_url")
            digest = hashlib.sha256(picture.encode()).hexdigest()[:12]
            return f"picture {digest} shows a product"
        source = content.split("**Input:** ", 1)[1].rsplit("\n\n**Output:**", 1)[0]
        if "by masking key feature words" in content:
            return self._each_line(source, lambda word, i: "[MASK]")
        if "Complete the masked product description" in content:
            start = self._pick(source)
            return re.sub(r"\[MASK\]", lambda m: self.NEGATIVE_WORDS[(start + m.start()) % 5], source)
        if "generate contrasting negative attributes" in content:
            start = self._pick(source)
            return self._each_line(source, lambda word, i: self._other(self.DIRECT_WORDS, start + i, word))
        raise AssertionError(f"a prompt the scripted model does not know: {content[:200]!r}")

    @staticmethod
    def _pick(text: str) -> int:
        return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5

    @staticmethod
    def _other(words: tuple[str, ...], index: int, word: str) -> str:
        """words[index] (cyclically), or the one after it where that is `word` itself."""
        chosen = words[index % len(words)]
        return words[(index + 1) % len(words)] if chosen == word.lower() else chosen

    @staticmethod
    def _each_line(text: str, replace_last) -> str:
        """Each `Label: value` line with the last word of its value replaced (values of two words or more)."""
        lines = []
        for i, line in enumerate(text.splitlines()):
            label, colon, value = line.partition(": ")
            words = value.split(" ")
            if colon and len(words) >= 2:
                words[-1] = replace_last(words[-1], i)
                line = f"{label}: {' '.join(words)}"
            lines.append(line)
        return "\n".join(lines)


class ModelServer:
    """The scripted model behind a real OpenAI-compatible server on 127.0.0.1 (FakeServer), which
    fails `failure_rate` of the requests with HTTP 500 (seeded) and logs every request it
    answered: (run, digest of the request, answer); `run` is set by the test before each start."""

    def __init__(self, failure_rate: float = 0.0, seed: int = 0):
        self.model = ScriptedModel()
        self.failure_rate = failure_rate
        self.random = random.Random(seed)
        self.run = 0
        self.answered: list[tuple[int, str, str]] = []
        self.failed = 0
        self.lock = threading.Lock()
        self.server = FakeServer(self._plan)

    def _plan(self, n: int, body: dict, headers: dict):
        with self.lock:
            run, fail = self.run, self.random.random() < self.failure_rate
            self.failed += fail
        if fail:
            return 500, {"error": {"message": "chaos: injected failure"}}, 0
        answer = self.model.answer(body)
        with self.lock:
            self.answered.append((run, request_digest(body), answer))
        return 200, completion(answer), ANSWER_S

    def settle(self, quiet_s: float = 0.3) -> None:
        """Wait until requests a killed client sent before it died are all handled (none in
        flight and none new for `quiet_s`), so that each is logged under the run that sent it."""
        last, since = -1, time.monotonic()
        while True:
            count, busy = self.server.count, self.server.in_flight
            if count != last or busy:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.02)

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def request_digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- the command


class Materialization:
    """`neggen materialize` in its own process group, its progress lines read as they come:
    when each step started (`[k/N] step ...`) and ended (`[k/N] step done in 1.2s`)."""

    START = re.compile(r"^\[\d+/\d+\] (\S+) \.\.\.$")
    END = re.compile(r"^\[\d+/\d+\] (\S+) (?:done in|FAILED)")

    def __init__(self, home: Path, config: Path, log: Path, select: str | None = None):
        env = {**os.environ, "NEGGEN_HOME": str(home), "PYTHONPATH": str(REPO)}
        for name in ("DAGSTER_HOME", "NEGGEN_CONFIG"):  # neggen puts the instance in <home>/.dagster
            env.pop(name, None)
        command = [str(Path(sys.executable).with_name("neggen")), "--config", str(config),
                   "materialize", "--dataset", "demo", *(["--select", select] if select else [])]  # fmt: skip
        self.log = log
        self.started_at: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}
        self.lines: list[str] = []
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log, "a") as log:
            for line in self.proc.stdout:
                now = time.monotonic()
                line = line.rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")
                if started := self.START.match(line):
                    self.started_at[started.group(1)] = now
                elif ended := self.END.match(line):
                    self.ended_at[ended.group(1)] = now

    def running_step(self) -> str | None:
        running = [s for s in list(self.started_at) if s not in self.ended_at]
        return running[-1] if running else None

    def wait(self) -> int:
        try:
            code = self.proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"neggen materialize ran past {RUN_TIMEOUT_S} s; log: {self.log}") from None
        self.reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """kill -9 of the whole process group, then wait until the group is gone."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.reader.join(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"process group {self.proc.pid} still alive 10 s after SIGKILL")

    def tail(self) -> str:
        return "\n".join(self.lines[-30:])


def run_to_the_end(home: Path, config: Path, log: Path, select: str | None = None) -> Materialization:
    run = Materialization(home, config, log, select)
    code = run.wait()
    assert code == 0, f"neggen materialize failed ({code}):\n{run.tail()}"
    return run


def write_config(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "neggen.yaml"
    path.write_text(CONFIG.format(url=url))
    return path


# --------------------------------------------------------------------------- what is on disk


def dataset_root(home: Path) -> Path:
    return home / "demo"


def read_rows(path: Path, query: str) -> list[tuple]:
    """Rows of a cache database, read-only (after its writer was killed, or ended)."""
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    except sqlite3.OperationalError as err:  # created, its table not yet
        if "no such table" in str(err):
            return []
        raise
    finally:
        con.close()


def stored_generations(home: Path) -> dict[str, tuple[str, float]]:
    path = dataset_root(home) / GENERATION_CACHE / GENERATION_FILE
    return {key: (text, at) for key, text, at in read_rows(path, "SELECT key, text, created_at FROM generations")}


def stored_embeddings(home: Path) -> dict[str, float]:
    path = dataset_root(home) / EMBEDDING_CACHE / EMBEDDING_FILE
    return dict(read_rows(path, "SELECT key, created_at FROM embeddings"))


def checkpointed_epochs(home: Path) -> dict[str, list[dict]]:
    """Per training run folder, the epoch records of its checkpoint."""
    return {
        str(path.parent.relative_to(home)): json.loads(path.read_text())["history"]
        for path in dataset_root(home).rglob(STATE_JSON)
    }


def progress(home: Path, step: str, encoders: dict[str, str]) -> int:
    """How far `step` has got, as stored on disk: generations of its stage, embeddings by its
    encoder (`encoders`: step -> the encoder named in its table), or epochs checkpointed by its
    training runs."""
    if step in STAGE_OF_TABLE:
        table, column, value = "generations", "template", STAGE_OF_TABLE[step].template
        path = dataset_root(home) / GENERATION_CACHE / GENERATION_FILE
    elif step in encoders:
        table, column, value = "embeddings", "encoder", encoders[step]
        path = dataset_root(home) / EMBEDDING_CACHE / EMBEDDING_FILE
    else:
        return sum(json.loads(p.read_text())["epoch"] for p in (dataset_root(home) / step).glob(f"*/{STATE_JSON}"))
    rows = read_rows(path, f"SELECT count(*) FROM {table} WHERE {column} = '{value}'")
    return rows[0][0] if rows else 0


def encoders_of(home: Path) -> dict[str, str]:
    """The encoder each encoding step used, as its table names it."""
    return {step: pq.read_table(tables(home)[step], columns=["encoder"])["encoder"][0].as_py()
            for step in STEPS["encoding"]}  # fmt: skip


def snapshot(home: Path) -> dict:
    return {"generations": stored_generations(home), "embeddings": stored_embeddings(home),
            "epochs": checkpointed_epochs(home)}  # fmt: skip


def tables(home: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(dataset_root(home).glob("*.parquet"))}


def assert_table_equal(name: str, ours: Path, theirs: Path, homes: tuple[Path, Path]) -> None:
    """Equal content, in order, less RUN_COLUMNS; a path into the home counts from the home."""
    frames = []
    for path, home in zip((ours, theirs), homes):
        frame = pq.read_table(path).to_pandas()
        frame = frame.drop(columns=[c for c in frame.columns if c in RUN_COLUMNS])
        for column in frame.columns:
            if frame[column].map(lambda v: isinstance(v, str)).any():
                frame[column] = frame[column].map(lambda v: v.replace(str(home), "<home>") if isinstance(v, str) else v)
        frames.append(frame)
    try:
        pandas.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    except AssertionError as err:
        raise AssertionError(f"{name}: differs from the uninterrupted run's: {str(err)[:2000]}") from None


def assert_weights_equal(home: Path, clean: Path) -> int:
    """Every safetensors file (best weights, checkpoints) holds the same tensors; returns how many files."""
    ours = sorted(p.relative_to(home) for p in dataset_root(home).rglob("*.safetensors"))
    theirs = sorted(p.relative_to(clean) for p in dataset_root(clean).rglob("*.safetensors"))
    assert ours == theirs
    for relative in ours:
        a, b = load_file(home / relative), load_file(clean / relative)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{relative} differs"
    return len(ours)


# --------------------------------------------------------------------------- the test


def kill_plan(rng: random.Random, clean: Path, run: Materialization, encoders: dict[str, str]) -> list[tuple]:
    """(step, progress point, delay) of each kill, in the order the steps run (see the module
    docstring); `clean` and `run`: the uninterrupted run's home and timings."""
    plan = []
    for group, count in KILLS.items():
        shares = Counter(STEPS[group][i % len(STEPS[group])] for i in range(count))
        for step, share in shares.items():
            total = progress(clean, step, encoders)
            assert total >= 2, f"{step} stored {total} units: too few to kill it in between"
            unit_s = (run.ended_at[step] - run.started_at[step]) / total
            points = sorted(rng.randint(0, total - 2) for _ in range(share))
            plan += [(step, point, rng.uniform(0, unit_s)) for point in points]
    order = list(run.started_at)
    return sorted(plan, key=lambda kill: (order.index(kill[0]), kill[1]))


def group_of(step: str | None) -> str | None:
    return next((group for group, steps in STEPS.items() if step in steps), None)


def test_kill_9_at_random_moments_and_a_flaky_server_change_nothing(tmp_path):
    seed = chaos_seed()
    print(f"\nchaos seed {seed} (set {SEED_ENV} to replay or vary it)")
    started = time.monotonic()

    # 1. Uninterrupted.
    clean = tmp_path / "clean"
    with ModelServer() as server:
        run = run_to_the_end(clean / "home", write_config(clean, server.server.url), clean / "run.log")
        clean_answered = server.answered
    missing = [step for steps in STEPS.values() for step in steps if step not in run.ended_at]
    assert not missing, f"steps the run did not report: {missing}"
    assert len({digest for _, digest, _ in clean_answered}) == len(clean_answered)
    encoders = encoders_of(clean / "home")

    # 2. Killed at random moments, restarted after each kill.
    chaos = tmp_path / "chaos"
    home = chaos / "home"
    kills = []  # (step aimed at, step running at the kill, what was stored then)
    with ModelServer() as server:
        config = write_config(chaos, server.server.url)
        for number, (step, point, delay) in enumerate(kill_plan(random.Random(seed), clean / "home", run, encoders)):
            server.run = number
            restart = Materialization(home, config, chaos / "run.log")
            while not (step in restart.started_at and progress(home, step, encoders) >= point):
                ended = restart.proc.poll() is not None
                assert not ended, f"kill {number + 1} ({step} at {point}): the run ended first:\n{restart.tail()}"
                time.sleep(POLL_S)
            time.sleep(delay)
            landed = restart.running_step()
            restart.kill()
            server.settle()
            kills.append((step, landed, snapshot(home)))
            print(f"kill {number + 1:2d}: {step} at {point} stored, +{delay:.3f} s; landed in {landed}")
        server.run = len(kills)
        run_to_the_end(home, config, chaos / "run.log")
        answered = server.answered
    final = snapshot(home)

    # Each kill came while a step of its group ran.
    strays = [(aimed, landed) for aimed, landed, _ in kills if group_of(landed) != group_of(aimed)]
    assert not strays, f"kills that landed outside their group: {strays}"

    # The same tables and weights as the uninterrupted run.
    ours, theirs = tables(home), tables(clean / "home")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert_table_equal(name, ours[name], theirs[name], (home, clean / "home"))
    weight_files = assert_weights_equal(home, clean / "home")

    # Generation: nothing stored before a kill was requested again after it.
    answer_of = {digest: answer for _, digest, answer in answered}
    assert len(set(answer_of.values())) == len(answer_of), "two requests got the same answer: the log cannot name them"
    request_of = {answer: digest for digest, answer in answer_of.items()}
    regenerated, lost = [], 0
    for number, (_, _, stored) in enumerate(kills):
        done = {request_of[text] for text, _ in stored["generations"].values()}
        regenerated += [digest for sent_in, digest, _ in answered if sent_in > number and digest in done]
        lost += len({digest for sent_in, digest, _ in answered if sent_in == number} - done)
    assert not regenerated, f"{len(regenerated)} requests answered again after their answer was stored"
    times = Counter(digest for _, digest, _ in answered)
    assert sum(times.values()) - len(times) == lost  # the only repeats: answers a kill lost before they were stored
    assert set(times) == {digest for _, digest, _ in clean_answered}
    # ... and every generation, embedding and epoch stored before a kill is there at the end as it was.
    for number, (_, _, stored) in enumerate(kills):
        for kind in ("generations", "embeddings"):
            changed = {key for key, value in stored[kind].items() if final[kind].get(key) != value}
            assert not changed, f"kill {number + 1}: {len(changed)} {kind} stored before it were lost or redone"
        for folder, epochs in stored["epochs"].items():
            assert final["epochs"][folder][: len(epochs)] == epochs, f"kill {number + 1}: {folder} retrained epochs"

    # 3. Generation against a server that fails FAILURE_RATE of the requests.
    flaky = tmp_path / "flaky"
    with ModelServer(FAILURE_RATE, seed) as server:
        run_to_the_end(flaky / "home", write_config(flaky, server.server.url), flaky / "run.log",
                       select="group:data or group:generation")  # fmt: skip
        flaky_answered, failed = server.answered, server.failed
    flaky_tables = tables(flaky / "home")
    assert {*STAGE_OF_TABLE} <= flaky_tables.keys() <= theirs.keys()
    for name, path in flaky_tables.items():
        assert_table_equal(name, path, theirs[name], (flaky / "home", clean / "home"))
    requests = len(flaky_answered) + failed
    assert 0.2 < failed / requests < 0.4, (failed, requests)
    assert sorted(d for _, d, _ in flaky_answered) == sorted(d for _, d, _ in clean_answered)  # each once

    figures = {
        "seed": seed,
        "kills survived": len(kills),
        "kills per step": dict(Counter(landed for _, landed, _ in kills)),
        "requests answered (uninterrupted)": len(clean_answered),
        "requests answered (killed)": len(answered),
        "answers lost to kills (never stored, asked again)": lost,
        "items regenerated": len(regenerated),
        "embeddings stored": len(final["embeddings"]),
        "epochs checkpointed": {folder: len(epochs) for folder, epochs in final["epochs"].items()},
        "weight files equal": weight_files,
        "tables equal": len(theirs),
        "flaky: requests failed": f"{failed} of {requests}",
        "flaky: tables equal": len(flaky_tables),
        "seconds": round(time.monotonic() - started),
    }
    print("chaos figures: " + json.dumps(figures))
