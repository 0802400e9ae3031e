"""How long the dashboard takes to open a large run: 100,000 logged steps x 28 layers x 16 heads.

    .venv/bin/python benchmarks/dashboard_load.py              # writes the runs once (minutes), then measures
    .venv/bin/python benchmarks/dashboard_load.py --browser    # also times page loads in Debian's chromium
    .venv/bin/python benchmarks/dashboard_load.py --browser-only

The runs are synthetic, written with the store's own `RunWriter` in the probe's schema
(Qwen3-0.6B shapes: 28 layers, 16 heads, head dim 128, d_model 1024; 1,000 spectra rows),
one Muon-like and one AdamW-like, so there are two groups to compare. They are kept in
--dir and reused.

Tables printed:
1. reading: each loader of dashboards/data.py on one run, cold (a fresh process) — what
   the store's reader costs per column (closed segments are gzip-compressed);
2. pages: a whole script run of each page in Streamlit's AppTest, in a fresh process per
   page: cold (first run: the files are read) and warm (second run: Streamlit's cache,
   keyed by file size and mtime), for one run (`?run=muon-s0`) and for both groups;
   `kB` is the JSON of the page's figures, what the browser parses and draws;
3. browser (--browser): chromium against `parallax-probe dashboard`, both groups: a fresh
   load of each page's URL on a cold server (first chart drawn, every chart drawn), the
   same again (warm), and a switch to the page from the sidebar of an open app (warm, no
   page reload: what a user clicking through the pages sees); then a first visit: each
   page's URL in a new chromium profile (empty browser cache: Streamlit's frontend is
   fetched and parsed again) on the now warm server, and that profile's second load (warm);
   and the same first visits of two minimal Streamlit apps, the floor under any page: one
   Plotly chart, and one chart with the control types of a chart page (`FLOOR_APPS`).
   Goals: warm <= 2 s, first visit <= 2.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results import add_result_args, write_result

from parallax_probe.dashboards.serve import serving
from parallax_probe.store import RunWriter, head_means, open_run
from parallax_probe.store import probe_tables as probe_schema

PAGES = ("Runs", "COR", "W_R rank", "Probe norms", "Training", "Rank collapse")
BUDGET_S = 2.0


def _ranks(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable and effective rank over the last axis (docs/definitions.md section 2)."""
    stable = (s**2).sum(-1) / (s.max(-1) ** 2)
    p = s / s.sum(-1, keepdims=True)
    effective = np.exp(-(p * np.log(np.where(p > 0, p, 1))).sum(-1))
    return stable.astype(np.float32), effective.astype(np.float32)


