"""The README's dashboard screenshots, drawn from the demo's run folder.

    .venv/bin/python scripts/readme_screenshots.py --runs /tmp/demo-runs

Serves `parallax-probe dashboard RUNS` on a free local port and saves docs/dashboard-cor.png,
docs/dashboard-cor-layers.png and docs/dashboard-wr.png through Debian's chromium, driven by
Playwright (which never downloads a browser here). `scripts/readme_demo.py --train --runs DIR`
makes such a folder and the README's numbers from it (docs/dashboard.md, "Tests").
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# (page query, file under docs/, viewport height): each view fits its charts on one screen.
VIEWS = (
    ("COR", "dashboard-cor.png", 780),
    ("COR&cor-view=Per+layer", "dashboard-cor-layers.png", 780),
    ("W_R+rank", "dashboard-wr.png", 1500),
)
WAIT_MS = 90_000
# Drawn: the app connected, its script finished, no skeleton, and every Plotly chart holds
# its marks (a chart's SVG appears before its data is drawn).
DRAWN_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-connection-state') !== 'CONNECTED') return false;
    if (app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"]')) return false;
    const charts = Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'));
    return charts.length > 0 && charts.every(c => c.querySelector('.scatterlayer .trace, .heatmaplayer .hm'));
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the dashboard exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the dashboard did not answer within {timeout_s:.0f} s")


def draw(runs: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, "-m", "parallax_probe", "dashboard", str(runs), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                for query, file, height in VIEWS:
                    page = browser.new_page(viewport={"width": 1400, "height": height})
                    page.goto(f"{url}?page={query}")
                    page.wait_for_function(DRAWN_JS, timeout=WAIT_MS)
                    if page.locator('[data-testid="stException"]').count():
                        raise SystemExit(f"the {query} page shows an exception; not saving {file}")
                    page.screenshot(path=str(out / file))
                    page.close()
                    print(out / file)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the folder `parallax-probe demo --out DIR` wrote")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNG files go (default: docs/)")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"needs {CHROMIUM}: install the Debian package `chromium`", file=sys.stderr)
        return 2
    if not args.runs.is_dir():
        print(f"--runs {args.runs}: not a folder; make one with scripts/readme_demo.py --train --runs DIR", file=sys.stderr)
        return 2
    draw(args.runs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
