"""The Tokens page through Streamlit's AppTest (the browser test is in test_dashboard_browser.py), and its helpers."""

from __future__ import annotations

import numpy as np
import test_dashboard_support as support
from streamlit.testing.v1 import AppTest

from parallax_probe.dashboards import traces

TIMEOUT_S = 120


def dashboard(runs_dir: str) -> None:
    from parallax_probe.dashboards.app import main

    main(runs_dir)


def tokens_page(runs_dir, **query) -> AppTest:
    at = AppTest.from_function(dashboard, kwargs={"runs_dir": str(runs_dir)}, default_timeout=TIMEOUT_S)
    at.query_params.update({"page": "Tokens", **query})
    return at.run()


def test_without_traces_the_page_says_how_to_write_one(tmp_path):
    support.write_run(tmp_path / "runs" / "plain", layers=2, heads=2)
    at = tokens_page(tmp_path / "runs")
    assert not at.exception and "parallax-probe trace" in at.info[0].value


def test_a_trace_draws_its_three_figures_and_a_foreign_h5_is_an_error(tmp_path):
    runs_dir = tmp_path / "runs"
    support.write_run(runs_dir / "plain", layers=2, heads=2)
    support.write_trace_file(runs_dir / "a-trace.h5", [f"t{i}" for i in range(9)])
    (runs_dir / "b-other.h5").write_bytes(b"not hdf5")
    at = tokens_page(runs_dir)
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert len(at.get("plotly_chart")) == 3
    at = tokens_page(runs_dir, **{"tokens-trace": "b-other.h5"})
    assert not at.exception and "no HDF5 signature" in at.error[0].value  # escaped Markdown: the file name is b\\-other


def test_block_means_and_picks():
    matrix = np.arange(25, dtype=float).reshape(5, 5)
    drawn, k = traces.block_mean(matrix, 2)  # 3 x 3 blocks of at most 3 x 3 cells, the last ones cut short
    assert k == 3 and drawn.shape == (2, 2)
    np.testing.assert_allclose(drawn, [[matrix[:3, :3].mean(), matrix[:3, 3:].mean()], [matrix[3:, :3].mean(), matrix[3:, 3:].mean()]])
    values = np.random.default_rng(0).random((7, 2, 3))  # (T, L, H)
    np.testing.assert_allclose(traces.pick(values, None, None), values.mean(axis=(1, 2)))
    np.testing.assert_allclose(traces.pick(values, 1, None), values[:, 1].mean(-1))
    np.testing.assert_allclose(traces.pick(values, None, 2), values[:, :, 2].mean(-1))
    np.testing.assert_allclose(traces.pick(values, 0, 1), values[:, 0, 1])