def write_run(path: Path, *, optimizer: str, steps: int, spectra_rows: int, L: int, H: int, D: int, C: int, seed: int) -> None:
    """A synthetic run: COR growing with depth (faster under "muon"), W_R's spectrum decaying (faster under "adamw")."""
    rng = np.random.default_rng(seed)
    k, d = min(H * D, C), min(D, C)
    depth = np.linspace(0.2, 1.0, L, dtype=np.float32)[:, None]
    growth = 8.0 if optimizer == "muon" else 3.0
    decay = 0.2 if optimizer == "muon" else 2.0
    spectra_every = max(1, steps // spectra_rows)
    block = 1000
    meta = {"optimizer": optimizer, "preset": "qwen3-0.6b", "attention": "parallax", "seed": seed, "task": "synthetic",
            "layers": L, "heads": H, "head_dim": D}
    with RunWriter(path, tables=probe_schema(L, H, D, C), meta=meta, mode="overwrite", start_step=0, fsync_every_s=None) as writer:
        for first in range(0, steps, block):
            rows = np.arange(first, min(steps, first + block))
            t = (rows / steps).astype(np.float32)[:, None, None]
            noise = rng.standard_normal((len(rows), L, H), dtype=np.float32)
            cor = growth * t * depth[None] * (1 + 0.1 * noise) + 0.05
            norm = 1 + 4 * t * depth[None] + 0.05 * noise
            for i, step in enumerate(rows):
                step = int(step)
                c = cor[i]
                row = dict(
                    cor_mean=c, cor_p50=0.8 * c, cor_p90=1.6 * c, cor_max=3 * c,
                    sum_osm_sq=np.full((L, H), 512.0, np.float32), sum_c_sq=512 * c**2, sum_osm_c=np.zeros((L, H), np.float32),
                    tokens=np.full((L, H), 512), probe_norm_mean=norm[i], probe_norm_p50=0.9 * norm[i], probe_norm_p90=1.3 * norm[i],
                    probe_norm_max=2 * norm[i], nonfinite=np.zeros((L, H), np.int64), probe_gain_norm=np.full(L, 11.3, np.float32),
                )
                writer.append("attn", step, **row, **head_means(row))
                if step % 10 == 0:
                    lr = min(1.0, step / 1000) * 0.5 * (1 + np.cos(np.pi * step / steps))
                    writer.append("scalars", step, loss=float(3 * np.exp(-3 * step / steps) + 0.1 * rng.random()), lr_multiplier=lr,
                                  grad_norm=float(1 + rng.random()), tokens_per_second=1e5)
                if step % spectra_every == 0:
                    frac = step / steps
                    s = np.exp(-decay * frac * np.arange(k) / 64, dtype=np.float64)[None] * (1 + 0.01 * rng.random((L, 1)))
                    sh = np.exp(-decay * frac * np.arange(d) / 8)[None, None] * np.ones((L, H, 1))
                    stable, effective = _ranks(s)
                    head_stable, head_effective = _ranks(sh)
                    writer.append(
                        "wr",
                        step,
                        singular_values=s.astype(np.float32),
                        stable_rank=stable,
                        effective_rank=effective,
                        head_singular_values=sh.astype(np.float32),
                        head_stable_rank=head_stable,
                        head_effective_rank=head_effective,
                    )
                    writer.append(
                        "wrk", step, singular_values=(0.5 * sh).astype(np.float32), stable_rank=head_stable, effective_rank=head_effective
                    )
            writer.commit()


def ensure_runs(folder: Path, steps: int, spectra_rows: int) -> list[Path]:
    shape = dict(L=28, H=16, D=128, C=1024)
    paths = []
    for optimizer, seed in (("muon", 0), ("adamw", 0)):
        path = folder / f"{optimizer}-s{seed}"
        try:
            run = open_run(path)
            # Runs written before the per-layer head-mean columns existed are written again.
            ready = run.status == "closed" and run.steps_logged == steps and run.layers == shape["L"] and "attn/layer_cor_mean" in run
        except (FileNotFoundError, ValueError):
            ready = False
        if not ready:
            t0 = time.perf_counter()
            write_run(path, optimizer=optimizer, steps=steps, spectra_rows=spectra_rows, seed=seed, **shape)
            print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        paths.append(path)
    return paths


def read_columns(path: str) -> dict:
    """Seconds for each loader of the dashboard on one run (call in a fresh process: nothing cached)."""
    from parallax_probe.dashboards import data

    loads = {
        "attn/cor_mean, head means": lambda: data.load_layer_series(Path(path), ("attn/cor_mean",)),
        "attn/cor_mean, one layer's heads": lambda: data.load_head_buckets(Path(path), "attn/cor_mean", 27),
        "attn/cor_p50, head means": lambda: data.load_layer_series(Path(path), ("attn/cor_p50",)),
        "attn/probe_norm_mean, head means": lambda: data.load_layer_series(Path(path), ("attn/probe_norm_mean",)),
        "wr ranks": lambda: data.load_spectra(Path(path), "wr"),
        "wr spectra, one layer": lambda: data.load_spectrum(Path(path), "wr", 27),
        "wrk ranks": lambda: data.load_spectra(Path(path), "wrk"),
        "wrk spectra, one layer": lambda: data.load_spectrum(Path(path), "wrk", 27),
        "attn/cor_mean, every head (older runs' path)": lambda: open_run(Path(path))["attn/cor_mean"],
        "scalars": lambda: data.load_scalars(Path(path)),
    }
    out = {}
    for name, load in loads.items():
        t0 = time.perf_counter()
        load()
        out[name] = {"cold": time.perf_counter() - t0}
    return out


def apptest_page(folder: str, page: str, runs: list[str]) -> dict:
    """One page in Streamlit's AppTest: the first script run reads the files (cold), the second hits the cache."""
    from streamlit.testing.v1 import AppTest

    def dashboard(runs_dir: str, page: str) -> None:
        import streamlit as st

        from parallax_probe.dashboards.app import main

        st.session_state.setdefault("page", page)
        main(runs_dir)

    at = AppTest.from_function(dashboard, kwargs={"runs_dir": folder, "page": page}, default_timeout=600)
    if runs:
        at.query_params["run"] = runs
    row = {}
    for attempt in ("cold", "warm"):
        t0 = time.perf_counter()
        at.run()
        row[attempt] = time.perf_counter() - t0
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].value}")
    charts = at.get("plotly_chart")
    row["charts"] = len(charts)
    row["kB"] = f"{sum(len(c.proto.spec) for c in charts) / 1e3:,.0f}"
    return row


