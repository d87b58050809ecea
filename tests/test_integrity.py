"""Nothing lost, nothing crashes: every cache protection, each broken on purpose.

Corrupt, truncated and misplaced files are reported once and recomputed; a full disk or a read-only
cache gives a message and keeps what is cached; two threads or two processes compute an entry once;
a cancelled job stops promptly and leaves no file; a failing background job shows in its page.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core import storage
from core.app import jobs
from core.app.prepare import logits_cached, missing
from core.config import AttackSpec, DataSpec
from core.engine.data import load_dataset
from core.engine.logits import FORMAT, entry_ok, entry_path, get_grid, get_or_compute, put
from core.engine.models import build_model, checkpoint_ok, load_checkpoint, save_checkpoint
from core.errors import Cancelled, LogitscopeError
from core.study.recipes import checkpoint_path, ensure_model, is_trained, teacher_recipes

ROOT = Path(__file__).resolve().parent.parent
DATA = DataSpec("digits", "test", limit=24)
ATTACK = AttackSpec(eps=0.1, steps=2, seed=0)
KEY = "integrity000"



@pytest.fixture(autouse=True)
def _fresh_verdicts():
    """Each test starts with no remembered verdicts or reports (they are per process)."""
    storage._verdicts.clear()
    storage._reported.clear()
    yield
    jobs.clear()


@pytest.fixture(scope="module")
def net():
    ds = load_dataset("digits")
    torch.manual_seed(0)
    return build_model("digits_cnn", ds.shape, ds.num_classes, ds.mean, ds.std).eval()


class Counting:
    """A model source that counts cache misses (and can be slow, to widen a race)."""

    def __init__(self, model, delay: float = 0.0):
        self.model, self.delay, self.calls = model, delay, 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return self.model


def tiny_recipe(which: int = 0, epochs: int = 1, limit: int | None = 64):
    """A default digits recipe (0 standard, 1 PGD-AT) cut to `epochs` on the first `limit` images."""
    r = teacher_recipes("digits")[which]
    return replace(r, spec=replace(r.spec, train=replace(r.spec.train, epochs=epochs, train_limit=limit)))


def warnings_about(caplog, path: Path) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted writes (none may stay behind)."""
    return [p.name for p in folder.rglob(".tmp-*")] if folder.exists() else []


# --- every read is validated: format version, shape, checksum, specs ---------------------------------

