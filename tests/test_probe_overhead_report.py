"""The overhead benchmark's drift-resistant estimates (benchmarks/probe_overhead.py) recover a
cost planted in step times whose rounds drift far more than the cost itself."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its siblings (results, training_setup)
SPEC = importlib.util.spec_from_file_location("probe_overhead", BENCHMARKS / "probe_overhead.py")
probe_overhead = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe_overhead)

ROUNDS, STEPS, BASE_S = 6, 50, 0.070
LOGGING_EXCESS_S, EVERY_STEP_EXCESS_S = 0.005, 0.002


def planted_times(seed: int = 0) -> tuple[dict[str, list[float]], list[int]]:
    """Per round a drift of up to +-15% shared by every configuration in that round, 0.1% noise
    per step; every=50 pays LOGGING_EXCESS_S at its logging steps, every=1 EVERY_STEP_EXCESS_S."""
    rng = np.random.default_rng(seed)
    timed = probe_overhead.timed_step_numbers(ROUNDS, STEPS)
    drift = rng.uniform(0.85, 1.15, size=ROUNDS)
    results = {name: [] for name in probe_overhead.CONFIG_EVERY}
    for r in range(ROUNDS):
        for name, every in probe_overhead.CONFIG_EVERY.items():
            for step in timed[r * STEPS : (r + 1) * STEPS]:
                t = BASE_S * drift[r] * rng.uniform(0.999, 1.001)
                if every == 50 and step % 50 == 0:
                    t += LOGGING_EXCESS_S
                if every == 1:
                    t += EVERY_STEP_EXCESS_S
                results[name].append(t)
    return results, timed


def test_the_estimates_recover_the_planted_costs(capsys):
    results, timed = planted_times()
    rows = {row["configuration"]: row for row in probe_overhead.report(results, timed, STEPS, spectra_every=10**6)}
    base = np.mean(results["no probe"])
    excess_ms, excess_half = rows["every=50"]["logging_step_excess_ms"]
    assert excess_ms == pytest.approx(LOGGING_EXCESS_S * 1e3, abs=0.3)
    assert excess_half < 0.5
    # paired by round: every=1 pays its excess at every step, every=50 once in fifty
    every1, every1_half = rows["every=1"]["paired_overhead_pct"]
    assert every1 == pytest.approx(100 * EVERY_STEP_EXCESS_S / base, abs=0.3) and every1_half < 0.3
    every50, _ = rows["every=50"]["paired_overhead_pct"]
    assert every50 == pytest.approx(100 * LOGGING_EXCESS_S / STEPS / base, abs=0.3)
    assert "every step logs" in capsys.readouterr().out


def test_a_spectra_step_is_not_counted_as_a_logging_step():
    results, timed = planted_times(seed=1)
    spectra_every = 100  # steps 100, 200, ...: logging steps of every=50 that also took the spectra
    for i, step in enumerate(timed):
        if step % spectra_every == 0:
            results["every=50"][i] += 0.5  # a spectra step is far slower; it has its own column
    rows = {row["configuration"]: row for row in probe_overhead.report(results, timed, STEPS, spectra_every)}
    excess_ms, _ = rows["every=50"]["logging_step_excess_ms"]
    assert excess_ms == pytest.approx(LOGGING_EXCESS_S * 1e3, abs=0.3)
