"""Shared fixtures. Every test runs against its own cache folder, never the user's `cache/`.

`study_cache` trains and evaluates the default digits study once per test session (about 100 s on
2 cores: training, the PGD grid, then AutoAttack and the masking check's attacks at the findings' eps)
into a session-wide folder. Set LOGITSCOPE_TEST_CACHE to a folder to keep it between runs while
developing; CI leaves it unset, so every run starts from an empty cache.

Every test that uses the trained study (through `study_cache` or `app_cache`) is marked `slow`
here, so `python -m pytest -m "not slow"` is the quick loop; the README's command runs them all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# The test models are tiny: one thread is as fast as two on a quiet machine, and many times faster
# when other processes (a Streamlit server, a subprocess under test) compete for the cores.
torch.set_num_threads(1)
# The app's jobs run their units in this process in tests that drive pages and jobs directly (AppTest,
# `prepare` with faked work); tests/test_app_prepare_workers.py sets its own worker count, and the browser
# tests serve the app with its real default (one worker process per core).
os.environ.setdefault("LOGITSCOPE_APP_WORKERS", "1")

TRAINS_THE_STUDY = "_study_dir"  # the fixture behind study_cache and app_cache


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs the trained default study as slow."""
    for item in items:
        if TRAINS_THE_STUDY in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets an empty cache unless it asks for `study_cache`."""
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def _study_dir(tmp_path_factory) -> Path:
    root = os.environ.get("LOGITSCOPE_TEST_CACHE")
    path = Path(root) if root else tmp_path_factory.mktemp("study-cache")
    path.mkdir(parents=True, exist_ok=True)
    from apptest import using_cache

    from core.study.report import reproduce

    with using_cache(path):
        reproduce("digits", seeds=(0,))  # trains and evaluates every default recipe once
    return path


@pytest.fixture
def study_cache(_study_dir, monkeypatch) -> Path:
    """A cache holding the trained default digits study (models and logits over the default grid)."""
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(_study_dir))
    return _study_dir


@pytest.fixture
def app_cache(_study_dir, tmp_path, monkeypatch) -> Path:
    """A private copy of the trained study for tests that write: lab runs, UMAP maps, corrupted entries.

    Lock files, lab runs and maps of other tests are left out; background jobs are cleared before and
    after, so no thread outlives the test.
    """
    from core.app import jobs

    dst = tmp_path / "app-cache"
    shutil.copytree(_study_dir, dst, ignore=shutil.ignore_patterns("*.lock", "lab", "embeddings"))
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(dst))
    jobs.clear()
    yield dst
    jobs.clear()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium for the browser tests: missing, it fails the run in CI and skips them elsewhere."""
    from bench.appserver import CHROMIUM

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (never `playwright install`)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="session")
def server(_study_dir, chromium, tmp_path_factory):
    """The app for the browser tests, served once per session from a copy of the study cache (the lab may
    write to it) with the app's real default workers."""
    from apptest import served_env

    from bench.appserver import serve_app

    cache = tmp_path_factory.mktemp("browser") / "cache"
    shutil.copytree(_study_dir, cache, ignore=shutil.ignore_patterns("*.lock", "lab", "embeddings"))
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
    with serve_app({**served_env(), "LOGITSCOPE_CACHE": str(cache)}, log) as (url, _):
        yield url


@pytest.fixture(scope="session")
def browser(chromium):
    """Headless Debian Chromium, once per session."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from bench.appserver import launch_chromium

    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs, started once per test session (about 4 s) and shut down at its end.

    Executors find it running and reuse it (`RayExecutor.start`); tasks get the cache folder of the
    test that runs them with each task, so one Ray serves every test's own cache.
    """
    ray = pytest.importorskip("ray")
    from core.study import executor_ray

    if not ray.is_initialized():
        executor_ray.init(num_cpus=2)
    yield ray
    ray.shutdown()
