"""The reproduction script (benchmarks/reproduction.py): the claims table's verdicts follow the
rules docs/reproduction.md states, on in-memory runs with planted final values; `pack` brings
back what a device call may carry; `train` gives the machine back as soon as it has nothing to run.

Runs are `StoredRun`s (tests/stored_run.py), held in memory.
Seeds: each run's noise comes from numpy's default_rng(seed + 100 for Muon).
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from stored_run import StoredRun

from parallax_probe.analysis import build_report

SPEC = importlib.util.spec_from_file_location("reproduction", Path(__file__).parents[1] / "benchmarks" / "reproduction.py")
reproduction = sys.modules["reproduction"] = importlib.util.module_from_spec(SPEC)  # dataclasses look their module up
SPEC.loader.exec_module(reproduction)

N_LAYERS, N_HEADS, STEPS = 4, 2, np.arange(0, 301, 50)


def planted(optimizer: str, seed: int, cor: list[float], rank: list[float]) -> StoredRun:
    """Per layer, COR and the W_R stable rank near the given values (1% noise) at every step."""
    rng = np.random.default_rng(seed + (100 if optimizer == "muon" else 0))
    shape = (STEPS.size, N_LAYERS)
    cor_values = np.asarray(cor)[None, :, None] * rng.uniform(0.99, 1.01, size=(*shape, N_HEADS))
    ranks = np.asarray(rank)[None, :] * rng.uniform(0.99, 1.01, size=shape)
    arrays = {"step": STEPS, "attn/cor_mean": cor_values, "wr/step": STEPS, "wr/stable_rank": ranks, "wr/effective_rank": 2 * ranks}
    return StoredRun(arrays, {"optimizer": optimizer, "run_id": f"{optimizer}-{seed}", "seed": seed}, f"runs/{optimizer}-{seed}")


def claims(muon_cor, adamw_cor, muon_rank, adamw_rank, seeds=3) -> str:
    runs = [planted("muon", s, muon_cor, muon_rank) for s in range(seeds)]
    runs += [planted("adamw", s, adamw_cor, adamw_rank) for s in range(seeds)]
    return reproduction.claims_markdown(build_report(runs, group_by="optimizer", n_resamples=999), max_rank=512)


def verdicts(text: str) -> tuple[str, str]:
    cor_line, rank_line = [line for line in text.splitlines() if line.startswith("- **")]
    return cor_line.split("**: ")[1].split(".")[0], rank_line.split("): ")[-1].split(".")[0]


def test_the_paper_s_picture_holds():
    text = claims([3, 5, 9, 12], [2, 3, 3.5, 3.8], [60, 60, 60, 60], [8, 8, 8, 8])
    assert verdicts(text) == ("holds", "holds in direction (Muon higher in every layer, intervals below 0)")
    assert "| 2 (deep) |" in text and "| 1 |" in text, "deep = the second half of the layers"


def test_muon_higher_but_under_the_thresholds_is_direction_only():
    cor_verdict, _ = verdicts(claims([3, 3, 6, 7], [2, 2, 3, 3], [60] * 4, [8] * 4))
    assert cor_verdict.startswith("in direction only (Muon higher in every deep layer")


def test_thresholds_met_in_all_deep_layers_but_one_do_not_hold():
    cor_verdict, _ = verdicts(claims([9, 9, 9, 7], [2, 2, 2, 2], [60] * 4, [8] * 4))
    assert cor_verdict.startswith("in direction only")


@pytest.mark.parametrize("higher", ["adamw", "equal"])
def test_no_muon_advantage_does_not_reproduce(higher):
    muon_cor, adamw_cor = ([2] * 4, [10] * 4) if higher == "adamw" else ([5] * 4, [5] * 4)
    muon_rank, adamw_rank = ([8] * 4, [60] * 4) if higher == "adamw" else ([30] * 4, [30] * 4)
    assert verdicts(claims(muon_cor, adamw_cor, muon_rank, adamw_rank)) == ("does not reproduce", "does not reproduce")


def test_two_seeds_give_no_intervals_and_say_so():
    text = claims([3, 5, 9, 12], [2, 3, 3.5, 3.8], [60] * 4, [8] * 4, seeds=2)
    assert "without intervals (fewer than 3 runs per group)" in text
    assert verdicts(text) == ("holds", "holds in direction, without intervals (fewer than 3 runs per group)")


def test_the_ranks_are_also_set_against_min_m_n():
    text = claims([3, 5, 9, 12], [2, 3, 3.5, 3.8], [64] * 4, [8] * 4)
    assert "of min(m, n) = 512" in text and "ratio 8.0" in text


def test_pack_brings_back_everything_but_checkpoints_and_the_corpus(tmp_path, monkeypatch):
    out = tmp_path / "repro"
    for name, size in {"corpus.txt": 100, "corpus.json": 10, "logs/parallax-muon-s0.log": 10,
                       "parallax-muon-s0/run.json": 10, "parallax-muon-s0/segment-00000.h5": 1000,
                       "parallax-muon-s0/checkpoint.pt": 5000}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"x" * size)
    target = tmp_path / "back" / "repro.tar.gz"
    assert reproduction.main(["pack", "--out", str(out), "--to", str(target)]) == 0
    import tarfile

    with tarfile.open(target) as archive:
        files = sorted(m.name for m in archive.getmembers() if m.isfile())
    assert files == ["corpus.json", "logs/parallax-muon-s0.log", "parallax-muon-s0/run.json", "parallax-muon-s0/segment-00000.h5"]
    monkeypatch.setattr(reproduction, "PACK_LIMIT_BYTES", 10)  # an archive too large to come back says so
    assert reproduction.main(["pack", "--out", str(out), "--to", str(target)]) == 2


def test_a_train_call_that_can_start_no_arm_returns_at_once_not_at_its_deadline(tmp_path, monkeypatch, capsys):
    """A device call's time is budgeted: once nothing runs and nothing can start (here every arm
    needs more time than is left), the call ends instead of holding the machine to its deadline.
    The clock is the module's own, advanced by each of its sleeps."""
    clock = {"now": 0.0}
    monkeypatch.setattr(reproduction.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(reproduction.time, "sleep", lambda seconds: clock.__setitem__("now", clock["now"] + seconds))
    monkeypatch.setattr(reproduction, "write_corpus", lambda out: out / "corpus.txt")  # the stdlib's text is not needed
    deadline = reproduction.STOP_GRACE_S + 30  # too little left to start an arm
    code = reproduction.main(["train", "--out", str(tmp_path / "repro"), "--deadline", str(deadline), "--device", "cpu"])
    assert code == 3  # not every arm is done
    assert clock["now"] < deadline / 10
    assert "this call: no step trained" in capsys.readouterr().out
    assert not any(p.is_dir() for p in (tmp_path / "repro").iterdir() if p.name != "logs")  # no arm started


def test_arms_share_the_cpu_threads_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(reproduction.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(reproduction.os, "cpu_count", lambda: 16)
    assert reproduction.arm_environment(10)["OMP_NUM_THREADS"] == "1"
    assert reproduction.arm_environment(4)["OMP_NUM_THREADS"] == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert reproduction.arm_environment(10)["OMP_NUM_THREADS"] == "3"


def test_a_call_says_what_it_trained_and_what_the_rest_would_take_at_that_rate(tmp_path):
    out = tmp_path / "repro"
    chosen = reproduction.arms(["seeds", "baselines"])
    for name, steps in {"parallax-muon-s0": 3000, "softmax-adamw": 1200}.items():  # the others not started
        (out / name).mkdir(parents=True)
        (out / name / "run.json").write_text(json.dumps({"completed_steps": steps}))
    assert reproduction.steps_trained(out, chosen) == 4200
    line = reproduction.call_summary(trained=2400, seconds=480, steps_left=len(chosen) * 3000 - 4200)
    assert "2400 steps over all arms in 480 s, 5.0 steps/s" in line and "25800 steps left, about 5160 s" in line
    assert "no step trained in 90 s" in reproduction.call_summary(trained=0, seconds=90, steps_left=30000)
    assert reproduction.call_summary(trained=900, seconds=60, steps_left=0).endswith("; none left")


def test_each_set_of_arms_is_trained_and_reported_on_its_own(tmp_path, capsys):
    """A session of a lent GPU trains one set; a retrofit is in the set of the softmax baseline
    whose checkpoint it starts from, since checkpoints stay on the machine that wrote them."""
    by_set = {name: [arm.name for arm in reproduction.arms([name])] for name in reproduction.SETS}
    assert by_set["seeds"] == [f"parallax-{o}-s{s}" for o in ("muon", "adamw") for s in (0, 1, 2)]
    assert sorted(by_set["baselines"]) == ["retrofit-adamw", "retrofit-muon", "softmax-adamw", "softmax-muon"]
    assert by_set["scale"] == [f"deep-{o}-s{s}" for o in ("muon", "adamw") for s in (0, 1)]
    assert [arm.name for arm in reproduction.arms()] == [name for names in by_set.values() for name in names]
    for name in reproduction.SETS:  # a retrofit's baseline is in its set
        for arm in reproduction.arms([name]):
            assert arm.init_from is None or arm.init_from in by_set[name], arm.name
    out = tmp_path / "repro"
    (out / "softmax-muon").mkdir(parents=True)
    (out / "softmax-muon" / "run.json").write_text(json.dumps({"completed_steps": 3000}))
    assert reproduction.main(["status", "--out", str(out), "--sets", "baselines"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == by_set["baselines"]
    assert lines[-1] == "1/4 arms done"
    with pytest.raises(SystemExit):
        reproduction.main(["status", "--out", str(out), "--sets", "deep"])  # not a set


def test_a_set_splits_by_optimizer_into_sessions_of_its_own(tmp_path, capsys):
    """`--optimizers` keeps the arms of those optimizers only, each retrofit with its own
    optimizer's baseline; status then counts just those arms."""
    for optimizer in ("muon", "adamw"):
        half = reproduction.arms(["scale", "baselines"], [optimizer])
        assert [arm.name for arm in half] == [f"softmax-{optimizer}", f"retrofit-{optimizer}",
                                              f"deep-{optimizer}-s0", f"deep-{optimizer}-s1"]
        assert all(arm.init_from in (None, f"softmax-{optimizer}") for arm in half)
    out = tmp_path / "repro"
    for name in ("deep-muon-s0", "deep-muon-s1"):
        (out / name).mkdir(parents=True)
        (out / name / "run.json").write_text(json.dumps({"completed_steps": 3000}))
    assert reproduction.main(["status", "--out", str(out), "--sets", "scale", "--optimizers", "muon"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2/2 arms done"
    assert reproduction.main(["status", "--out", str(out), "--sets", "scale"]) == 3
    assert capsys.readouterr().out.splitlines()[-1] == "2/4 arms done"
    with pytest.raises(SystemExit):
        reproduction.main(["status", "--out", str(out), "--optimizers", "sgd"])  # not an optimizer


def test_the_held_out_table_gives_each_arm_s_last_and_lowest_loss(tmp_path):
    """Real run folders: one evaluated every 3 steps whose held-out loss turns up after step 6
    (the last is past the lowest: memorisation), a retrofit never evaluated (it says what it
    starts from); an arm not started is left out."""
    from parallax_probe.store import RunWriter

    losses = {0: 2.0, 3: 1.5, 6: 1.25, 9: 1.375}
    writer = RunWriter(tmp_path / "parallax-muon-s0", tables={}, meta={}, start_step=0, fsync_every_s=None)
    for step in range(10):
        evaluation = {"eval_loss": losses[step], "eval_accuracy": 0.5 + step / 100} if step in losses else {}
        writer.append("scalars", step, loss=1.0, **evaluation)
    writer.close()
    writer = RunWriter(tmp_path / "retrofit-muon", tables={}, meta={}, start_step=0, fsync_every_s=None)
    writer.append("scalars", 0, loss=1.0)
    writer.close()
    by_name = {arm.name: arm for arm in reproduction.arms()}
    table = reproduction.held_out_table(tmp_path, [by_name[name] for name in ("parallax-muon-s0", "retrofit-muon", "softmax-muon")])
    rows = table.splitlines()[2:]
    assert rows == ["| parallax-muon-s0 | random weights | 9 | 1.3750 | 0.5900 | 1.2500 (6) |",
                    "| retrofit-muon | softmax-muon's last weights | not evaluated yet | | | |"]


def test_screenshots_show_each_set_s_parallax_arms_in_its_own_views(tmp_path):
    script = Path(__file__).parents[1] / "scripts" / "dashboard_screenshots.py"
    spec = importlib.util.spec_from_file_location("dashboard_screenshots", script)
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    assert reproduction.screenshot_runs(tmp_path) == {}  # nothing has run: no dashboard to start
    for name in ("parallax-muon-s0", "parallax-adamw-s1", "softmax-muon", "retrofit-muon", "softmax-adamw", "retrofit-adamw"):
        (tmp_path / name).mkdir()
    shown = reproduction.screenshot_runs(tmp_path)  # the scale set has not run: no views of it
    assert shown == {"reproduction": ["parallax-muon-s0", "parallax-adamw-s1"], "retrofit": ["retrofit-muon", "retrofit-adamw"]}
    (tmp_path / "deep-adamw-s1").mkdir()
    assert reproduction.screenshot_runs(tmp_path)["scale"] == ["deep-adamw-s1"]
    assert set(shown) <= set(shots.VIEW_SETS)  # the softmax baselines have no probe to show
    files = [file for views in shots.VIEW_SETS.values() for _, file, _ in views]
    assert len(files) == len(set(files))  # no view set overwrites another's pictures
