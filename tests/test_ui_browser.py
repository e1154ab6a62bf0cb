"""The Dagster UI in a real browser: headless Chromium, driven by Playwright, clicks through
`neggen ui` as a user does.

It opens the UI, finds the asset graph, selects the data assets in it and launches their
materialization for the `demo` partition, waits until the run has succeeded, then materializes
`report` from its asset page and opens the report's figure from the asset's metadata.

Everything is real: a `neggen ui` process on 127.0.0.1 with its own Dagster instance, Dagster
runs launched by the UI's daemon, and Chromium (Debian's `chromium`, not Playwright's download).
The stages between the data assets and `report` (generation, encoding, LightGCN, NegGen,
metrics) are materialized by `neggen materialize` between the two UI runs, on a small demo:
launched from the UI they would run in one process per step, which is slow on one core.

Opt-in (marker `browser`): `bash scripts/install.sh --browser`, then
`.venv/bin/python -m pytest -m browser tests/test_ui_browser.py`. Without Chromium or Playwright
the test skips and says how to install them. With NEGGEN_UI_SCREENSHOTS=DIR it also writes the
README's screenshots into DIR (`ui_materialize_demo.png`, `ui_report_figure.png`). After a
failure, the test's tmp_path holds `last_page.png` (what the browser showed last) and `ui.log`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser

INSTALL_HINT = "install it with `bash scripts/install.sh --browser`"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
UI_START_S = 180
RUN_S = 300

# A small demo, so that the stages between data and report take seconds; a second dataset so
# that the UI offers two partitions and the test has to pick `demo`.
CONFIG = """\
home: home
datasets:
  demo: {format: demo, demo: {n_users: 150, n_items: 60, mean_interactions: 10}}
  other: {format: demo, demo: {n_users: 40, n_items: 30, seed: 7}}
train: {epochs: 8, early_stop_patience: 3, n_layers: 2, seed: 1}
encoding: {image_batch_size: 16}
neggen:
  seeds: [1]
  variants: [neggen]
  sensitivity: {}
baselines: {models: []}
"""
DATA_ASSETS = ("interactions", "items", "users")
# Everything upstream of `report` that is not a data asset.
MIDDLE_SELECTION = "not group:data and not key:report"


def chromium_executable() -> str:
    explicit = os.environ.get("NEGGEN_CHROMIUM")
    if explicit:
        if not Path(explicit).is_file():
            pytest.fail(f"NEGGEN_CHROMIUM={explicit} is not a file")
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}; or set NEGGEN_CHROMIUM): {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def project(tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "NEGGEN_HOME": str(tmp_path / "home")}
    for name in ("DAGSTER_HOME", "NEGGEN_CONFIG"):  # neggen puts the instance in <home>/.dagster
        env.pop(name, None)
    return config, env, tmp_path / "home"


@pytest.fixture
def ui(project):
    """A real `neggen ui` on a free loopback port; SIGTERM to its process group at the end."""
    config, env, _ = project
    port = free_port()
    log = (config.parent / "ui.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "assets.cli", "--config", str(config), "ui", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + UI_START_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None, f"neggen ui exited: {(config.parent / 'ui.log').read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"the UI did not come up in {UI_START_S} s"
                time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def page(tmp_path):
    """Headless Chromium; first, so that a missing browser skips before the UI starts."""
    sync_api = pytest.importorskip("playwright.sync_api", reason=f"Playwright is not installed: {INSTALL_HINT}")
    executable = chromium_executable()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            # Whatever the browser showed last, for a failure's diagnosis.
            page.screenshot(path=str(tmp_path / "last_page.png"))
            browser.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    target = os.environ.get("NEGGEN_UI_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(target) / name)


def choose_partition_and_launch(page, tmp_path: Path, shot: str | None = None) -> None:
    """In the launch dialog: pick the `demo` partition, then launch one run."""
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    options = page.get_by_role("menuitem")
    options.filter(has_text="other").wait_for()  # both datasets are offered
    options.filter(has_text="demo").click()
    if shot:  # the list still open: both partitions, `demo` ticked
        page.wait_for_timeout(500)  # the tick's animation
        screenshot(page, tmp_path, shot)
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
    dialog.get_by_role("button", name="Launch 1 run").click()


def run_status(url: str, run_id: str) -> str:
    query = json.dumps({"query": f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status }} }} }}'}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=query, headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=30))["data"]["runOrError"]["status"]


def wait_for_run_success(page) -> str:
    """Follow the launch toast to the run's page and wait there until Dagster shows it succeeded."""
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url("**/runs/*", timeout=60_000)
    run_id = page.url.rstrip("/").split("/")[-1]
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        for status in ("Failure", "Canceled"):
            assert not page.get_by_text(status, exact=True).first.is_visible(), f"run {run_id}: {status}"
        if page.get_by_text("Success", exact=True).first.is_visible():
            return run_id
        page.wait_for_timeout(1000)
    raise AssertionError(f"run {run_id} did not succeed in {RUN_S} s: {page.locator('body').inner_text()[:2000]}")


