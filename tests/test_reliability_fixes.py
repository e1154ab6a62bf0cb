"""Regression tests for the smaller failures of issue 9: one seed, the vLLM engine's usage
statistics, source files that lie about their lines, and data checks that fail."""

from __future__ import annotations

import json
import sys

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from assets.definitions import all_assets
from assets.resources import NeggenResource
from neggen_model.data import InteractionData
from neggen_model.synthetic import clustered_interactions
from pipeline.llm.engines import EngineUnavailable, build_engine
from pipeline.sources import SourceError, read_source
from pipeline.storage import DatasetStore


def materialize(config_path, selection, partition="demo"):
    return dg.materialize(
        all_assets, partition_key=partition, selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config_path))},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip


def step_errors(result) -> str:
    return "\n".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure)


# -- one seed --------------------------------------------------------------------------------


def test_neggen_model_with_one_seed_writes_its_metadata(neggen_home, tmp_path):
    """`neggen: {seeds: [2024]}` crashed the asset with KeyError: 'std' (no std over one seed)."""
    frame = clustered_interactions(n_users=60, n_items=30, per_user=8)
    data = InteractionData.from_frame(frame)
    store = DatasetStore(neggen_home, "demo")
    store.write("interactions", frame)
    rows = [(i, f, v) for i in range(data.n_items) for f in ("title", "brand") for v in ("original", "generated")]
    vectors = np.random.default_rng(0).normal(size=(len(rows), 8)).astype(np.float32)
    store.write("text_embeddings", pa.table({
        "item_id": pa.array([r[0] for r in rows], pa.int64()), "field": [r[1] for r in rows],
        "modality": ["text"] * len(rows), "version": [r[2] for r in rows], "encoder": ["test"] * len(rows),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8),
    }))  # fmt: skip
    config = tmp_path / "neggen.yaml"
    config.write_text(
        "train: {epochs: 2, embedding_size: 8, n_layers: 1}\n"
        "neggen: {seeds: [2024], variants: [neggen], sensitivity: {}}\n"
    )
    result = materialize(config, ["neggen_model"])
    assert result.success, step_errors(result)
    meta = result.asset_materializations_for_node("neggen_model")[0].metadata
    assert meta["runs"].value == 2 and meta["seeds"].value == "2024"
    assert "neggen" in meta["test_mmrec_mean_over_seeds"].value
    assert "NaN" in meta["test_mmrec_std_over_seeds"].value  # no spread over one seed


# -- vLLM usage statistics -------------------------------------------------------------------