def in_fresh_process(call: str) -> dict:
    """Evaluate `call` (an expression over this module) in a new interpreter; its JSON result."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import dashboard_load as b; print(json.dumps(b.{call}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_pages(folder: Path, runs: list[str]) -> dict:
    return {page: in_fresh_process(f"apptest_page({str(folder)!r}, {page!r}, {runs!r})") for page in PAGES}



# Installed in the page before a navigation's script run starts: records when Streamlit's script
# starts running, when the first chart has its marks drawn, and when the run is over with every
# chart drawn. Times are performance.now(), milliseconds since the page's navigation started.
_WATCH_JS = """() => {
    const w = window.__bench = {sawRunning: false, first: null, done: null, t0: performance.now()};
    const marks = '.scatterlayer .trace, .heatmaplayer .hm';
    function tick() {
        const app = document.querySelector('[data-testid="stApp"]');
        const state = app && app.getAttribute('data-test-script-state');
        if (state === 'running') w.sawRunning = true;
        const charts = Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'));
        const drawn = charts.filter(c => c.querySelector('.main-svg') && c.querySelector(marks));
        if (w.sawRunning && w.first === null && drawn.length) w.first = performance.now();
        if (w.sawRunning && state === 'notRunning' && !document.querySelector('[data-testid="stSkeleton"]')
            && charts.length >= w.minCharts && drawn.length === charts.length) { w.done = performance.now(); return; }
        requestAnimationFrame(tick);
    }
    w.start = (minCharts) => { w.minCharts = minCharts; tick(); };
}"""


def _timed_load(page, url: str) -> tuple[float, float | None]:
    """(seconds to every chart drawn, seconds to the first chart), from the start of navigating to `url`."""
    page.goto(url)
    page.wait_for_function("window.__bench && window.__bench.done !== null", timeout=600_000, polling=50)
    done, first = page.evaluate("[window.__bench.done, window.__bench.first]")
    return done / 1000, None if first is None else first / 1000


def _timed_click(page, locator, min_charts: int) -> float:
    """Seconds from clicking `locator` (a page in the sidebar) to every chart of the new page drawn."""
    page.evaluate(_WATCH_JS)
    t0 = page.evaluate(f"window.__bench.start({min_charts}), window.__bench.t0")
    locator.click()
    page.wait_for_function("window.__bench.done !== null", timeout=600_000, polling=50)
    return (page.evaluate("window.__bench.done") - t0) / 1000


def measure_browser(folder: Path, first_visits: int = 3) -> dict:
    """Per page: a load of its URL on a cold server (first chart, every chart drawn), the same
    again (warm), and a switch to it from the sidebar of an open app (warm, no page reload)."""
    from playwright.sync_api import sync_playwright

    def command(port: int) -> list[str]:
        return [str(Path(sys.executable).with_name("parallax-probe")), "dashboard", str(folder), "--port", str(port)]

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    results = {}
    try:
        with serving(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as url, sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path="/usr/bin/chromium", headless=True, viewport={"width": 1600, "height": 1000},
                args=_CHROMIUM_ARGS,
            )
            page = context.new_page()
            # Every page but Runs draws charts; the Runs page (also the one without ?page=) draws none.
            page.add_init_script(
                f"({_WATCH_JS})(); window.__bench.start(['Runs', null].includes(new URLSearchParams(location.search).get('page')) ? 0 : 1);"
            )
            charts = {name: 0 if name == "Runs" else 1 for name in PAGES}  # the Runs page draws no chart
            for name in PAGES:
                row = {}
                for attempt in ("cold", "warm"):
                    row[attempt], row[f"{attempt} first"] = _timed_load(page, f"{url}?page={name.replace(' ', '+')}")
                # Start on another page (Training: quick to draw), then click this one in the sidebar.
                _timed_load(page, f"{url}?page={'Runs' if name == 'Training' else 'Training'}")
                radio = page.locator('[data-testid="stSidebar"] [data-testid="stRadio"] label').filter(has_text=name).first
                row["switch"] = _timed_click(page, radio, charts[name])
                results[name] = row
            context.close()
            for name in PAGES:
                results[name].update(_first_visits(p, f"{url}?page={name.replace(' ', '+')}", first_visits, charts[name]))
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return results


_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _first_visits(playwright, url: str, count: int, min_charts: int) -> dict:
    """`count` first visits, each in its own new profile: the median and the slowest of each time
    (one visit varies by a few tenths of a second on a 2-core machine)."""
    visits = [_first_visit(playwright, url, min_charts) for _ in range(count)]
    row = {"first visits": count}
    for key in ("new first", "new all", "new again"):
        values = [v[key] for v in visits if v[key] is not None]
        row[key] = float(np.median(values)) if values else None
        row[f"{key} max"] = max(values) if values else None
    return row


def _first_visit(playwright, url: str, min_charts: int) -> dict:
    """A load of `url` in a new profile (empty browser cache), then the same profile's second load."""
    profile = tempfile.mkdtemp(prefix="chromium-first-visit-")
    context = playwright.chromium.launch_persistent_context(
        profile, executable_path="/usr/bin/chromium", headless=True, viewport={"width": 1600, "height": 1000}, args=_CHROMIUM_ARGS,
    )
    try:
        page = context.new_page()
        page.add_init_script(f"({_WATCH_JS})(); window.__bench.start({min_charts});")
        row = {}
        row["new all"], row["new first"] = _timed_load(page, url)
        row["new again"], _ = _timed_load(page, url)
        return row
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


