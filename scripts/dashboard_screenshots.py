"""The dashboard screenshots in docs/, drawn from a folder of runs.

    .venv/bin/python scripts/dashboard_screenshots.py --runs /tmp/demo-runs                  # the README's
    .venv/bin/python scripts/dashboard_screenshots.py --runs RUNS --views reproduction       # docs/reproduction.md's

Serves `parallax-probe dashboard RUNS` on a free local port and saves each view of the set
through Debian's chromium, driven by Playwright (which never downloads a browser here):
`readme` saves docs/dashboard-cor.png, docs/dashboard-cor-layers.png and docs/dashboard-wr.png
(`scripts/readme_demo.py --train --runs DIR` makes such a folder and the README's numbers from
it; docs/dashboard.md, "Tests"); `reproduction` saves docs/reproduction-cor-layer-step.png,
docs/reproduction-cor-layers.png, docs/reproduction-wr.png and docs/reproduction-collapse.png, and
`retrofit` docs/reproduction-retrofit-cor.png, docs/reproduction-retrofit-gain.png and
docs/reproduction-retrofit-wr.png, and `scale` docs/reproduction-scale-cor-layer-step.png and
docs/reproduction-scale-wr.png (`benchmarks/reproduction.py screenshots` calls it with `--run`
for each Parallax arm of a set, set by set). Without `--run`, every run in RUNS is shown.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# (page query, file under docs/, viewport height): each view fits its charts on one screen.
VIEW_SETS = {
    "readme": (
        ("COR", "dashboard-cor.png", 780),
        ("COR&cor-view=Per+layer", "dashboard-cor-layers.png", 780),
        ("W_R+rank", "dashboard-wr.png", 1500),
    ),
    "reproduction": (
        ("COR&cor-view=Layer+x+step", "reproduction-cor-layer-step.png", 850),
        ("COR&cor-view=Per+layer", "reproduction-cor-layers.png", 1100),
        ("W_R+rank", "reproduction-wr.png", 1500),
        ("Rank+collapse", "reproduction-collapse.png", 2400),
    ),
    "retrofit": (
        ("COR&cor-view=Per+layer", "reproduction-retrofit-cor.png", 1100),
        ("Probe+norms&probe-view=r-norm+gain", "reproduction-retrofit-gain.png", 900),
        ("W_R+rank", "reproduction-retrofit-wr.png", 1500),
    ),
    "scale": (
        ("COR&cor-view=Layer+x+step", "reproduction-scale-cor-layer-step.png", 850),
        ("W_R+rank", "reproduction-scale-wr.png", 1500),
    ),
}
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



def draw(runs: Path, out: Path, views, names: list[str]) -> None:
    from parallax_probe.dashboards.serve import NotServing, serving

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "parallax_probe", "dashboard", str(runs), "--port", str(port)]

    try:
        with serving(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as url:
            shoot(url, out, views, names)
    except NotServing as error:
        raise SystemExit(str(error)) from None


def shoot(url: str, out: Path, views, names: list[str]) -> None:
    """Each view's screenshot from the dashboard at `url`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            for query, file, height in views:
                page = browser.new_page(viewport={"width": 1400, "height": height})
                page.goto(f"{url}?page={query}" + "".join(f"&run={quote(name)}" for name in names))
                try:
                    page.wait_for_function(DRAWN_JS, timeout=WAIT_MS)
                except PlaywrightTimeout:
                    page.screenshot(path=str(out / f"undrawn-{file}"))
                    raise SystemExit(f"the {query} page did not draw its charts within {WAIT_MS / 1000:.0f} s; "
                                     f"not saving {file} (what it showed: {out / f'undrawn-{file}'})") from None
                if page.locator('[data-testid="stException"]').count():
                    raise SystemExit(f"the {query} page shows an exception; not saving {file}")
                page.screenshot(path=str(out / file))
                page.close()
                print(out / file)
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the folder `parallax-probe demo --out DIR` wrote")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNG files go (default: docs/)")
    parser.add_argument("--views", choices=sorted(VIEW_SETS), default="readme", help="which set of views (default: readme)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME",
                        help="show only this run of RUNS (repeatable; its folder's name under RUNS)")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"needs {CHROMIUM}: install the Debian package `chromium`", file=sys.stderr)
        return 2
    if not args.runs.is_dir():
        print(f"--runs {args.runs}: not a folder; make one with scripts/readme_demo.py --train --runs DIR", file=sys.stderr)
        return 2
    draw(args.runs, args.out, VIEW_SETS[args.views], args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
