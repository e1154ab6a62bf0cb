"""`neggen ui` serves the Dagster UI on 127.0.0.1 with the project's assets, one partition per dataset."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_serves_assets_partitioned_by_dataset(tmp_path):
    port = free_port()
    env = {**os.environ, "NEGGEN_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    env.pop("NEGGEN_CONFIG", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "assets.cli", "ui", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the UI process exited"
                assert time.time() < deadline, "the UI did not come up in 180 s"
                time.sleep(1)
        query = json.dumps({"query": "{ assetNodes { assetKey { path } partitionKeys } }"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", data=query, headers={"content-type": "application/json"}
        )
        nodes = json.load(urllib.request.urlopen(request, timeout=30))["data"]["assetNodes"]
        by_key = {"/".join(n["assetKey"]["path"]): n["partitionKeys"] for n in nodes}
        assert {"interactions", "items", "users"} <= set(by_key)
        assert "demo" in by_key["interactions"]
        # Nothing listens beyond loopback.
        with socket.socket() as probe:
            probe.settimeout(1)
            other = socket.gethostbyname(socket.gethostname())
            if not other.startswith("127."):
                assert probe.connect_ex((other, port)) != 0
        settings = yaml.safe_load((tmp_path / "home" / ".dagster" / "dagster.yaml").read_text())
        assert settings["telemetry"]["enabled"] is False and settings["nux"]["enabled"] is False
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