# Streamlit's own first visit on this machine, without our pages: an app of one Plotly chart, and
# the same with a sidebar of the control types a chart page shows (radios, multiselects, a range
# slider, checkboxes, help tooltips). Each control type is a frontend chunk of its own, fetched
# and evaluated when the first one arrives.
FLOOR_APP = """import numpy as np
import plotly.graph_objects as go
import streamlit as st

{sidebar}x = np.arange(1000)
st.plotly_chart(go.Figure(go.Scatter(x=x, y=np.sin(x / 50))))
"""
FLOOR_CONTROLS = """with st.sidebar:
    st.radio("Page", ["Runs", "COR", "W_R rank", "Probe norms", "Training", "Rank collapse"], help="page")
    st.radio("Group by", ["optimizer", "run"], help="grouping")
    st.multiselect("Groups", ["muon", "adamw"], default=["muon", "adamw"], help="groups")
    st.multiselect("Layers", list(range(28)), default=[0, 27], help="layers")
    st.slider("Step range", 0, 100_000, (0, 100_000), help="zoom")
    st.checkbox("Log axis", help="axis")
    st.checkbox("Smooth", help="EMA")
st.header("COR")
st.caption("a caption")
"""
FLOOR_APPS = {"floor: one chart": "", "floor: + controls": FLOOR_CONTROLS}