def test_materialize_demo_and_see_the_report_figure_in_a_browser(page, project, ui, tmp_path):
    config, env, home = project

    # 1. The UI opens; the asset graph shows the pipeline's groups.
    page.goto(ui)
    page.get_by_role("link", name="Lineage").click()
    page.get_by_text("Global asset lineage").wait_for()
    graph = page.locator("svg").filter(has=page.locator("foreignObject")).first
    for group in ("data", "generation", "encoding", "model", "report"):
        graph.get_by_text(group, exact=True).wait_for()

    # 2. Open the data group in the graph, select its three assets, launch them for `demo`.
    graph.get_by_text("data", exact=True).dblclick()
    for index, name in enumerate(DATA_ASSETS):
        graph.get_by_text(name, exact=True).click(modifiers=["Shift"] if index else [])
    page.get_by_role("button", name="Materialize selected (3)").click()
    page.get_by_role("dialog").get_by_text("Launch runs to materialize 3 assets").wait_for()
    choose_partition_and_launch(page, tmp_path, shot="ui_materialize_demo.png")

    # 3. The run succeeds, and it wrote the demo partition only.
    run_id = wait_for_run_success(page)
    assert run_status(ui, run_id) == "SUCCESS"
    for name in DATA_ASSETS:
        assert (home / "demo" / f"{name}.parquet").is_file(), name
    assert not (home / "other").exists()

    # 4. The stages between data and report, by the CLI on the same Dagster instance.
    done = subprocess.run(
        [sys.executable, "-m", "assets.cli", "--config", str(config), "materialize", "--dataset", "demo",
         "--select", MIDDLE_SELECTION],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (home / "demo" / "metrics.parquet").is_file() and not (home / "demo" / "report").exists()

    # 5. Open `report` from the catalogue and materialize it for `demo` from its page.
    page.get_by_role("link", name="Catalog").click()
    page.locator(".CodeMirror").filter(has_text="Search and filter assets").click()  # the asset search box
    page.keyboard.type("report")
    page.keyboard.press("Enter")
    page.get_by_text("Assets", exact=True).first.click()  # the page title: closes the suggestions
    page.locator("[data-radix-popper-content-wrapper]").wait_for(state="detached")
    page.locator("a[href='/assets/report']").click()
    page.wait_for_url("**/assets/report**")
    page.get_by_role("button", name="Materialize").first.click()
    choose_partition_and_launch(page, tmp_path)
    run_id = wait_for_run_success(page)
    assert run_status(ui, run_id) == "SUCCESS"

    # 6. Back on the asset: its metadata holds the figure, which the browser decodes and shows.
    page.go_back()
    page.wait_for_url("**/assets/report**")
    page.reload()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="fig3", exact=True))
    row.get_by_text("Show Markdown").click()
    image = page.get_by_role("dialog").locator("img[alt='fig3']")
    image.wait_for()
    width, height = image.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
    assert width >= 300 and height >= 200
    shown = base64.b64decode(image.get_attribute("src").split(",", 1)[1])
    [written] = (home / "demo" / "report").glob("fig3*.png")
    assert shown == written.read_bytes()  # the PNG the report stage wrote
    screenshot(page, tmp_path, "ui_report_figure.png")
