"""Bundles against damage and hostility (issue 11): a damaged cache is repaired before it is packed,
nothing unchecked is packed, and a hand-edited or hostile bundle is refused with a message, within
bounded memory, before anything uses it."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import shutil
import threading
import tracemalloc
import zipfile
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from core import storage
from core.app import bundle as B
from core.app import bundle_check as C
from core.app import bundle_read as R
from core.app import demo as core_demo
from core.app import jobs, lab
from core.app.prepare import logits_cached
from core.engine import data as core_data
from core.engine.logits import entry_ok, entry_path
from core.engine.models import checkpoint_ok, load_checkpoint
from core.errors import LogitscopeError
from core.study.hyper import eps_grid, eval_attack, eval_data
from core.study.recipes import checkpoint_path, default_recipes, is_trained, zoo_recipe

MB = 10**6


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    """Remembered file verdicts are per process: each test judges its files afresh."""
    storage._verdicts.clear()
    storage._reported.clear()


def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _setting():
    return eval_data("digits"), eval_attack("digits"), eps_grid("digits")


# --- (A) writing: repair, or refuse by name; never pack what was not checked -------------------------


def test_a_damaged_cache_is_repaired_before_it_is_packed(app_cache, tmp_path):
    """Issue 11 (A): a truncated logits entry and a bit-flipped checkpoint used to be packed as they were
    (with fresh checksums), and the model with the broken entry was silently left out ("9 models")."""
    data, attack, grid = _setting()
    recipes = {r.name: r for r in default_recipes("digits")}
    truncated = entry_path(recipes["pgd-at"].key, data, attack.at(0.1))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    flipped = checkpoint_path(recipes["standard"])
    blob = bytearray(flipped.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    flipped.write_bytes(bytes(blob))
    assert not entry_ok(recipes["pgd-at"].key, data, attack.at(0.1)) and not is_trained(recipes["standard"])

    said = []
    written = B.write_bundle("digits", tmp_path / "b.zip", maps=False, progress=lambda what, f: said.append(what))
    shown = [m["name"] for m in written.manifest["models"] if m["shown"]]
    assert shown == list(recipes)  # every model of the study, none left out
    assert entry_ok(recipes["pgd-at"].key, data, attack.at(0.1)) and is_trained(recipes["standard"])  # repaired
    assert any("training standard again" in s for s in said) and any("logits of pgd-at" in s for s in said)

    dest = tmp_path / "unpacked"
    R.extract(written.path, dest)
    storage._verdicts.clear()
    with pytest.MonkeyPatch.context() as mp:  # the unpacked bundle, read as the demo reads it
        mp.setenv("LOGITSCOPE_CACHE", str(dest))
        for r in recipes.values():
            assert logits_cached(r, data, attack, grid), r.name
            assert is_trained(r), r.name  # every packed checkpoint is intact and holds its model


def test_a_lab_run_with_a_corrupt_checkpoint_is_trained_again_not_left_out(app_cache, tmp_path):
    """`lab.run_recipes` offers the pickers only runs with intact checkpoints, and the writer chose from it:
    `bundle --models all` left a recorded, evaluated lab run out without a word when its checkpoint broke."""
    data, attack, grid = _setting()
    spec = lab.LabSpec("digits", "pgd-at", "flatten_nonmax", temperature=3.0, epochs=1, seed=3)
    job = jobs.submit("tiny", lambda ctx: lab.run(ctx, spec, attack, grid), "tiny lab run")
    assert job.wait(120) and job.snapshot().status == jobs.DONE, job.snapshot().error
    student = spec.recipe()
    path = checkpoint_path(student)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    assert not is_trained(student) and lab.run_recipes("digits") == []  # the pickers leave it out
    assert [r.key for r in B.choose("digits", spec.name(), data, attack, grid)] == [student.key]  # by name too

    said = []
    written = B.write_bundle("digits", tmp_path / "b.zip", maps=False, progress=lambda what, f: said.append(what))
    packed = {m["name"]: m for m in written.manifest["models"]}
    assert spec.name() in packed and packed[spec.name()]["shown"] and packed[spec.name()]["key"] == student.key
    assert any(f"training {spec.name()} again" in s for s in said) and is_trained(student)  # trained again
    dest = tmp_path / "unpacked"
    R.extract(written.path, dest)
    load_checkpoint(dest / packed[spec.name()]["checkpoint"], key=student.key)
    storage._verdicts.clear()
    with pytest.MonkeyPatch.context() as mp:  # the unpacked bundle offers the run, as the demo reads it
        mp.setenv("LOGITSCOPE_CACHE", str(dest))
        assert logits_cached(student, data, attack, grid)
        assert [r.name for r in lab.run_recipes("digits")] == [spec.name()]


def test_a_zoo_model_whose_logits_cannot_be_recomputed_is_refused_by_name(app_cache, tmp_path, monkeypatch):
    data, attack, _ = _setting()
    zoo = zoo_recipe("Wong2020Fast")
    catalog = B._catalog("digits")
    monkeypatch.setattr(B, "_catalog", lambda dataset: {**catalog, zoo.name: zoo})
    monkeypatch.setattr(B, "find_entry", lambda *a: SimpleNamespace(downloaded=lambda: False))  # not downloaded
    broken = entry_path(zoo.key, data, attack.at(0.1))
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"truncated")
    with pytest.raises(LogitscopeError) as exc:
        B.write_bundle("digits", tmp_path / "b.zip", maps=False)
    assert "rb:Wong2020Fast" in str(exc.value) and "cannot be recomputed" in str(exc.value)
    assert "precompute" in str(exc.value) and not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize("what", ["checkpoint", "logits"])
def test_the_bytes_packed_are_the_bytes_checked(app_cache, tmp_path, monkeypatch, what):
    """A file that changes between its check and its packing must not slip in: the packer checks a private
    copy of the bytes it read and packs exactly those. Here another writer damages the cache file while its
    bytes are checked (and mends it when the next file is checked): a packer that reads the file again
    after checking it would pack the damaged bytes."""
    data, attack, _ = _setting()
    r = {r.name: r for r in default_recipes("digits")}["pgd-at"]
    target = checkpoint_path(r) if what == "checkpoint" else entry_path(r.key, data, attack.at(0.1))
    good = target.read_bytes()
    damaged = {"now": False}

    def damaging(real):
        def check(path, *args, **kwargs):
            if damaged["now"]:
                target.write_bytes(good)
                damaged["now"] = False
            if path.name.endswith(target.name):
                target.write_bytes(good[:-50])
                damaged["now"] = True
            return real(path, *args, **kwargs)
        return check

    for name in ("load_checkpoint", "_load_checked"):
        monkeypatch.setattr(B, name, damaging(getattr(B, name)))
    written = B.write_bundle("digits", tmp_path / "b.zip", "pgd-at", maps=False)
    rel = target.relative_to(app_cache).as_posix()
    with zipfile.ZipFile(written.path) as z:
        assert z.read(rel) == good and written.manifest["files"][rel]["sha256"] == _sha(good)
    R.extract(written.path, tmp_path / "unpacked")  # and it verifies


def test_a_file_damaged_before_it_is_packed_is_refused(app_cache, tmp_path, monkeypatch):
    r = {r.name: r for r in default_recipes("digits")}["pgd-at"]
    path = checkpoint_path(r)
    repair = B._bring_up_to_date

    def repair_then_damage(*args, **kwargs):
        repair(*args, **kwargs)
        path.write_bytes(path.read_bytes()[:-50])  # damaged after the repair, before the packing

    monkeypatch.setattr(B, "_bring_up_to_date", repair_then_damage)
    with pytest.raises(LogitscopeError, match="failed its check as it was packed"):
        B.write_bundle("digits", tmp_path / "b.zip", "pgd-at", maps=False)
    assert not (tmp_path / "b.zip").exists()


# --- (B) reading: a hand-edited bundle is refused, never a traceback ----------------------------------


@pytest.fixture(scope="module")
def good(_study_dir, tmp_path_factory) -> Path:
    """A digits bundle of the trained study (written once for this module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGITSCOPE_CACHE", str(_study_dir))
        return B.write_bundle("digits", tmp_path_factory.mktemp("good") / "digits.zip", maps=False).path


def _forge(src: Path, dst: Path, manifest=None, members: dict | None = None, checksums: bool = True) -> Path:
    """A copy of a bundle with `manifest(m)` applied (returning text: the manifest's text) and `members`
    replaced or added (name -> bytes, or a callable writing to a file object), their checksums updated as a
    careful hand-editor would."""
    members = members or {}
    with zipfile.ZipFile(src) as z:
        m = json.loads(z.read("manifest.json"))
        blobs = {n: z.read(n) for n in z.namelist() if n != "manifest.json"}
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, blob in {**blobs, **members}.items():
            if callable(blob):
                with z.open(name, "w") as f:
                    blob(f)
            else:
                z.writestr(name, blob)
                if checksums and name in members:
                    m["files"][name] = {"sha256": _sha(blob), "bytes": len(blob)}
        text = manifest(m) if manifest is not None else None
        z.writestr("manifest.json", text if isinstance(text, str) else json.dumps(m))
    return dst


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _test_images(good: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(good) as z, np.load(io.BytesIO(z.read("data/test.npz")), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


def _hostile(good: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a hand-edited bundle, what its refusal says)."""
    arrays = _test_images(good)
    with zipfile.ZipFile(good) as z:
        m = json.loads(z.read("manifest.json"))
    entry = next(n for n in m["files"] if n.endswith(f"/{eval_data('digits').key()}-clean.safetensors"))
    cases = {  # the four of issue 11 first: each crashed the hosted demo's overview with a traceback
        "files as a list": (dict(manifest=lambda m: m.__setitem__("files", list(m["files"]))), "'files' is a list"),
        "no attack": (dict(manifest=lambda m: m.pop("attack")), "lacks 'attack'"),
        "test.npz without y": (dict(members={"data/test.npz": _npz(q=arrays["q"], scale=arrays["scale"])}),
                               "holds arrays ['q', 'scale']"),
        "a member named data": (dict(members={"data": b"x"}), "data is both a file and a folder"),
        "NaN epsilon": (dict(manifest=_set("eps", [0.0, float("nan")])), "epsilon grid"),
        "epsilon beyond the norm": (dict(manifest=_set("eps", [0.0, 5.0])), "epsilon grid is unusable"),
        "steps as text": (dict(manifest=lambda m: m["attack"].__setitem__("steps", "20")), "attack settings"),
        "unknown dataset": (dict(manifest=_set("dataset", "nope")), "is not a dataset name"),
        "short checksum": (dict(manifest=lambda m: m["files"]["data/test.npz"].__setitem__("sha256", "ab")),
                           "64 hex digits"),
        "negative size": (dict(manifest=lambda m: m["files"]["data/test.npz"].__setitem__("bytes", -1)),
                          "non-negative integer"),
        "models as names": (dict(manifest=_set("models", ["standard"])), "model entry is not an object"),
        "no shown model": (dict(manifest=lambda m: [x.__setitem__("shown", False) for x in m["models"]]),
                           "shows no model"),
        "mean per channel": (dict(manifest=_set("mean", [0.1, 0.2])), "one number per channel"),
        "image shape": (dict(manifest=_set("image_shape", [1, 4, 16])), "its images have shape"),
        "too few classes": (dict(manifest=lambda m: m.__setitem__("classes", m["classes"][:5])),
                            "labels are not in 0..4"),
        "label out of range": (dict(members={"data/test.npz": _npz(**{**arrays, "y": arrays["y"] + 5})}),
                               "labels are not in 0..9"),
        "float images out of range": (dict(members={"data/test.npz": _npz(
            y=arrays["y"], x=arrays["q"].astype(np.float32))}), "not in [0, 1]"),
        "object labels": (dict(members={"data/test.npz": _npz(q=arrays["q"], scale=arrays["scale"],
                                                              y=arrays["y"].astype(object))}), "not a vector of"),
        "a foreign scale": (dict(members={"data/test.npz": _npz(**{**arrays, "scale": np.array(3)})}),
                            "codes are not in [0, scale]"),
        "train_images": (dict(manifest=_set("train_images", 5)), "does not hold train_images"),
        "no train split": (dict(manifest=_set("train_images", 0)), "presence of data/train.npz disagree"),
        "a reserved name": (dict(members={"bundle.json": b"{}"}), "a name the bundle reserves"),
        "names differing in case": (dict(members={"Data/test.npz": b"x"}), "lists both"),
        "a colon": (dict(members={"c:/x": b"x"}), "unsafe path"),
        "logits of other images": (dict(members={entry: save({"logits": torch.zeros(5, 10),
                                                              "labels": torch.zeros(5, dtype=torch.int64)})}),
                                   "not logits (360, 10)"),
        "zoo list": (dict(members={"models/robustbench/evaluated.json": b'{"a": 1}'}), "not a list of zoo models"),
        "nested manifest": (dict(manifest=lambda m: json.dumps(m).replace('"created"', '"x": ' + "[" * 5000 + "]" * 5000
                                                                          + ', "created"')), "manifest is unreadable"),
        "many images in a small npz": (dict(members={"data/test.npz": _npz(  # 13 MB of zeros, 20 kB compressed
            y=np.zeros(200_000, np.int64), q=np.zeros((200_000, 1, 8, 8), np.uint8), scale=arrays["scale"])}),
            "more than 100000 images"),
    }
    return {what: (_forge(good, tmp / f"{i}.zip", **kw), message) for i, (what, (kw, message)) in enumerate(cases.items())}


def test_hand_edited_bundles_are_refused_with_a_clear_message(good, tmp_path):
    for what, (path, message) in _hostile(good, tmp_path).items():
        dest = tmp_path / "x"
        with pytest.raises(LogitscopeError) as exc:
            R.extract(path, dest)
        assert "not a usable Logitscope bundle" in str(exc.value) and message in str(exc.value), (what, str(exc.value))
        assert not dest.exists(), what  # nothing half-unpacked is left behind
    assert R.extract(good, tmp_path / "ok")["dataset"] == "digits"  # the untouched bundle is fine


@pytest.fixture
def no_demo(monkeypatch):
    """The demo's per-process state, emptied for the test and restored after it."""
    jobs.clear()
    monkeypatch.setattr(core_demo, "_started", {})
    monkeypatch.setattr(core_demo, "_datasets", {})
    monkeypatch.setattr(core_demo, "_fetched", {})
    monkeypatch.setattr(core_data, "_PROVIDED", {})
    made = []
    mkdtemp = core_demo.tempfile.mkdtemp
    monkeypatch.setattr(core_demo.tempfile, "mkdtemp", lambda **kw: made.append(mkdtemp(**kw)) or made[-1])
    yield made
    jobs.clear()
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def test_the_demo_refuses_hand_edited_bundles_and_leaves_nothing_behind(good, tmp_path, no_demo, monkeypatch):
    """Issue 11 (B): these bundles crashed the hosted demo's overview with AttributeError, KeyError,
    KeyError and FileExistsError."""
    cases = list(_hostile(good, tmp_path).items())[:4]
    for what, (path, message) in cases:
        with pytest.raises(LogitscopeError, match=re.escape(message)):
            core_demo.start(path)
        assert not core_demo._started and not core_data._PROVIDED, what
        assert not any(Path(d).exists() for d in no_demo), what  # no unpacked copy is left
    for what, (path, message) in cases:  # and the page says so, without a traceback
        monkeypatch.setenv(core_demo.ENV, str(path))
        at = AppTest.from_file("../app.py", default_timeout=120).run()
        assert not at.exception, (what, [e.message for e in at.exception])
        errors = " ".join(e.body for e in at.error)  # the details go to the server's log
        assert "The hosted demo cannot start" in errors and "not a usable Logitscope bundle" in errors, (what, errors)


# --- (C) size limits: a zip bomb is refused within bounded memory -------------------------------------


def _zeros(n: int):
    def write(f) -> None:
        for _ in range(n // MB):
            f.write(bytes(MB))
    return write


def _peak_while(fn) -> tuple[BaseException | None, float]:
    """(what `fn` raised, the peak of Python memory it allocated, in MB)."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] / MB
        tracemalloc.stop()
    return raised, peak


def test_a_zip_bomb_is_refused_within_bounded_memory(good, tmp_path, monkeypatch):
    """Issue 11 (C): a member of 3 GiB of zeros declared as 10 bytes was read whole (6.9 GB resident)
    before it was refused. Here 50 MB of zeros (about 50 kB compressed) stand for it."""
    with zipfile.ZipFile(good) as z:
        m = json.loads(z.read("manifest.json"))
    target = next(n for n in m["files"] if n.startswith("logits/"))
    size = 50 * MB
    zeros_sha = hashlib.sha256()
    for _ in range(size // MB):
        zeros_sha.update(bytes(MB))
    cases = {
        "declared as 10 bytes": (lambda m: m["files"][target].__setitem__("bytes", 10), "bytes in the zip and 10"),
        "declared truthfully, a wrong checksum": (
            lambda m: m["files"][target].__setitem__("bytes", size), f"{target} does not match its checksum"),
        "declared truthfully, over the limit": (
            lambda m: m["files"][target].update(bytes=size, sha256=zeros_sha.hexdigest()), "more than the 10 MB"),
    }
    for i, (what, (edit, message)) in enumerate(cases.items()):
        bomb = _forge(good, tmp_path / f"bomb{i}.zip", manifest=edit, members={target: _zeros(size)})
        assert bomb.stat().st_size < 6 * MB
        with monkeypatch.context() as mp:
            if "limit" in what:
                mp.setattr(C, "MAX_UNPACKED_MB", 10)
            raised, peak = _peak_while(lambda: R.extract(bomb, tmp_path / "x"))
        assert isinstance(raised, LogitscopeError) and message in str(raised), (what, raised)
        assert peak < 8, (what, peak)  # MB: a few chunks, never the 50 MB member
        assert not (tmp_path / "x").exists()


def test_member_count_and_file_size_limits(good, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "MAX_MEMBERS", 5)
    with pytest.raises(LogitscopeError, match="more than the 5 files"):
        R.extract(good, tmp_path / "x")
    monkeypatch.setattr(C, "MAX_MEMBERS", 0)
    monkeypatch.setattr(C, "MAX_UNPACKED_MB", 1)
    with pytest.raises(LogitscopeError, match="larger than the 1 MB"):
        R.extract(good, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_download_larger_than_any_bundle_stops_early(good, tmp_path, no_demo, monkeypatch):
    handler = partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                      directory=str(good.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(C, "MAX_MEMBERS", 0)
    monkeypatch.setattr(C, "MAX_UNPACKED_MB", 1)
    try:
        with pytest.raises(LogitscopeError, match="larger than the 1 MB"):
            core_demo.start(f"http://127.0.0.1:{server.server_address[1]}/{good.name}")
    finally:
        server.shutdown()
    assert not any(Path(d, "bundle.zip").exists() for d in no_demo)


def test_a_checkpoint_in_a_good_bundle_loads_with_its_key(good, tmp_path):
    """The round trip the checks must not break: packed checkpoints hold their models."""
    m = R.extract(good, tmp_path / "u")
    for x in m["models"]:
        if x["checkpoint"]:
            assert checkpoint_ok(tmp_path / "u" / x["checkpoint"], x["key"])
            load_checkpoint(tmp_path / "u" / x["checkpoint"], key=x["key"])
