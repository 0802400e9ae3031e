"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against `parallax-probe dashboard`.

Waits as Streamlit's own end-to-end tests do (app connected, script not running, no
skeleton), then checks that every Plotly chart is drawn and no exception box is shown.
Screenshots go to test-artifacts/. Playwright never downloads a browser here: without
/usr/bin/chromium (Debian package `chromium`) the browser tests skip.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import test_dashboard_support as support

from parallax_probe.dashboards.serve import NotServing, serving
from parallax_probe.store import RunWriter, open_run

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



@contextlib.contextmanager
def dashboard_server(runs_dir: Path) -> Iterator[str]:
    """`parallax-probe dashboard RUNS_DIR --port P` until the block ends; yields its URL."""
    with tempfile.NamedTemporaryFile("w", dir=runs_dir.parent, prefix="dashboard-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        try:
            with serving(lambda port: [str(support.CLI), "dashboard", str(runs_dir), "--port", str(port)],
                         stdout=log, stderr=subprocess.STDOUT) as url:
                yield url
        except NotServing as error:
            pytest.fail(f"{error}: {log_path.read_text()}")


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
    page = open_page(browser, f"{server}?page=COR&group_by=seed&merge=true", charts=1)
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
            "() => Array.from(document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .gtitle'))"
            ".some(t => t.textContent.includes('per layer'))",
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


# What Plotly holds for every chart of the page: title, and per trace its name, colour, opacity
# and values (from _fullData, where typed arrays are decoded).
_CHARTS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')).map(g => ({
    title: g.layout.title.text,
    yaxes: Object.keys(g._fullLayout).filter(k => k.startsWith('yaxis')).map(k => g._fullLayout[k].type),
    traces: g._fullData.map(t => ({name: t.name, type: t.type, color: t.line && t.line.color, opacity: t.opacity,
                                   x: t.x ? Array.from(t.x) : [], y: t.y ? Array.from(t.y) : [],
                                   z: t.z ? Array.from(t.z, row => Array.from(row)) : []})),
}))"""


def charts(page) -> list[dict]:
    return page.evaluate(_CHARTS_JS)


def chart_titled(page, part: str) -> dict:
    found = [c for c in charts(page) if part in c["title"]]
    assert len(found) == 1, [c["title"] for c in charts(page)]
    return found[0]


def url_params(page) -> dict[str, list[str]]:
    return page.evaluate("""() => { const p = new URLSearchParams(location.search), out = {};
        for (const k of new Set(p.keys())) out[k] = p.getAll(k); return out; }""")


def wait_for_param(page, key: str, value: str) -> None:
    page.wait_for_function(f"() => new URLSearchParams(location.search).getAll({key!r}).includes({value!r})", timeout=WAIT_MS)


# Every control that changes what is drawn, set away from its default, and a piece of the
# chart title (or trace name) that shows it took effect. The runs: 2 layers, 40 steps, spectra every 10.
ROUND_TRIPS = [
    ({"page": ["COR"], "run": ["muon-s1", "adamw-s1", "muon-s0"], "filter": ["seed=1"], "group_by": ["run"],
      "merge": ["true"], "groups-run": ["muon-s1"], "steps": ["10", "30"], "log": ["true"], "refresh": ["7"],
      "image_format": ["svg"], "cor-view": ["Per layer"], "cor-layers": ["1"], "cor-ema": ["0.3"], "cor-band": ["min-max over seeds"]},
     "EMA 0.3"),
    ({"page": ["COR"], "cor-view": ["Per head"], "cor-head-layer": ["0"]}, "COR per head"),
    ({"page": ["COR"], "cor-view": ["Against depth"], "cor-depth-latest": ["false"], "cor-depth-step": ["20"]}, "at step 20"),
    ({"page": ["W_R rank"], "wr-measure": ["effective rank"], "wr-layer": ["0"]}, "layer 0"),  # the first view: no wr-view
    ({"page": ["W_R rank"], "wr-view": ["Spectrum"], "wr-spectrum-layer": ["0"], "wr-spectrum-step": ["20"],
      "wr-spectrum-log": ["false"]}, "singular values, layer 0"),
    ({"page": ["W_R rank"], "wr-view": ["W_RK circuit"], "wrk-layer": ["0"], "wrk-step": ["20"]}, "at step 20"),
    ({"page": ["W_R rank"], "wr-view": ["Per head"], "wr-measure": ["effective rank / min(m, n)"]}, "effective rank / min(m, n)"),
    ({"page": ["Probe norms"], "probe-view": ["Distribution per layer"], "probe-layers": ["0"], "probe-ema": ["0.5"]}, "EMA 0.5"),
    ({"page": ["Training"], "training-ema": ["0.2"]}, "EMA 0.2"),
]


@requires_chromium
@pytest.mark.browser
@pytest.mark.parametrize(
    ("params", "shown"), ROUND_TRIPS, ids=[p["page"][0] + "-" + "-".join(k for k in p if k != "page")[:40] for p, _ in ROUND_TRIPS]
)
def test_every_control_round_trips_through_the_url(server, browser, params, shown):
    query = urllib.parse.urlencode([(k, v) for k, values in params.items() for v in values])
    page = open_page(browser, f"{server}?{query}", charts=1)
    try:
        assert page.locator('[data-testid="stException"]').count() == 0
        kept = url_params(page)
        # A value the app did not accept would have been dropped from the URL.
        assert {k: kept.get(k) for k in params} == params
        titles = [c["title"] for c in charts(page)]
        assert any(shown in t for t in titles), titles
        if "steps" in params:
            (fig,) = charts(page)
            assert {t["name"] for t in fig["traces"] if t["name"] and "smoothed" not in t["name"]} == {"muon-s1 (1 run)"}
            steps = [x for t in fig["traces"] for x in t["x"]]
            assert min(steps) >= 10 and max(steps) <= 30
            assert set(fig["yaxes"]) == {"log"}
    finally:
        page.close()


@requires_chromium
@pytest.mark.browser
def test_a_changed_control_goes_into_the_url_and_the_link_reopens_it(server, browser):
    page = open_page(browser, f"{server}?page=COR&cor-view=Per+layer", charts=1)
    try:
        page.locator('[data-testid="stSidebar"] [data-testid="stCheckbox"]').filter(has_text="Log y axes").locator("label").click()
        wait_for_param(page, "log", "true")
        wait_until_drawn(page, charts=1)
        link = page.url
    finally:
        page.close()
    page = open_page(browser, link, charts=1)
    try:
        assert set(chart_titled(page, "per layer")["yaxes"]) == {"log"}
    finally:
        page.close()


@requires_chromium
@pytest.mark.browser
def test_colours_stay_after_removing_a_group(server, browser):
    page = open_page(browser, f"{server}?page=COR&cor-view=Per+layer", charts=1)
    try:
        def colours() -> dict[str, str]:
            return {t["name"]: t["color"] for t in chart_titled(page, "per layer")["traces"] if t["name"]}

        before = colours()
        assert before["muon (2 runs)"] != before["adamw (2 runs)"]
        page.locator('[data-testid="stSidebar"] button[aria-label="Remove adamw"]').first.click()
        wait_for_param(page, "groups-optimizer", "muon")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".every(g => !g._fullData.some(t => (t.name || '').startsWith('adamw')))",
            timeout=WAIT_MS,
        )
        wait_until_drawn(page, charts=1)
        after = colours()
        assert "adamw (2 runs)" not in after and after["muon (2 runs)"] == before["muon (2 runs)"]
        screenshot(page, "colours-after-removing-a-group")
    finally:
        page.close()


@requires_chromium
@pytest.mark.browser
def test_per_head_view_draws_the_normalised_ranks(server, browser, runs):
    page = open_page(browser, f"{server}?page=W_R+rank&wr-view=Per+head&wr-measure=effective+rank+/+min(m,+n)", charts=1)
    try:
        fig = chart_titled(page, "of each head block")
        assert "effective rank / min(m, n)" in fig["title"]
        heads = [open_run(runs / f"muon-s{seed}") for seed in support.SEEDS]
        head_k = heads[0].tables["wr"].column("head_singular_values").shape[-1]
        expected = np.mean([run["wr/head_effective_rank"][-1] for run in heads], axis=0) / head_k  # (L, H)
        (muon,) = [t for t in fig["traces"] if t["type"] == "heatmap" and t["name"].startswith("muon")]
        np.testing.assert_allclose(np.array(muon["z"]), expected, rtol=1e-5)
        assert np.array(muon["z"]).max() <= 1
        screenshot(page, "wr-per-head-normalised")
    finally:
        page.close()


@requires_chromium
@pytest.mark.browser
def test_evaluation_points_are_drawn_as_logged(server, browser, runs):
    page = open_page(browser, f"{server}?page=Training", charts=1)
    try:
        traces = {t["name"]: t for t in chart_titled(page, "training")["traces"] if t["name"]}
        logged = []
        for seed in support.SEEDS:
            column = open_run(runs / f"muon-s{seed}")["scalars/eval_loss"]
            logged.append(column[np.isfinite(column)])
        np.testing.assert_allclose(traces["muon (2 runs) held-out"]["y"], np.mean(logged, axis=0), rtol=1e-6)
        raw = traces["muon (2 runs), not smoothed"]
        assert raw["opacity"] < 1 and raw["y"] != traces["muon (2 runs)"]["y"]
    finally:
        page.close()


@requires_chromium
@pytest.mark.browser
def test_a_run_started_after_the_tab_opened_appears_in_it(runs, tmp_path, browser):
    """A tab opened while nothing is live; then a real training process starts writing a new run."""
    runs_dir = tmp_path / "runs"
    shutil.copytree(runs / "muon-s0", runs_dir / "muon-s0")
    with dashboard_server(runs_dir) as url:
        page = open_page(browser, f"{url}?page=Runs&refresh=1")
        training = None
        try:
            page.evaluate("window.__stillTheSamePage = true")
            args = [a if a != "40" else "2000" for a in support.TRAIN_ARGS]  # --steps 2000: live for the whole test
            training = subprocess.Popen(
                [str(support.CLI), "train", *args, "--optimizer", "adamw", "--seed", "0", "--out", str(runs_dir / "new-run")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            # No click: the folder watcher finds the run and the app adds it to the picked runs.
            page.locator('[data-testid="stSidebar"] [aria-label="new-run"]').first.wait_for(timeout=WAIT_MS)
            page.get_by_text(re.compile(r"Live: new-run at step \d+")).wait_for(timeout=WAIT_MS)
            first = int(re.search(r"new-run at step (\d+)", page.get_by_text(re.compile("Live: new-run")).first.inner_text()).group(1))
            page.wait_for_function(
                f"() => {{ const m = document.body.innerText.match(/new-run at step (\\d+)/); return m && +m[1] > {first}; }}",
                timeout=WAIT_MS,
            )
            assert page.evaluate("window.__stillTheSamePage === true")
            assert page.locator('[data-testid="stException"]').count() == 0
            screenshot(page, "new-run-appeared")
        finally:
            if training is not None:
                training.terminate()
                training.wait(timeout=60)
            page.close()


class _Beacon(http.server.BaseHTTPRequestHandler):
    """Records every request: a page that fetched the payload's image or followed its link would show up here."""

    requests: list[str] = []

    def do_GET(self):
        _Beacon.requests.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@requires_chromium
