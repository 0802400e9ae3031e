"""The process `parallax-probe dashboard` starts: Streamlit's own command line, after importing
what the app's pages need.

Streamlit runs app.py only when the first browser session connects, so whatever the app
imports (pandas, plotly, h5py, the pages) and what the Rank collapse page imports on first
use (the analysis layer, with scipy.stats) would otherwise be paid by the first page
anyone opens: about 0.5 s and 0.8 s on a 2-core machine. Imported here, it is paid while
the server starts.

    python -m parallax_probe.dashboards.launch run [streamlit flags] app.py -- RUNS_DIR
"""

from __future__ import annotations

import sys


def main() -> int:
    import parallax_probe.dashboards.app  # noqa: F401  (the module, not the script: `main` does not run)

    try:
        import parallax_probe.analysis  # noqa: F401
    except ImportError:
        pass  # the Rank collapse page says so itself
    from streamlit.web import cli

    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
