"""The `openai` engine over several servers, and generation split into item shards.

Real HTTP servers on 127.0.0.1 (pipeline.llm.testing.FakeServer): requests are spread over
every server; a server that is down or answers 500 costs a request one try on it, the request
is answered by the other one at once (no backoff), and the failing server is passed over while
it cools down. Shards: `neggen generate --shard i/N` for every i fills the generation cache, a
materialization afterwards sends no request and writes the tables an unsharded run writes.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from assets import cli
from pipeline.config import ConfigError, load_config
from pipeline.config.generation import OpenAIEngineConfig
from pipeline.demo import DemoConfig, write_demo_source
from pipeline.generation import run_generation_stage
from pipeline.llm.cache import GenerationCache
from pipeline.llm.engines.openai import OpenAIEngine
from pipeline.llm.run import generate_stage
from pipeline.llm.stages import STAGE_OF_TABLE as STAGE_OF_ASSET
from pipeline.llm.testing import FakeServer, completion
from pipeline.sources import read_amazon2014
from pipeline.storage import DatasetStore
from pipeline.tables import failures_table
from tests.test_llm_openai import echo_plan, schema_following_server, text_request


def engine(urls: list[str], **overrides) -> OpenAIEngine:
    settings = dict(base_url=urls, model="test-model", max_concurrency=2, timeout_s=5.0,
                    max_retries=2, backoff_s=0.01, backoff_max_s=0.05)  # fmt: skip
    settings.update(overrides)
    return OpenAIEngine(OpenAIEngineConfig(**settings))


def prompts(server: FakeServer) -> Counter:
    return Counter(body["messages"][0]["content"] for body in server.bodies)


def closed_port_url() -> str:
    with FakeServer(echo_plan) as gone:
        return gone.url  # nothing listens there any more: connection refused


# -- spreading and failing over ------------------------------------------------------------


def test_requests_are_spread_over_every_server_within_each_ones_slots():
    slow_echo = lambda n, body, headers: (200, completion(f"echo: {body['messages'][0]['content']}"), 0.05)  # noqa: E731
    with FakeServer(slow_echo) as first, FakeServer(slow_echo) as second, engine([first.url, second.url]) as eng:
        results = eng.generate([text_request(f"q{i}") for i in range(12)])
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(12)]
    assert first.count + second.count == 12 and first.count >= 3 and second.count >= 3
    assert first.max_in_flight == second.max_in_flight == 2  # max_concurrency is per server


@pytest.mark.parametrize("failure", ["connection refused", "HTTP 500"])
def test_a_failing_server_costs_one_try_and_the_other_server_answers(failure):
    """max_retries=0 and a 5 s backoff: only the move to the other server, at once, saves the
    requests; the failing server is passed over while it cools down (5 s here)."""
    every = [f"q{i}" for i in range(16)]
    with FakeServer(lambda n, b, h: (500, {"error": {"message": "overloaded"}}, 0)) as erring, \
            FakeServer(echo_plan) as working:  # fmt: skip
        failing_url = closed_port_url() if failure == "connection refused" else erring.url
        with engine([failing_url, working.url], max_retries=0, backoff_s=5.0, backoff_max_s=5.0) as eng:
            started = time.perf_counter()
            results = eng.generate([text_request(q) for q in every])
            elapsed = time.perf_counter() - started
    assert [r.text for r in results] == [f"echo: {q}" for q in every]
    assert prompts(working) == Counter(every)  # every request answered there, once
    retried = [q for q, r in zip(every, results) if r.tries == 2]
    assert retried and all(r.tries in (1, 2) for r in results) and elapsed < 2.0
    # the first request went to the first server; once it failed, only requests already on
    # their way there (at most its 2 slots) tried it
    assert len(retried) <= 2
    if failure == "HTTP 500":
        assert sorted(prompts(erring).elements()) == sorted(retried)


def test_a_request_every_server_fails_names_each_servers_failure():
    down = lambda n, b, h: (503, "down for maintenance", 0)  # noqa: E731
    with FakeServer(down) as first, FakeServer(down) as second, \
            engine([first.url, second.url], max_retries=2) as eng:  # fmt: skip
        (result,) = eng.generate([text_request("q")])
    assert not result.ok and result.tries == 6 and first.count == second.count == 3  # 3 rounds of both
    assert f"HTTP 503 from {first.url}/chat/completions" in result.error
    assert f"HTTP 503 from {second.url}/chat/completions" in result.error and "(after 6 tries)" in result.error


def test_a_server_back_from_failure_gets_requests_after_its_cool_down():
    flaky = lambda n, b, h: (500, "warming up", 0) if n == 1 else echo_plan(n, b, h)  # noqa: E731
    with FakeServer(flaky) as first, FakeServer(echo_plan) as second, \
            engine([first.url, second.url], backoff_s=0.5, backoff_max_s=0.5) as eng:  # fmt: skip
        (answer,) = eng.generate([text_request("a")])  # tried on the first, answered by the second
        assert answer.text == "echo: a" and answer.tries == 2
        assert all(r.ok for r in eng.generate([text_request(f"b{i}") for i in range(4)]))
        assert first.count == 1  # passed over while it cools down
        time.sleep(0.6)
        assert all(r.ok for r in eng.generate([text_request(f"c{i}") for i in range(4)]))
    assert first.count > 1 and first.count + second.count == 10


def test_servers_of_one_model_share_the_cache(tmp_path):
    """The cache fingerprint is the model name: answers generated through one server are
    cache hits through a list that adds another."""
    items = pd.DataFrame({"item_id": [1, 2, 3], "description_text": ["Title: Norvik Bag", "Title: Zentara Mug",
                                                                      "Title: Vantoo Bottle"]})  # fmt: skip
    with FakeServer(schema_following_server) as first, FakeServer(schema_following_server) as second, \
            GenerationCache(tmp_path) as cache:  # fmt: skip
        with engine([first.url]) as eng:
            one = generate_stage(items, "masked", eng, cache, progress=False, prompt_mode="structured")
        with engine([second.url, first.url]) as eng:
            both = generate_stage(items, "masked", eng, cache, progress=False, prompt_mode="structured")
    assert one.meta["generated"] == 3 and both.meta["generated"] == 0 and both.meta["cache_hits"] == 3
    assert first.count == 3 and second.count == 0
    assert both.outputs.text.tolist() == one.outputs.text.tolist()


# -- base_url validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ([], "the list is empty"),
        (["http://127.0.0.1:8000/v1", "ftp://127.0.0.1/v1"], "'ftp://127.0.0.1/v1' is not an http(s) URL"),
        (["127.0.0.1:8000/v1"], "is not an http(s) URL"),
        (["http://:8000/v1"], "is not an http(s) URL"),
        (["http://127.0.0.1:port/v1"], "is not an http(s) URL"),
        ("localhost:8000", "is not an http(s) URL"),
        (["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/"], "http://127.0.0.1:8000/v1 listed more than once"),
    ],
)
def test_a_bad_base_url_is_a_config_error_naming_the_key(base_url, message):
    with pytest.raises(ValidationError) as err:
        OpenAIEngineConfig(base_url=base_url, model="m")
    (problem,) = err.value.errors()
    assert problem["loc"] == ("base_url",) and message in problem["msg"]


def test_base_url_accepts_one_string_or_a_list_and_the_config_file_names_the_key(tmp_path):
    one = OpenAIEngineConfig(base_url="http://127.0.0.1:8000/v1", model="m")
    several = OpenAIEngineConfig(base_url=["http://127.0.0.1:8000/v1", "https://gpu-2.internal/v1"], model="m")
    assert one.base_url == "http://127.0.0.1:8000/v1" and one.base_urls == ["http://127.0.0.1:8000/v1"]
    assert several.base_urls == ["http://127.0.0.1:8000/v1", "https://gpu-2.internal/v1"]
    path = tmp_path / "neggen.yaml"
    path.write_text("generation:\n  generator: {kind: openai, model: m, base_url: [http://a:1/v1, http://a:1/v1]}\n")
    with pytest.raises(ConfigError, match=r"generation\.generator\.openai\.base_url: .*listed more than once"):
        load_config(path)


# -- shards ----------------------------------------------------------------------------------


@pytest.fixture
def demo_items(tmp_path) -> pd.DataFrame:
    """The demo world's catalogue as an items table (dense integer item ids)."""
    source = write_demo_source(tmp_path / "source", DemoConfig(seed=3, n_users=60, n_items=31))
    items = read_amazon2014(source).items
    return items.assign(item_id=np.arange(len(items), dtype="int64"))


