"""numba's on-disk caches on a fresh machine: filled once, safely, and never written by a job afterwards.

Processes that compile the same ``@guvectorize`` function at once can leave a kernel and a wrapper
from different compilations in the cache, and every later call crashes (numba issue 10128). The
warm-up (``python -m tmik_common.warmup``, run by ``make venv`` and each image build) compiles
under a machine-wide lock, and covers every function a job reaches, so jobs only read the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from synth_music import song

REPO = Path(__file__).resolve().parent.parent

# What a render's check and the analysis run, in a new interpreter (as a service's task process does).
MINI_JOB = """
import numpy as np
from types import SimpleNamespace
from tmik_bgm_conditional_melody_generation.analysis import warm_up
from tmik_make_vocal_mix.qc import pitch_accuracy
warm_up()
t = np.arange(int(1.5 * 22050)) / 22050
r = pitch_accuracy((0.3 * np.sin(2 * np.pi * 196.0 * t)).astype(np.float32), 22050,
                   [SimpleNamespace(start=0.2, end=1.3, pitch=55)])
assert r["pitch_accuracy"] > 0.9, r
"""


def _env(cache: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache), **extra}


def _run_at_once(commands: list[list[str]], env: dict[str, str], timeout: float = 600) -> list[tuple[int, str]]:
    procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    return [(p.wait(timeout), p.stdout.read() if p.stdout else "") for p in procs]


@pytest.fixture(scope="module")
def first_use(tmp_path_factory) -> tuple[Path, list[tuple[int, str]]]:
    """An empty cache, then three warm-ups started at once (as a new machine's services and CLI do)."""
    cache = tmp_path_factory.mktemp("numba")
    warm = [sys.executable, "-m", "tmik_common.warmup"]
    return cache, _run_at_once([warm] * 3, _env(cache))


def test_three_first_uses_at_once_on_an_empty_cache_all_succeed_twice(first_use) -> None:
    cache, results = first_use
    assert all(code == 0 for code, _ in results), results
    # The lock made them take turns: one compiled, the others waited for it and then only loaded.
    assert sum("waited" in out for _, out in results) >= 1, results
    job = [sys.executable, "-c", MINI_JOB]
    for _ in range(2):
        results = _run_at_once([job] * 3, _env(cache))
        assert [code for code, _ in results] == [0, 0, 0], results  # -11 (SIGSEGV) before the fix


def test_after_the_warm_up_a_whole_job_writes_nothing_to_the_cache(first_use, tmp_path: Path) -> None:
    cache, results = first_use
    assert all(code == 0 for code, _ in results), results
    t = song(["C:maj", "A:min", "F:maj", "G:maj"], bpm=100, bars=6)
    track = tmp_path / "bg.wav"
    sf.write(track, t.audio, t.sr)
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("Hold the light and sing along\nEvery night we carry on\n")
    result = subprocess.run([sys.executable, "-m", "app.cli", "generate", str(track), "--out", str(tmp_path / "o"),
                             "--lyrics-file", str(lyrics), "--no-progress"], check=False, cwd=REPO,
                            env=_env(cache, NUMBA_DEBUG_CACHE="1"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if "data saved" in line]
    assert saved == [], saved  # every function the job needed was compiled by the warm-up
