"""The OpenAI-compatible engine against a real HTTP server on 127.0.0.1 (started here):
answers, image parts as data URIs, retries, bounded failures, timeouts, the concurrency
bound, and an API key that never shows up in logs, errors or reprs."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from pipeline.config.generation import OpenAIEngineConfig
from pipeline.llm.engines import EngineUnavailable, build_engine
from pipeline.llm.engines.openai import OpenAIEngine
from pipeline.llm.prompts import render_request
from pipeline.llm.testing import FakeServer, completion
from pipeline.llm.types import ImagePart, Message, Request, SamplingParams

KEY = "sk-test-SECRET-0123456789"
KEY_ENV = "NEGGEN_TEST_LLM_KEY"


def echo_plan(n, body, headers):
    return 200, completion(f"echo: {body['messages'][0]['content']}"), 0


def engine(server: FakeServer, **overrides) -> OpenAIEngine:
    settings = dict(base_url=server.url, model="test-model", max_concurrency=4, timeout_s=5.0,
                    max_retries=3, backoff_s=0.01, backoff_max_s=0.05)
    settings.update(overrides)
    return OpenAIEngine(OpenAIEngineConfig(**settings))


def text_request(text: str, seed: int = 0) -> Request:
    return Request(messages=(Message.user(text),), sampling=SamplingParams(seed=seed, max_tokens=32))


def test_answers_come_back_in_order_with_the_sampling_parameters():
    with FakeServer(echo_plan) as server, engine(server) as eng:
        results = eng.generate([text_request(f"q{i}", seed=i) for i in range(6)])
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(6)]
    assert all(r.ok and r.engine == "openai" and r.model == "test-model" and r.finish_reason == "stop" for r in results)
    body = next(b for b in server.bodies if b["messages"][0]["content"] == "q3")
    assert body["model"] == "test-model" and body["seed"] == 3 and body["max_tokens"] == 32
    assert body["temperature"] == 0.7 and body["top_p"] == 0.95


def test_the_replys_usage_becomes_the_results_token_counts():
    def plan(n, body, headers):
        reply, question = completion("x"), body["messages"][0]["content"]
        if question == "counted":  # as vLLM's server answers
            reply["usage"] = {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20}
        elif question == "malformed":
            reply["usage"] = {"prompt_tokens": "17", "completion_tokens": -1}
        return 200, reply, 0

    with FakeServer(plan) as server, engine(server) as eng:
        counted, plain, malformed = eng.generate([text_request(q) for q in ("counted", "plain", "malformed")])
    assert (counted.prompt_tokens, counted.completion_tokens) == (17, 3)
    for result in (plain, malformed):  # usage is optional: the answer stands, nothing is counted
        assert result.ok and (result.prompt_tokens, result.completion_tokens) == (None, None)


def test_an_image_part_arrives_as_a_data_uri(tmp_path):
    png = tmp_path / "item.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    request = render_request("description_generation", item_image=png)
    with FakeServer(lambda n, b, h: (200, completion("a red mug"), 0)) as server, engine(server) as eng:
        (result,) = eng.generate([request])
    assert result.text == "a red mug"
    parts = server.bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png.read_bytes()
    # bytes work the same as a path
    with FakeServer(lambda n, b, h: (200, completion("ok"), 0)) as server, engine(server) as eng:
        eng.generate([Request(messages=(Message.user("see", ImagePart(data=png.read_bytes())),))])
    assert server.bodies[0]["messages"][0]["content"][1]["image_url"]["url"] == url


def test_a_server_error_then_success_is_retried():
    plan = lambda n, b, h: (500, {"error": {"message": "overloaded"}}, 0) if n <= 2 else (200, completion("fine"), 0)  # noqa: E731
    with FakeServer(plan) as server, engine(server) as eng:
        (result,) = eng.generate([text_request("q")])
    assert result.ok and result.text == "fine" and result.tries == 3
    assert server.count == 3


def test_429_is_retried_and_a_400_is_not():
    plan = lambda n, b, h: (429, {"error": {"message": "slow down"}}, 0) if n == 1 else (200, completion("ok"), 0)  # noqa: E731
    with FakeServer(plan) as server, engine(server) as eng:
        assert eng.generate([text_request("q")])[0].text == "ok"
    with FakeServer(lambda n, b, h: (400, {"error": {"message": "bad prompt"}}, 0)) as server, engine(server) as eng:
        (result,) = eng.generate([text_request("q")])
    assert not result.ok and "HTTP 400" in result.error and "bad prompt" in result.error
    assert server.count == 1


def test_a_server_that_always_fails_gives_an_error_after_bounded_retries():
    with FakeServer(lambda n, b, h: (503, "down for maintenance", 0)) as server, engine(server, max_retries=2) as eng:
        results = eng.generate([text_request("q")])
    (result,) = results
    assert not result.ok and result.text is None
    assert "HTTP 503" in result.error and "down for maintenance" in result.error and "3 tries" in result.error
    assert result.tries == 3 and server.count == 3


def test_a_server_slower_than_the_timeout_times_out():
    with FakeServer(lambda n, b, h: (200, completion("late"), 1.5)) as server, \
            engine(server, timeout_s=0.2, max_retries=1) as eng:  # fmt: skip
        t0 = time.perf_counter()
        (result,) = eng.generate([text_request("q")])
        elapsed = time.perf_counter() - t0
    assert not result.ok and "timed out" in result.error
    assert result.tries == 2 and server.count == 2
    assert elapsed < 1.4  # it did not wait for the server's answer


def test_unreachable_server_is_an_error_not_an_exception():
    with FakeServer(echo_plan) as server:
        url = server.url
    eng = OpenAIEngine(OpenAIEngineConfig(base_url=url, model="m", max_retries=1, backoff_s=0.01, timeout_s=1))
    (result,) = eng.generate([text_request("q")])
    eng.close()
    assert not result.ok and "cannot reach" in result.error


def test_concurrency_bound_is_respected():
    with FakeServer(lambda n, b, h: (200, completion("x"), 0.15)) as server, engine(server, max_concurrency=3) as eng:
        results = eng.generate([text_request(f"q{i}") for i in range(10)])
    assert all(r.ok for r in results)
    assert server.max_in_flight == 3


def test_api_key_is_sent_but_never_logged_or_shown(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)

    def plan(n, body, headers):  # a hostile server that echoes the credentials back
        auth = headers.get("Authorization", "")
        if n == 1:
            return 500, {"error": {"message": f"failed for {auth}"}}, 0
        if n == 2:
            return 200, completion(f"ok {len(auth)}"), 0
        return 401, f"bad key {auth}", 0

    with FakeServer(plan) as server:
        eng = build_engine({"kind": "openai", "base_url": server.url, "model": "m", "api_key_env": KEY_ENV,
                            "max_retries": 2, "backoff_s": 0.01})
        first = eng.generate([text_request("q")])[0]
        second = eng.generate([text_request("q")])[0]
        eng.close()
        with pytest.raises(RuntimeError) as closed:
            eng.generate([text_request("q")])
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert first.ok and second.error and "HTTP 401" in second.error
    shown = [caplog.text, repr(eng), str(eng), repr(eng.config), str(vars(eng.config)), str(closed.value),
             repr(first), repr(second), second.error, second.model_dump_json()]
    for text in shown:
        assert KEY not in text
    assert "***" in second.error


def test_missing_api_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EngineUnavailable, match=KEY_ENV):
        build_engine({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": KEY_ENV})


# -- the structured prompt mode: the schema goes out as response_format ---------------------


def test_a_request_with_a_schema_asks_for_json_under_it():
    from pipeline.llm.structured import masking_schema

    schema = masking_schema(["Norvik", "Bag"])
    request = render_request("attribute_masking_structured", SamplingParams(max_tokens=64), response_schema=schema,
                             item_description="Title: Norvik Bag")  # fmt: skip
    with FakeServer(lambda n, b, h: (200, completion('{"mask": ["Norvik"]}'), 0)) as server, engine(server) as eng:
        structured, plain = eng.generate([request, text_request("q")])
    assert structured.text == '{"mask": ["Norvik"]}' and plain.ok
    (with_schema,) = [b for b in server.bodies if "response_format" in b]  # only the request with a schema
    sent = {k: v for k, v in schema.items() if k != "properties"} | {"properties": {"mask": {
        k: v for k, v in schema["properties"]["mask"].items() if k != "uniqueItems"}}}  # vLLM refuses uniqueItems
    assert schema["properties"]["mask"]["uniqueItems"] and with_schema["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "attribute_masking_structured", "schema": sent, "strict": True},
    }  # fmt: skip
    assert with_schema["max_tokens"] == 64 and with_schema["messages"][0]["content"] == request.messages[0].text


def schema_following_server(n, body, headers):
    """A server that answers under the request's schema, as vLLM's guided decoding does: the
    first allowed word to mask, "Zed" for every blank, the first allowed word swapped for "Zed";
    prose when no schema is sent."""
    fmt = body.get("response_format")
    if fmt is None:
        return 200, completion("Here is the masked description you asked for."), 0
    properties = fmt["json_schema"]["schema"]["properties"]
    if "mask" in properties:
        return 200, completion(json.dumps({"mask": properties["mask"]["items"]["enum"][:1]})), 0
    if "swaps" in properties:
        word = properties["swaps"]["items"]["properties"]["word"]["enum"][0]
        return 200, completion(json.dumps({"swaps": [{"word": word, "replacement": "Zed"}]})), 0
    return 200, completion(json.dumps({"replacements": ["Zed"] * properties["replacements"]["minItems"]})), 0


def test_the_structured_stage_through_a_server_that_follows_the_schema():
    from pipeline.llm.run import generate_stage, join_texts

    import pandas as pd

    items = pd.DataFrame({"item_id": [1, 2], "description_text": ["Title: Norvik Cotton Bag\nBrand: Norvik",
                                                                  "Title: Zentara Steel Mug\nBrand: Zentara"]})  # fmt: skip
    with FakeServer(schema_following_server) as server, engine(server) as eng:
        masked = generate_stage(items, "masked", eng, progress=False, prompt_mode="structured")
        negative = generate_stage(join_texts(items, masked=masked.outputs), "negative", eng, progress=False,
                                  prompt_mode="structured")  # fmt: skip
        free = generate_stage(items, "masked", eng, progress=False, max_attempts=2)  # the paper's prompt: prose back
    assert masked.outputs.sort_values("item_id").text.tolist() == ["Title: [MASK] Cotton Bag\nBrand: [MASK]",
                                                                    "Title: [MASK] Steel Mug\nBrand: [MASK]"]  # fmt: skip
    assert negative.outputs.sort_values("item_id").text.tolist() == ["Title: Zed Cotton Bag\nBrand: Zed",
                                                                      "Title: Zed Steel Mug\nBrand: Zed"]  # fmt: skip
    assert sum("response_format" in b for b in server.bodies) == 4 and free.outputs.empty
    assert (free.failures.reason == "masked text contains no [MASK]").all()
    with FakeServer(lambda n, b, h: (200, completion("Sure! Mask the brand."), 0)) as server, engine(server) as eng:
        ignored = generate_stage(items, "masked", eng, progress=False, prompt_mode="structured", max_attempts=1)
    assert ignored.outputs.empty and ignored.failures.reason.str.startswith("structured answer: not JSON").all()