def test_a_flipped_byte_in_the_tensor_data_is_caught_by_the_checksum(net):
    loader = Counting(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    raw = bytearray(good.path.read_bytes())
    raw[-1] ^= 0x40  # the last label's high byte: the file still parses, shapes still match
    good.path.write_bytes(bytes(raw))
    again = get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 2, "a silently corrupted entry was served"
    assert torch.equal(again.labels, good.labels) and torch.equal(again.logits, good.logits)


def test_an_unknown_format_version_is_recomputed(net):
    loader = Counting(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    with safe_open(str(good.path), "pt") as f:
        meta = {**f.metadata(), "format": "logitscope-logits/99"}
    save_file({"logits": good.logits, "labels": good.labels}, str(good.path), metadata=meta)
    get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 2
    with safe_open(str(good.path), "pt") as f:
        assert f.metadata()["format"] == FORMAT


def test_an_entry_of_another_attack_under_this_name_is_recomputed(net):
    loader = Counting(net)
    a = get_or_compute(loader, KEY, DATA, ATTACK)
    b_path = entry_path(KEY, DATA, ATTACK.at(0.2))
    b_path.write_bytes(a.path.read_bytes())  # a copied or misplaced file: valid, but not this entry
    b = get_or_compute(loader, KEY, DATA, ATTACK.at(0.2))
    assert loader.calls == 2 and not torch.equal(a.logits, b.logits)


def test_entries_written_in_the_previous_format_are_still_read(net):
    loader = Counting(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    with safe_open(str(good.path), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
    save_file({"logits": good.logits, "labels": good.labels}, str(good.path),
              metadata={**meta, "format": "logitscope-logits/1"})
    get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 1  # nothing already cached is thrown away on upgrade


def test_a_corrupt_entry_is_reported_once_and_counts_as_missing(net, caplog):
    loader = Counting(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    good.path.write_bytes(good.path.read_bytes()[:-40])  # truncated
    caplog.set_level(logging.WARNING)
    for _ in range(3):  # what a page does on every rerun: check, check, check
        assert not entry_ok(KEY, DATA, ATTACK)
    get_or_compute(loader, KEY, DATA, ATTACK)  # reads it twice (before and under the lock), recomputes
    assert loader.calls == 2
    assert len(warnings_about(caplog, good.path)) == 1, [r.getMessage() for r in caplog.records]
    assert entry_ok(KEY, DATA, ATTACK)


def test_pages_wait_for_a_recomputation_instead_of_reading_a_corrupt_entry(app_cache):
    from core.app.views import Selection

    sel = Selection("digits", ("standard", "pgd-at"))
    std = teacher_recipes("digits")[0]
    assert logits_cached(std, sel.data(), sel.attack(), sel.grid())
    path = entry_path(std.key, sel.data(), sel.attack().at(sel.grid()[-1]))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert not logits_cached(std, sel.data(), sel.attack(), sel.grid())
    assert [(n.recipe.name, n.what) for n in missing([std], sel.data(), sel.attack(), sel.grid())] == \
        [("standard", "logits")]


# --- checkpoints: checksum, truncation retrains with a message, no unpickling -----------------------

def _config(ds) -> dict:
    return {"arch": "digits_cnn", "in_shape": list(ds.shape), "num_classes": ds.num_classes, "mean": list(ds.mean),
            "std": list(ds.std)}


def test_a_flipped_weight_in_a_checkpoint_is_caught(tmp_path, net):
    ds = load_dataset("digits")
    path = save_checkpoint(tmp_path / "m.pt", net, _config(ds))
    raw = bytearray(path.read_bytes())
    weight = net.state_dict()["1.9.weight"].contiguous().numpy().tobytes()  # the (64, 256) dense layer
    at = bytes(raw).find(weight)
    assert at > 0
    raw[at + len(weight) // 2] ^= 0x01  # one bit of one float: torch still loads it happily
    path.write_bytes(bytes(raw))
    assert torch.load(path, weights_only=True)["state_dict"]["1.9.weight"].shape == (64, 256)
    with pytest.raises(LogitscopeError, match="checksum"):
        load_checkpoint(path)
    assert not checkpoint_ok(path)


@pytest.mark.parametrize("payload", [
    {"format": "logitscope-checkpoint/2", "config": "{}", "state_dict": {"w": 1}, "sha256": "0"},
    {"format": "logitscope-checkpoint/1", "config": "not json", "state_dict": {}},
    {"format": "logitscope-checkpoint/1", "config": '{"arch": "digits_cnn"}', "state_dict": {}},
    {"format": "logitscope-checkpoint/1", "config": '{"arch": "mlp", "in_shape": [1, -8, 8], "num_classes": 10, '
                                                    '"mean": [0], "std": [1]}', "state_dict": {}},
    {"format": "logitscope-checkpoint/2", "config": 7, "state_dict": {}},
], ids=["not-tensors", "config-not-json", "config-incomplete", "config-impossible", "config-not-text"])
def test_odd_checkpoint_contents_are_refused_with_a_message(tmp_path, payload):
    path = tmp_path / "odd.pt"
    torch.save(payload, path)  # loads under weights_only: plain containers, strings and numbers
    with pytest.raises(LogitscopeError, match="delete it and train again|not a Logitscope checkpoint"):
        load_checkpoint(path)
    assert not checkpoint_ok(path)


def test_a_truncated_checkpoint_is_reported_once_and_trained_again(caplog):
    recipe = tiny_recipe()
    path = ensure_model(recipe)
    good = load_checkpoint(path).state_dict()
    path.write_bytes(path.read_bytes()[:1000])
    caplog.set_level(logging.WARNING)
    assert not is_trained(recipe) and not is_trained(recipe)  # counts as untrained: the pages offer to train
    started = []
    assert ensure_model(recipe, on_start=started.append) == path
    assert started == [recipe], "the corrupt checkpoint was returned instead of retrained"
    again = load_checkpoint(path).state_dict()
    assert all(torch.equal(good[k], again[k]) for k in good)  # deterministic: the same model comes back
    assert len(warnings_about(caplog, path)) == 1


# --- full disk, read-only cache: a message, and nothing cached is lost ------------------------------

def _disk_full_after(n_bytes: int):
    def write(fd: int, data: bytes) -> None:
        os.write(fd, data[:n_bytes])
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_a_full_disk_gives_a_message_and_keeps_existing_entries(net, isolated_cache, monkeypatch):
    first = get_or_compute(net, KEY, DATA, ATTACK)
    before = first.path.read_bytes()
    with monkeypatch.context() as full:  # only the disk is full; the isolated cache stays in place
        full.setattr(storage, "_write_fd", _disk_full_after(100))
        with pytest.raises(LogitscopeError, match="is full: free some space, or point LOGITSCOPE_CACHE"):
            get_or_compute(net, KEY, DATA, ATTACK.at(0.2))
        with pytest.raises(LogitscopeError, match="is full"):  # rewriting an existing entry: it stays whole
            put(KEY, DATA, ATTACK, first.logits + 1, first.labels)
    assert first.path.read_bytes() == before
    assert not entry_path(KEY, DATA, ATTACK.at(0.2)).exists()
    assert leftovers(isolated_cache) == []
    assert torch.equal(get_or_compute(Counting(net), KEY, DATA, ATTACK).logits, first.logits)


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, net, monkeypatch):
    ds = load_dataset("digits")
    path = save_checkpoint(tmp_path / "m.pt", net, _config(ds))
    before = path.read_bytes()
    other = build_model("digits_cnn", ds.shape, ds.num_classes, ds.mean, ds.std)
    monkeypatch.setattr(storage, "_write_fd", _disk_full_after(4096))
    with pytest.raises(LogitscopeError, match="is full"):
        save_checkpoint(path, other, _config(ds))
    assert path.read_bytes() == before and checkpoint_ok(path)
    assert leftovers(tmp_path) == []


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "entry.bin"
    storage.atomic_write(target, b"old content")

    def interrupted(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        os.close(fd)
        raise KeyboardInterrupt  # Ctrl-C, or a job killed mid-write

    monkeypatch.setattr(storage, "_write_fd", interrupted)
    with pytest.raises(KeyboardInterrupt):
        storage.atomic_write(target, b"new content that never fully lands")
    assert target.read_bytes() == b"old content" and leftovers(tmp_path) == []


@pytest.fixture
def read_only(monkeypatch):
    """A read-only cache folder. chmod does not stop root, so the refusals are injected where the OS
    would raise them: creating a file (the temporary of a write) and opening a lock file."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def apply():
        monkeypatch.setattr(storage.tempfile, "mkstemp", refuse)
        monkeypatch.setattr(storage, "FileLock", refuse)
    return apply


def test_a_read_only_cache_still_serves_what_it_holds_and_says_what_to_do(net, read_only):
    recipe = tiny_recipe()
    path = ensure_model(recipe)
    cached = get_grid(net, KEY, DATA, ATTACK, [0.0, 0.1])
    read_only()
    assert ensure_model(recipe) == path  # nothing to write: no lock, no error
    again = get_grid(Counting(net), KEY, DATA, ATTACK, [0.0, 0.1])
    assert torch.equal(again[0.1].logits, cached[0.1].logits)
    with pytest.raises(LogitscopeError, match="Cannot write to .*Read-only file system.*point LOGITSCOPE_CACHE"):
        get_grid(net, KEY, DATA, ATTACK, [0.2])
    with pytest.raises(LogitscopeError, match="Read-only file system"):
        ensure_model(tiny_recipe(limit=32))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="chmod does not stop root")
def test_a_chmod_read_only_cache_gives_a_message(net, isolated_cache):
    get_or_compute(net, KEY, DATA, ATTACK)
    folder = entry_path(KEY, DATA, ATTACK).parent
    folder.chmod(0o555)
    try:
        with pytest.raises(LogitscopeError, match="Cannot write to"):
            get_or_compute(net, KEY, DATA, ATTACK.at(0.2))
    finally:
        folder.chmod(0o755)


# --- the same entry asked for at once: computed once ------------------------------------------------

def _race(calls) -> list:
    """Run the callables at the same moment on threads (two browser sessions of one server)."""
    barrier, results, errors = threading.Barrier(len(calls)), [None] * len(calls), []

    def run(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_two_sessions_asking_for_one_entry_compute_it_once(net):
    loader = Counting(net, delay=0.5)
    # the same entry, asked for with the attack written two ways (eps in the spec, eps in the grid)
    a, b = _race([lambda: get_or_compute(loader, KEY, DATA, ATTACK),
                  lambda: get_grid(loader, KEY, DATA, ATTACK.at(0.0), [0.1])[0.1]])
    assert loader.calls == 1
    assert torch.equal(a.logits, b.logits)


def test_two_sessions_with_different_attacks_share_the_clean_entry_once(net):
    loader = Counting(net, delay=0.5)
    a, b = _race([lambda: get_grid(loader, KEY, DATA, ATTACK, [0.0])[0.0],
                  lambda: get_grid(loader, KEY, DATA, AttackSpec(norm="l2", eps=0.5, steps=3), [0.0])[0.0]])
    assert loader.calls == 1 and torch.equal(a.logits, b.logits)


TRAIN_RACE = textwrap.dedent("""
    import sys, time
    from dataclasses import replace
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from core.study.recipes import ensure_model, teacher_recipes

    me, marker, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    r = teacher_recipes("digits")[0]
    r = replace(r, spec=replace(r.spec, train=replace(r.spec.train, epochs=2, train_limit=256)))

    def started(recipe):
        with open(marker, "a") as f:
            f.write(me + "\\n")

    (ready / me).touch()
    deadline = time.time() + 60
    while len(list(ready.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)
    print(ensure_model(r, on_start=started))
""")


def test_two_processes_training_one_model_train_it_once(tmp_path, isolated_cache):
    script, marker, ready = tmp_path / "race.py", tmp_path / "marker.txt", tmp_path / "ready"
    script.write_text(TRAIN_RACE)
    ready.mkdir()
    env = {**os.environ, "LOGITSCOPE_CACHE": str(isolated_cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), me, str(marker), str(ready)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in ("a", "b")]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len(marker.read_text().split()) == 1  # one process trained, the other reused its checkpoint
    assert outs[0][0].strip() == outs[1][0].strip() and checkpoint_ok(Path(outs[0][0].strip()))


# --- long jobs: cancel promptly, leave no partial file; errors show in the page ----------------------

def test_cancelling_training_stops_within_a_batch_and_leaves_no_file(isolated_cache):
    recipe = tiny_recipe(which=1, epochs=20, limit=None)  # PGD-AT on all of digits: half a minute or more
    batches, asked = [], {}

    def progress(p):
        batches.append(p)
        if len(batches) == 3:
            asked["at"] = time.perf_counter()

    with pytest.raises(Cancelled):
        ensure_model(recipe, progress=progress, cancel=lambda: "at" in asked)
    assert time.perf_counter() - asked["at"] < 1.0
    assert len(batches) == 3
    assert not checkpoint_path(recipe).exists() and leftovers(isolated_cache) == []
    assert not is_trained(recipe)


def test_a_cancelled_job_stops_while_another_process_holds_the_model(isolated_cache):
    recipe = tiny_recipe()
    lock = checkpoint_path(recipe).with_name(checkpoint_path(recipe).name + ".lock")
    with storage.cache_lock(lock):  # "another process" is training this recipe
        job = jobs.submit("wait-for-lock", lambda ctx: ensure_model(recipe, cancel=lambda: ctx.cancelled), "waiting")
        time.sleep(0.5)
        assert job.snapshot().status == jobs.RUNNING
        job.cancel()
        stopped = job.wait(3)
    assert stopped, "the job kept waiting for the lock after it was cancelled"
    assert job.snapshot().status == jobs.CANCELLED and not checkpoint_path(recipe).exists()


def test_cancelling_a_prepare_job_from_the_runner_leaves_no_checkpoint(isolated_cache):
    from core.app import prepare
    from core.app.views import Selection

    sel = Selection("digits", ("pgd-at",))
    recipe = tiny_recipe(which=1, epochs=20, limit=None)
    job = jobs.submit("prep", lambda ctx: prepare.prepare(ctx, [recipe], sel.data(), sel.attack(), sel.grid()),
                      "preparing")
    deadline = time.time() + 30
    while job.snapshot().fraction == 0 and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.perf_counter()
    job.cancel()
    assert job.wait(5) and time.perf_counter() - t0 < 2.0
    assert job.snapshot().status == jobs.CANCELLED
    assert not checkpoint_path(recipe).exists() and leftovers(isolated_cache) == []


def test_finished_jobs_do_not_pile_up_in_a_long_running_server(monkeypatch):
    monkeypatch.setattr(jobs, "KEEP_FINISHED", 10)
    for i in range(40):  # e.g. many UMAP maps and lab runs over days of a shared demo
        assert jobs.submit(f"quick-{i}", lambda ctx, i=i: [i] * 1000, f"quick {i}").wait(10)
    kept = [k for k in jobs._registry if k.startswith("quick-")]
    assert len(kept) <= 11 and "quick-39" in kept and jobs.get("quick-39").result[0] == 39


def _error_texts(at) -> str:
    return "\n".join(e.value for e in at.error)


@pytest.mark.parametrize("exc, shown", [
    (RuntimeError("boom in the attack"), "failed unexpectedly (RuntimeError: boom in the attack)"),
    (LogitscopeError("The disk is full: free some space."), "The disk is full: free some space."),
], ids=["bug", "user-error"])
def test_an_exception_in_a_background_job_shows_in_the_page_that_started_it(app_cache, monkeypatch, exc, shown):
    from streamlit.testing.v1 import AppTest

    from core.app import prepare

    def failing(ctx, *args, **kwargs):
        ctx.report("attacking", 0.1)
        raise exc

    monkeypatch.setattr(prepare, "prepare", failing)
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.query_params["steps"] = "3"  # logits not cached for PGD-3: the page starts a prepare job
    at.switch_page("pages/distributions.py")
    at.run()
    assert "Waiting for:" in "\n".join(str(i.value) for i in at.info)
    for job in jobs.active():
        assert job.wait(30)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert shown in _error_texts(at)
    assert any(b.label == "Try again" for b in at.button)


def test_an_exception_in_a_lab_run_shows_in_the_lab_page(app_cache, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.app import lab

    def failing(ctx, *args, **kwargs):
        raise ValueError("the lab broke")

    monkeypatch.setattr(lab, "run", failing)
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.switch_page("pages/lab.py")
    at.run()
    at.button(key="distill").click().run()
    for job in jobs.active():
        assert job.wait(30)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "failed unexpectedly (ValueError: the lab broke)" in _error_texts(at)


@pytest.mark.parametrize("content", ["garbage", "foreign"])
def test_a_broken_lab_table_leaves_the_other_pages_working_and_says_what_to_do(app_cache, content):
    import pandas as pd
    from streamlit.testing.v1 import AppTest

    from core.app import lab

    lab.table_path().parent.mkdir(parents=True, exist_ok=True)
    if content == "garbage":
        lab.table_path().write_bytes(b"PAR1 truncated")
    else:  # a valid Parquet file that is not a run table
        pd.DataFrame({"a": [1]}).to_parquet(lab.table_path())
    at = AppTest.from_file("../app.py", default_timeout=60).run()  # the overview, whose sidebar lists lab runs
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.dataframe) >= 1 and not at.error  # the model table is there: the sidebar did not stop it
    at.switch_page("pages/lab.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "delete it to start a new table" in _error_texts(at)


# --- paths built from keys and names never leave the cache ------------------------------------------

@pytest.mark.parametrize("key", ["../../etc", "..", "a/b", "/abs", "x\0y", ""])
def test_a_key_cannot_point_outside_the_cache(key, isolated_cache):
    with pytest.raises(LogitscopeError, match="cannot name a cache file"):
        entry_path(key, DATA, ATTACK)
    if "/" in key or "\0" in key:  # a checkpoint's name is "<key>.pt": only separators could escape
        with pytest.raises(LogitscopeError, match="cannot name a cache file"):
            checkpoint_path(replace(tiny_recipe(), model_key=key))
    assert not any(isolated_cache.parent.glob("etc"))
