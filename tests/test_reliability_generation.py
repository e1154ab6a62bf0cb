"""Generation finishes when items fail: against a real local HTTP server that is down (always
500) or flaky (500 for some pictures), every stage covers every item (generated, or recorded as
failed with the reason, upstream failures included), its checks pass, and the encoding stage
and the NegGen features loader take the gaps."""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import numpy as np

from assets.definitions import all_assets
from assets.resources import NeggenResource
from pipeline.storage import DatasetStore

GENERATION = ["item_descriptions", "masked_descriptions", "negative_descriptions", "direct_negatives"]


@contextmanager
def chat_server(answer):
    """A real chat-completions server on 127.0.0.1; `answer(body bytes)` gives (status, text)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            status, text = answer(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]} if status == 200 else {
                "error": {"message": text}}  # fmt: skip
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def write_config(tmp_path, describer: str, generator: str):
    path = tmp_path / "neggen.yaml"
    path.write_text(
        "datasets:\n  demo: {format: demo, demo: {n_users: 40, n_items: 20}}\n"
        f"generation:\n  describer: {describer}\n  generator: {generator}\n  max_attempts: 2\n"
    )
    return path


def openai(url: str) -> str:
    return f"{{kind: openai, base_url: '{url}', model: test-vlm, max_retries: 1, backoff_s: 0, timeout_s: 5}}"


def materialize(config, selection, instance=None):
    return dg.materialize(
        all_assets, partition_key="demo", selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config))},
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip


def log_lines(instance, result) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id) if not entry.is_dagster_event]


def assert_every_check_passed(result):
    errors = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
    assert result.success, "\n".join(errors)
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.asset_key, c.check_name) for c in checks if not c.passed]
    return checks


def test_a_dead_server_fails_every_item_visibly_and_every_stage_finishes(neggen_home, tmp_path):
    """The issue's reproduction: `openai` against a server that always answers 500, on a demo of
    40 users and 20 items. item_descriptions crashed its own check (KeyError on an empty frame),
    and the later stages left the failed items out and failed their coverage."""
    calls = []

    def down(body):
        calls.append(body)
        return 500, "model server is down"

    with chat_server(down) as url:
        config = write_config(tmp_path, openai(url), openai(url))
        assert materialize(config, "group:data").success
        result = materialize(config, "key:item_descriptions or key:direct_negatives")
        assert_every_check_passed(result)
        result = materialize(config, "group:generation")  # the rest too: empty inputs everywhere
        assert_every_check_passed(result)
    store = DatasetStore(neggen_home, "demo")
    items = store.read("items")
    # item_descriptions ran twice: 2 attempts per item, 2 tries per attempt (errors are not cached)
    assert len(calls) == 2 * len(items) * 2 * 2
    for asset in GENERATION:
        outputs, failures = store.read(asset), store.read(f"{asset}_failures")
        assert outputs.empty and sorted(failures.item_id) == sorted(items.item_id), asset
        assert (failures.failed_at == "description").all()
        meta = result.asset_materializations_for_node(asset)[0].metadata
        assert meta["failed_at"].value == f"description: {len(items)}"
    own = store.read("item_descriptions_failures")
    assert own.reason.str.startswith("engine error: HTTP 500").all() and (own.attempts == 2).all()
    later = store.read("negative_descriptions_failures")
    assert later.reason.str.startswith("upstream: description: engine error: HTTP 500").all()
    assert (later.stage == "negative").all() and (later.attempts == 0).all()
    meta = result.asset_materializations_for_node("masked_descriptions")[0].metadata
    assert meta["failed_upstream"].value == len(items) and meta["failed_here"].value == 0

    # The encoding stage on no description at all: an empty text store whose checks pass.
    encoded = materialize(config, ["text_embeddings"])
    assert_every_check_passed(encoded)
    meta = encoded.asset_materializations_for_node("text_embeddings")[0].metadata
    assert meta["rows"].value == 0 and meta["items_without_description"].value == len(items)


def test_a_flaky_server_fails_some_pictures_and_they_stay_failed_downstream(neggen_home, tmp_path):
    """500 for some pictures: those items are recorded as failed in every later stage with the
    upstream reason; the others are generated; text_embeddings pairs what exists, and NegGen's
    features give the failed items no text tokens and the others their negatives."""

    def flaky(body):
        if hashlib.sha256(body).digest()[0] % 2:
            return 503, "overloaded"
        return 200, "A red striped round product."

    with chat_server(flaky) as url:
        config = write_config(tmp_path, openai(url), "{kind: catalog}")
        assert materialize(config, "group:data").success
        instance = dg.DagsterInstance.ephemeral()
        result = materialize(config, "group:generation", instance)
        assert_every_check_passed(result)
    store = DatasetStore(neggen_home, "demo")
    items = set(store.read("items").item_id)
    failed = set(store.read("item_descriptions_failures").item_id)
    assert failed and failed < items  # some of each
    for asset in GENERATION:
        outputs, failures = store.read(asset), store.read(f"{asset}_failures")
        assert set(outputs.item_id) | set(failures.item_id) == items and not set(outputs.item_id) & set(failures.item_id)
        upstream = failures[failures.failed_at == "description"]
        assert set(upstream.item_id) == failed, asset
        if asset != "item_descriptions":
            assert upstream.reason.str.startswith("upstream: description: engine error: HTTP 503").all()
    # The run says how many items failed where.
    said = f"negative_descriptions: {len(items) - len(failed)} of {len(items)} items generated, {len(failed)} failed"
    assert any(line.startswith(said) and f"failed at: description: {len(failed)}" in line
               for line in log_lines(instance, result))  # fmt: skip
    meta = result.asset_materializations_for_node("negative_descriptions")[0].metadata
    assert meta["failed_upstream"].value == len(failed) and meta["failed_at"].value.startswith("description: ")

    encoded = materialize(config, ["text_embeddings"])
    assert_every_check_passed(encoded)
    meta = encoded.asset_materializations_for_node("text_embeddings")[0].metadata
    assert meta["items_without_description"].value == len(failed)
    assert meta["items_without_negative"].value >= len(failed)

    from pipeline.study import load_item_features

    features = load_item_features(store, len(items))
    title = next(t for t in features.tokens if t.name == "title")
    lost = sorted(failed)
    assert not title.present[lost].any() and title.present[sorted(items - failed)].all()
    assert np.array_equal(title.versions["generated"][lost], title.versions["original"][lost])
