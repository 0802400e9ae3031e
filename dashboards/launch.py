"""The process `parallax-probe dashboard` starts: Streamlit's own command line, after importing
what the app's pages need.

Streamlit runs app.py only when the first browser session connects, so whatever the app
imports (pandas, plotly, h5py, the pages) and what the Rank collapse page imports on first
use (the analysis layer, with scipy.stats) would otherwise be paid by the first page
anyone opens: about 0.5 s and 0.8 s on a 2-core machine. Imported here, it is paid while
the server starts; so is the module-file lookup of Streamlit's first element.

    python -m parallax_probe.dashboards.launch run [streamlit flags] app.py -- RUNS_DIR
"""

from __future__ import annotations

import sys


def main() -> int:
    import inspect

    from streamlit.web import cli

    import parallax_probe.analysis
    import parallax_probe.dashboards.app  # noqa: F401  (the module, not the script: `main` does not run)

    # Streamlit's first element of the process calls inspect.stack() (to tell a REPL from a
    # script), whose getmodule resolves the file of every imported module: 0.3-0.4 s for the
    # ~1,900 modules loaded here, on the first page anyone opens. getmodule caches those
    # files; resolving them now moves that cost to the server's start.
    inspect.getmodule(inspect.currentframe())

    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