def shard_config(tmp_path, urls: list[str]):
    path = tmp_path / "neggen.yaml"
    path.write_text(
        "generation:\n  describer: {kind: visual}\n"
        f"  generator: {{kind: openai, model: m, base_url: [{', '.join(urls)}], prompt_mode: structured,"
        " backoff_s: 0.01}\n"
    )
    return path


def run_cli(monkeypatch, tmp_path, *args) -> int:
    monkeypatch.chdir(tmp_path)  # no ./neggen.yaml but the test's
    monkeypatch.setenv("NEGGEN_CONFIG", "")  # main() sets it for Dagster; restored after the test
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    return cli.main(list(args))


def test_shards_fill_the_cache_and_the_materialization_regenerates_nothing(neggen_home, tmp_path, demo_items,
                                                                           monkeypatch, capsys):  # fmt: skip
    with FakeServer(schema_following_server) as first, FakeServer(schema_following_server) as second:
        config_path = shard_config(tmp_path, [first.url, second.url])
        sharded = DatasetStore(neggen_home, "demo")
        sharded.write("items", demo_items)
        for shard in ("0/2", "1/2"):
            assert run_cli(monkeypatch, tmp_path, "--config", str(config_path), "generate", "--dataset", "demo",
                           "--shard", shard) == 0  # fmt: skip
        log = capsys.readouterr().err
        sent = first.count + second.count
        assert first.count and second.count
        assert not [p for p in sharded.root.iterdir() if p.suffix == ".parquet" and p.stem != "items"]  # cache only
        config = load_config(config_path).generation_config("demo")
        runs = {asset: run_generation_stage(sharded, asset, config) for asset in STAGE_OF_ASSET}
        assert first.count + second.count == sent  # the materialization sent no request
        assert all(run.meta["generated"] == 0 and run.meta["cache_misses"] == 0 for run in runs.values())

        unsharded = DatasetStore(tmp_path / "unsharded", "demo")
        unsharded.write("items", demo_items)
        for asset in STAGE_OF_ASSET:
            run_generation_stage(unsharded, asset, config)
        assert first.count + second.count > sent
    shard_sizes = [line.split()[1] for line in log.splitlines() if line.startswith("item_descriptions:")]
    assert shard_sizes == ["16", "15"]  # item ids 0..30: 16 even (shard 0/2), 15 odd (shard 1/2)
    assert len(sharded.read("negative_descriptions")) > 0
    for table in [*STAGE_OF_ASSET, *map(failures_table, STAGE_OF_ASSET)]:
        mine, single = (store.read(table).drop(columns=["cache_hit"], errors="ignore").sort_values("item_id",
                        ignore_index=True) for store in (sharded, unsharded))  # fmt: skip
        pd.testing.assert_frame_equal(mine, single, obj=table)


@pytest.mark.parametrize("shard", ["2/2", "0/0", "-1/2", "1", "a/b", "1/2/3"])
def test_a_bad_shard_is_refused_with_the_rule(shard, monkeypatch, tmp_path, capsys, neggen_home):
    with pytest.raises(SystemExit) as exit_:
        run_cli(monkeypatch, tmp_path, "generate", "--dataset", "demo", f"--shard={shard}")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --shard" in err and f"shard {shard}" in err.replace("'", "") and "0 <= i < N" in err


def test_generate_without_items_says_what_to_materialize_first(monkeypatch, tmp_path, capsys, neggen_home):
    assert run_cli(monkeypatch, tmp_path, "generate", "--dataset", "demo") == 1
    assert "neggen materialize --dataset demo --select '+key:items'" in capsys.readouterr().err