def measure_floor(first_visits: int) -> dict:
    """First visits of the two floor apps, each served by `streamlit run` as the dashboard is."""
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="dashboard-floor-"))
    results = {}
    try:
        for index, (name, sidebar) in enumerate(FLOOR_APPS.items()):
            app = folder / f"app{index}.py"
            app.write_text(FLOOR_APP.format(sidebar=sidebar))

            def command(port: int, app: Path = app) -> list[str]:
                return [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
                        "--server.headless", "true", "--browser.gatherUsageStats", "false"]

            with serving(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as url, sync_playwright() as p:
                results[name] = _first_visits(p, url, first_visits, min_charts=1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def _table(title: str, rows: dict, columns: tuple[str, ...], first: str = "page") -> str:
    width = max(len(first), *(len(k) for k in rows)) + 2
    widths = {c: max(12, len(c) + 2) for c in columns}
    lines = [title, f"{first:<{width}}" + "".join(f"{c:>{widths[c]}}" for c in columns)]
    for name, row in rows.items():
        cells = []
        for c in columns:
            value = row.get(c)
            cells.append(f"{value:>{widths[c] - 1}.2f}s" if isinstance(value, float) else f"{value!s:>{widths[c]}}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "parallax-probe-dashboard-bench"))
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--spectra-rows", type=int, default=1000, help="rows of the W_R / W_RK spectra tables")
    parser.add_argument("--browser", action="store_true", help="also time page loads in /usr/bin/chromium")
    parser.add_argument("--browser-only", action="store_true", help="only the chromium table (section 3)")
    parser.add_argument("--first-visits", type=int, default=3, help="first visits per page, each in a new browser profile")
    add_result_args(parser, "dashboard_load")
    args = parser.parse_args()
    args.browser = args.browser or args.browser_only
    folder = Path(args.dir)
    paths = ensure_runs(folder, args.steps, args.spectra_rows)
    sizes = sum(p.stat().st_size for path in paths for p in path.glob("segment-*.h5"))
    print(f"runs: {', '.join(p.name for p in paths)} in {folder}: {args.steps:,} logged steps x 28 layers x 16 heads each, "
          f"{args.spectra_rows:,} spectra rows; {sizes / 1e6:,.0f} MB on disk; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (other processes slow every number here)\n")

    records = []  # one per table line: which table, the row's name, its cells

    def keep(table: str, rows: dict) -> dict:
        records.extend({"table": table, "name": name, **row} for name, row in rows.items())
        return rows

    if not args.browser_only:
        reading = keep("reading", in_fresh_process(f"read_columns({str(paths[0])!r})"))
        print(_table("1. reading one run, cold (fresh process)", reading, ("cold",), "loader"))
        print()
        one_run = keep("pages, one run", measure_pages(folder, [paths[0].name]))
        print(_table(f"2a. pages, one run (?run={paths[0].name})", one_run, ("cold", "warm", "charts", "kB")))
        print()
        two_groups = keep("pages, two groups", measure_pages(folder, []))
        print(_table("2b. pages, two groups (muon vs adamw)", two_groups, ("cold", "warm", "charts", "kB")))
    if args.browser:
        print()
        if not Path("/usr/bin/chromium").exists():
            print("3. browser: skipped, /usr/bin/chromium is missing (Debian package `chromium`)")
        else:
            results = keep("chromium", measure_browser(folder, args.first_visits))
            results.update(keep("chromium floor", measure_floor(args.first_visits)))
            print(_table("3. chromium, two groups: seconds to the first chart and to every chart drawn",
                         {k: v for k, v in results.items() if k in PAGES}, ("cold first", "cold", "warm first", "warm", "switch")))
            print()
            print(_table(f"3b. chromium, first visit (new profile, empty cache, warm server) and its second load: "
                         f"median and slowest of {args.first_visits}",
                         results, ("new first", "new first max", "new all", "new all max", "new again")))
    print(f"\nbudget: {BUDGET_S:.0f} s to open and draw a page")
    config = {"steps": args.steps, "spectra_rows": args.spectra_rows, "browser": args.browser, "browser_only": args.browser_only,
              "first_visits": args.first_visits,
              "disk_mb": sizes / 1e6, "load_average_at_start": os.getloadavg()[0]}
    write_result(args, records, config=config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
