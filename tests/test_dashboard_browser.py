"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against `parallax-probe dashboard`.

Waits as Streamlit's own end-to-end tests do (app connected, script not running, no
skeleton), then checks that every Plotly chart is drawn and no exception box is shown.
Screenshots go to test-artifacts/. Playwright never downloads a browser here: without
/usr/bin/chromium (Debian package `chromium`) the browser tests skip.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_dashboard_support as support  # noqa: E402

from parallax_probe.store import RunWriter  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
PAGES = ("Runs", "COR", "W_R rank", "Probe norms", "Training", "Rank collapse")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
# Tall enough that every chart of a page is on screen: Streamlit draws charts that are visible.
VIEWPORT = {"width": 1400, "height": 3400}
WAIT_MS = 90_000

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium: install the Debian package `chromium` (apt-get install chromium)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard_server(runs_dir: Path) -> Iterator[str]:
    """`parallax-probe dashboard RUNS_DIR --port P` until the block ends; yields its URL."""
    port = free_port()
    log = open(runs_dir.parent / f"dashboard-{port}.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([str(support.CLI), "dashboard", str(runs_dir), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            assert server.poll() is None, f"the dashboard exited with {server.returncode}: {Path(log.name).read_text()}"
            assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return support.train_runs(tmp_path_factory.getbasetemp() / "dashboard-runs")


@pytest.fixture(scope="module")
def server(runs) -> Iterator[str]:
    with dashboard_server(runs) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium: install the Debian package `chromium` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our own.
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


# Marks Plotly draws into its SVG: scatter traces and heatmap images. A chart's .main-svg
# appears before its data is drawn, so waiting for it alone is not enough.
MARKS = ".scatterlayer .trace, .heatmaplayer .hm"


def wait_until_drawn(page, charts: int = 0) -> None:
    """Connected, script finished, no skeleton (Streamlit's own wait), the page's output there, and at
    least `charts` Plotly charts, each drawn (its SVG and its marks)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=WAIT_MS)
    page.wait_for_function(
        """([marks, charts]) => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
            if (document.querySelector('[data-testid="stSkeleton"]')) return false;
            if (!document.querySelector('[data-testid="stMain"] [data-testid="stHeading"]')) return false;
            const found = Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'));
            return found.length >= charts && found.every(c => c.querySelector('.main-svg') && c.querySelector(marks));
        }""",
        arg=[MARKS, charts],
        timeout=WAIT_MS,
    )


def open_page(context, url: str, charts: int = 0):
    page = context.new_page()
    page.goto(url)
    wait_until_drawn(page, charts)
    return page


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"))


@requires_chromium
@pytest.mark.browser
def test_every_page_draws_its_charts(server, browser):
    for name in PAGES:
        page = open_page(browser, f"{server}?page={name.replace(' ', '+')}", charts=0 if name == "Runs" else 1)
        try:
            assert page.locator('[data-testid="stException"]').count() == 0, name
            charts = page.locator('[data-testid="stPlotlyChart"]')
            if name != "Runs":
                assert charts.count() >= 1, name
                assert page.locator('[data-testid="stPlotlyChart"] .main-svg').count() >= charts.count(), name
                for chart in charts.all():
                    assert chart.locator(MARKS).count() >= 1, name
            else:
                assert page.locator('[data-testid="stDataFrame"]').count() >= 1
            screenshot(page, name.lower().replace(" ", "-").replace("_", ""))
        finally:
            page.close()


@requires_chromium
@pytest.mark.browser
def test_picking_groups_in_the_browser_redraws(server, browser):
    page = open_page(browser, f"{server}?page=COR&group_by=seed", charts=1)
    try:
        titles = page.locator('[data-testid="stPlotlyChart"] .gtitle, [data-testid="stPlotlyChart"] .annotation-text').all_text_contents()
        assert any("0 (2 runs)" in t for t in titles) and any("0 - 1" in t for t in titles)
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()


def chart_titles(page) -> list[str]:
    return page.locator('[data-testid="stPlotlyChart"] .gtitle').all_text_contents()


@requires_chromium
@pytest.mark.browser
def test_a_view_button_draws_that_view_and_the_url_links_to_it(server, browser):
    page = open_page(browser, f"{server}?page=COR", charts=1)
    try:
        assert any("layer x step" in t for t in chart_titles(page))
        page.locator('[data-testid="stButtonGroup"]').get_by_role("radio", name="Per layer").click()
        page.wait_for_function("() => new URLSearchParams(location.search).get('cor-view') === 'Per layer'", timeout=WAIT_MS)
        wait_until_drawn(page, charts=1)
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .gtitle')).some(t => t.textContent.includes('per layer'))",
            timeout=WAIT_MS,
        )
        assert not any("layer x step" in t for t in chart_titles(page)), "the other views are not drawn"
    finally:
        page.close()
    page = open_page(browser, f"{server}?page=COR&cor-view=Against+depth", charts=1)
    try:
        assert any("against depth" in t for t in chart_titles(page))
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()


@requires_chromium
@pytest.mark.browser
def test_a_live_run_refreshes_without_a_page_reload(tmp_path, browser):
    runs_dir = tmp_path / "runs"
    tables = support.probe_tables(2, 2)
    writer = RunWriter(runs_dir / "live", tables=tables, meta={"optimizer": "muon", "seed": 0}, start_step=0, fsync_every_s=None)
    try:
        support.append_rows(writer, range(0, 20), 2, 2)
        with dashboard_server(runs_dir) as url:
            page = open_page(browser, f"{url}?page=COR&refresh=1", charts=1)
            try:
                page.get_by_text("live at step 19").wait_for(timeout=WAIT_MS)
                # A full reload would lose this; a fragment re-run keeps it.
                page.evaluate("window.__stillTheSamePage = true")
                support.append_rows(writer, range(20, 40), 2, 2)
                page.get_by_text("live at step 39").wait_for(timeout=WAIT_MS)
                wait_until_drawn(page, charts=1)
                assert page.evaluate("window.__stillTheSamePage === true")
                assert page.locator('[data-testid="stException"]').count() == 0
                screenshot(page, "live")
            finally:
                page.close()
    finally:
        writer.close()


def _websocket_handshake(url: str, host: str) -> int:
    """HTTP status of a WebSocket upgrade to Streamlit's stream, sent with the given Host header."""
    address = url.split("//")[1].rstrip("/")
    connection = http.client.HTTPConnection(*address.split(":"), timeout=10)
    try:
        connection.putrequest("GET", "/_stcore/stream", skip_host=True)
        for name, value in {
            "Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "streamlit",
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_only_the_bound_host_names_may_open_the_app(server):
    port = server.rstrip("/").rsplit(":", 1)[1]
    assert _websocket_handshake(server, f"127.0.0.1:{port}") == 101
    assert _websocket_handshake(server, f"localhost:{port}") == 101
    assert _websocket_handshake(server, f"attacker.example:{port}") != 101  # DNS rebinding: refused


@requires_chromium
@pytest.mark.browser
def test_readme_screenshots(browser):
    """docs/dashboard-cor.png, dashboard-cor-layers.png and dashboard-wr.png from the demo's runs.

    Runs only when PARALLAX_PROBE_DEMO_RUNS names the folder `parallax-probe demo --out` wrote
    (the demo trains for minutes, so the usual test run does not make it).
    """
    demo = os.environ.get("PARALLAX_PROBE_DEMO_RUNS")
    if not demo:
        pytest.skip("set PARALLAX_PROBE_DEMO_RUNS to the folder of `parallax-probe demo --out DIR` to redraw the README screenshots")
    with dashboard_server(Path(demo)) as url:
        views = (("COR", "dashboard-cor.png", 780), ("COR&cor-view=Per+layer", "dashboard-cor-layers.png", 780),
                 ("W_R+rank", "dashboard-wr.png", 1500))
        for name, file, height in views:
            page = browser.new_page()
            page.set_viewport_size({"width": 1400, "height": height})
            try:
                page.goto(f"{url}?page={name}")
                wait_until_drawn(page, charts=1)
                assert page.locator('[data-testid="stException"]').count() == 0
                page.screenshot(path=str(REPO / "docs" / file))
            finally:
                page.close()