def test_vllm_usage_statistics_are_off_before_vllm_is_imported(tmp_path, monkeypatch):
    """The `vllm` engine left vLLM's usage statistics on. A stand-in `vllm` package records the
    environment it is imported under (then fails to import, as vLLM does without a GPU build)."""
    folder = tmp_path / "Tiny-VLM"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    fake = tmp_path / "site" / "vllm"
    fake.mkdir(parents=True)
    record = tmp_path / "seen.json"
    (fake / "__init__.py").write_text(
        "import json, os\n"
        f"json.dump({{k: os.environ.get(k) for k in ('VLLM_NO_USAGE_STATS', 'DO_NOT_TRACK')}}, open({str(record)!r}, 'w'))\n"
        "raise ImportError('stand-in vllm: environment recorded')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    for name in ("VLLM_NO_USAGE_STATS", "VLLM_DO_NOT_TRACK", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    with pytest.raises(EngineUnavailable, match="vLLM is not importable"):
        build_engine({"kind": "vllm", "model": str(folder)})
    assert json.loads(record.read_text()) == {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


# -- source files ----------------------------------------------------------------------------


def test_an_unclosed_quote_is_reported_on_its_own_line(tmp_path):
    """csv reads on from an unclosed quote to the end of the file; the error named line 31."""
    lines = ["itemID\ttitle\tbrand"] + [f"{i}\tTitle {i}\tBrand" for i in range(30)]
    lines[5] = '4\t"Blanket, 2 pack\tAcme'  # line 6 of the file opens a quote and never closes it
    (tmp_path / "toy.inter").write_text("userID\titemID\n0\t1\n")
    (tmp_path / "items.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as caught:
        read_source("mmrec", tmp_path)
    assert "items.tsv:6: a quoted field opened on this line is never closed" in str(caught.value)

    lines[5] = '4\t"Blanket, 2 pack'  # closed three lines later: one row of the wrong width
    lines[8] = 'x"'
    (tmp_path / "items.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as caught:
        read_source("mmrec", tmp_path)
    assert "items.tsv:6: expected 3 tab-separated fields" in str(caught.value)
    assert "runs from line 6 to line 9" in str(caught.value)


@pytest.mark.parametrize("fmt, header", [("mmrec", "userID\titemID"), ("recbole", "user_id:token\titem_id:token")])
def test_a_repeated_header_line_is_an_error_not_an_interaction(tmp_path, fmt, header):
    rows = "\n".join(f"{u}\t{i}" for u in range(3) for i in range(3))
    (tmp_path / "toy.inter").write_text(f"{header}\n{rows}\n{header}\n{rows}\n")
    with pytest.raises(SourceError) as caught:
        read_source(fmt, tmp_path)
    assert "toy.inter:11: the header line appears again" in str(caught.value)


def test_a_failed_blocking_check_writes_nothing(tmp_path):
    """interactions.parquet was written before its blocking checks ran: a rejected table was
    left on disk. Now a failed check stops the step and the stage's earlier file stays."""
    from tests.test_pipeline_dagster import neggen

    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    (tmp_path / "neggen.yaml").write_text("datasets:\n  toy: {format: mmrec, path: data/toy, kcore: 3}\n")
    pairs = [(u, i) for u in range(12) for i in range(8) if (u + i) % 3]

    def write_source(label_of_user0: int) -> None:
        rows = [f"{u}\t{i}\t{label_of_user0 if u == 0 else (1 if i == 7 else 0)}" for u, i in pairs]
        (data / "toy.inter").write_text("userID\titemID\tx_label\n" + "\n".join(rows) + "\n")

    home = tmp_path / "home"
    write_source(0)
    good = neggen("materialize", "--dataset", "toy", "--select", "interactions", cwd=tmp_path, env_home=home)
    assert good.returncode == 0, good.stderr
    written = home / "toy" / "interactions.parquet"
    before = written.read_bytes()

    write_source(2)  # user 0 now has test interactions only
    bad = neggen("materialize", "--dataset", "toy", "--select", "interactions", cwd=tmp_path, env_home=home)
    assert bad.returncode == 1
    assert "check users_without_train: FAILED" in bad.stderr
    assert "users_without_train: 1 violation(s)" in bad.stderr and "was not written" in bad.stderr
    assert written.read_bytes() == before
    assert not [p for p in written.parent.iterdir() if p.name.endswith(".tmp")]

    written.unlink()  # and with no earlier file, none appears
    bad = neggen("materialize", "--dataset", "toy", "--select", "interactions", cwd=tmp_path, env_home=home)
    assert bad.returncode == 1 and not written.exists()


# -- HTTP engine: a whole-request deadline ---------------------------------------------------


@pytest.fixture
def trickling_server():
    """A real server on 127.0.0.1 that answers a chat completion one byte every 0.25 s, in the
    headers (`/v1/headers/...`) or in the body (`/v1/body/...`)."""
    import socket
    import threading
    import time

    def handle(conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            body = json.dumps({"choices": [{"message": {"content": "slow answer"}, "finish_reason": "stop"}]}).encode()
            headers = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            trickled = headers + body if b"/headers/" in head else body
            try:
                if b"/body/" in head:
                    conn.sendall(headers)
                for byte in trickled:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.25)
            except OSError:
                pass  # the client gave up

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join(timeout=5)
    listener.close()


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_trickling_server_cannot_hold_a_request_past_its_timeout(trickling_server, part):
    """The timeout was per socket read: a reply trickled one byte a second held a request for
    89 s with timeout_s=2. Now timeout_s bounds the whole exchange."""
    import time

    from pipeline.llm.types import Message, Request

    config = {"kind": "openai", "base_url": f"{trickling_server}/{part}", "model": "m",
              "timeout_s": 1.0, "max_retries": 1, "backoff_s": 0.0}  # fmt: skip
    request = Request(messages=(Message.user("hello"),))
    with build_engine(config) as engine:
        started = time.perf_counter()
        (result,) = engine.generate([request])
        elapsed = time.perf_counter() - started
    assert not result.ok and "timed out: no complete reply within 1s" in result.error, result.error
    assert result.tries == 2 and elapsed < 3.5  # two tries of 1 s; the reply would take > 30 s