@pytest.mark.browser
def test_markdown_in_metadata_fetches_nothing_and_links_nowhere(tmp_path, browser):
    beacon = http.server.HTTPServer(("127.0.0.1", 0), _Beacon)
    threading.Thread(target=beacon.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{beacon.server_address[1]}"
    payload = f"muon ![b]({address}/beacon.png) [Re-login]({address}/phish)"
    html_payload = f'<a href="{address}/phish">Re-login</a> <img src="{address}/beacon.png">'
    runs_dir = tmp_path / "runs"
    support.write_run(runs_dir / "plain", layers=2, heads=2, optimizer=payload)
    support.write_run(runs_dir / "html", layers=2, heads=2, optimizer=html_payload, seed=1)
    _Beacon.requests.clear()
    try:
        with dashboard_server(runs_dir) as url:
            for name in PAGES:
                page = open_page(browser, f"{url}?page={name.replace(' ', '+')}", charts=0 if name == "Runs" else 1)
                try:
                    page.wait_for_timeout(500)  # time for an image request, had one been made
                    assert page.locator(f'a[href^="{address}"], img[src^="{address}"], [href^="{address}"]').count() == 0, name
                    assert page.locator('[data-testid="stException"]').count() == 0, name
                    if name == "Runs":
                        page.get_by_text(f"![b]({address}/beacon.png)", exact=False).first.wait_for(timeout=WAIT_MS)
                        screenshot(page, "escaped-metadata")
                finally:
                    page.close()
        assert _Beacon.requests == []
    finally:
        beacon.shutdown()


@requires_chromium
@pytest.mark.browser
def test_the_tokens_page_draws_the_prompt_and_p_and_w_for_each_chosen_head(tmp_path, browser):
    beacon = "http://127.0.0.1:9/beacon.png"
    tokens = ["<b>", "bold", "</b>", f"![x]({beacon})", " ", "\\n", *"abcdefghijklmnopqrstuvwxyzABCD"]  # 36: two rows
    runs_dir = tmp_path / "runs"
    support.write_run(runs_dir / "plain", layers=2, heads=2)
    trace, maps = support.write_trace_file(runs_dir / "traces" / "prompt.h5", tokens)
    with dashboard_server(runs_dir) as url:
        for index, (layer, head) in enumerate(maps):
            label = f"layer {layer}, head {head}"
            query = urllib.parse.urlencode({"page": "Tokens", "tokens-map": label, "tokens-layer": str(layer), "tokens-head": str(head)})
            page = open_page(browser, f"{url}?{query}", charts=3)
            try:
                assert page.locator('[data-testid="stException"]').count() == 0
                assert url_params(page).get("tokens-map") == ([label] if index else None)  # the default is left out of the URL
                p_and_w = [t for t in chart_titled(page, f"p and w of {label}")["traces"] if t["type"] == "heatmap"]
                assert [t["name"] for t in p_and_w] == ["p", "w"]
                past = np.tril(np.ones((len(tokens), len(tokens)), dtype=bool))  # keys after the query are blank (NaN)
                for drawn, stored in zip(p_and_w, (trace.p[index], trace.w[index])):
                    np.testing.assert_allclose(np.array(drawn["z"], dtype=float), np.where(past, stored, np.nan), rtol=1e-6, atol=1e-7)
                strip = chart_titled(page, f"COR, layer {layer}, head {head}")
                cor = np.array(strip["traces"][0]["z"], dtype=float).ravel()[: len(tokens)]
                np.testing.assert_allclose(cor, trace.per_token["cor"][layer, head], rtol=1e-5)
                # token strings are plain text: the markup shows as written and makes no element or request
                chart = page.locator('[data-testid="stPlotlyChart"]').first
                assert "<b>" in chart.inner_text() and "![x](ht\u2026" in chart.inner_text()  # cut to 8 characters
                assert (
                    page.locator('[data-testid="stPlotlyChart"] b, [href^="http://127.0.0.1:9"], [src^="http://127.0.0.1:9"]').count() == 0
                )
                assert len(chart_titled(page, "negative and sink mass")["traces"]) == 4
                screenshot(page, f"tokens-{layer}-{head}")
            finally:
                page.close()
