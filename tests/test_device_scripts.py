"""The device sessions' shell scripts (benchmarks/tools/*.sh) parse, and the autotune archive
they carry between sessions round-trips: what one call saves, the next restores."""

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TOOLS = ROOT / "benchmarks" / "tools"
SCRIPTS = sorted(TOOLS.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_every_device_script_parses(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def run_sourced(repo: Path, env_dirs: dict, command: str) -> str:
    env = {"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in env_dirs.items()}}
    done = subprocess.run(["bash", "-c", f"source {TOOLS / 'triton_autotune_cache.sh'}; {command}"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_autotune_archives_round_trip(tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    (repo / "benchmarks" / "tools" / "autotune").mkdir(parents=True)
    out.mkdir()
    tracked = repo / "benchmarks" / "tools" / "autotune" / "triton-h200.tar.gz"
    shutil.copy(TOOLS / "autotune" / "triton-h200.tar.gz", tracked)
    with tarfile.open(tracked) as archive:
        kept = sorted(name for name in archive.getnames() if name.endswith(".autotune.json"))
    assert kept, "the tracked archive holds autotune results"
    tracked_helion = tracked.with_name("helion-h200.tar.gz")
    shutil.copy(TOOLS / "autotune" / "helion-h200.tar.gz", tracked_helion)
    with tarfile.open(tracked_helion) as archive:
        kept_helion = [name for name in archive.getnames() if name.endswith(".best_config")]
    assert kept_helion, "the tracked Helion archive holds chosen configs"

    # a bare machine: the tracked results come back; a call tunes one more Triton kernel and one
    # Helion kernel, and saves them all
    first = {"TRITON_CACHE_DIR": tmp_path / "triton1", "HELION_CACHE_DIR": tmp_path / "helion1", "OUT": out}
    saved = run_sourced(repo, first, "mkdir -p $TRITON_CACHE_DIR/NEWHASH && echo '{}' > $TRITON_CACHE_DIR/NEWHASH/k.autotune.json"
                                     " && echo '{}' > $HELION_CACHE_DIR/abc.best_config && autotune_cache_save")
    assert f"restored from benchmarks/tools/autotune/triton-h200.tar.gz: {len(kept)}" in saved
    assert f"Helion configs restored from benchmarks/tools/autotune/helion-h200.tar.gz: {len(kept_helion)}" in saved
    assert f"autotune results saved: {len(kept) + 1}" in saved and f"Helion configs saved: {len(kept_helion) + 1}" in saved

    # the next call carries them at the repo root: every result is restored
    for name in ("triton-autotune.tar.gz", "helion-autotune.tar.gz"):
        shutil.copy(out / name, repo / f".{name}")
    second = {"TRITON_CACHE_DIR": tmp_path / "triton2", "HELION_CACHE_DIR": tmp_path / "helion2", "OUT": out}
    restored = run_sourced(repo, second, "true")
    assert f"restored from .triton-autotune.tar.gz: {len(kept) + 1}" in restored
    assert f"Helion configs restored from .helion-autotune.tar.gz: {len(kept_helion) + 1}" in restored
    assert (tmp_path / "triton2" / "NEWHASH" / "k.autotune.json").exists()
    assert (tmp_path / "helion2" / "abc.best_config").exists()
    assert len(list((tmp_path / "triton2").rglob("*.autotune.json"))) == len(kept) + 1
