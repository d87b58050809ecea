"""Portable bundles: a round trip of the study cache, checksums, refusals, and nothing pickled."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from core.__main__ import main
from core.app import bundle as B
from core.app import bundle_check as C
from core.app import bundle_read as R
from core.engine.data import load_dataset
from core.engine.models import load_checkpoint
from core.errors import LogitscopeError
from core.study.recipes import default_recipes

SAFE_SUFFIXES = {".safetensors", ".pt", ".parquet", ".npz", ".json"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def written(study_cache, tmp_path) -> B.Written:
    before = {p: p.stat().st_mtime_ns for p in study_cache.rglob("*") if p.is_file() and p.suffix != ".lock"}
    out = B.write_bundle("digits", tmp_path / "out" / "digits.zip", maps=False)
    after = {p: p.stat().st_mtime_ns for p in study_cache.rglob("*") if p.is_file() and p.suffix != ".lock"}
    assert after == before  # bundling only reads the cache
    return out


def test_a_bundle_round_trip_gives_identical_logits_images_and_models(written, study_cache, tmp_path):
    m = written.manifest
    assert (m["format"], m["version"], m["dataset"]) == (C.FORMAT, C.VERSION, "digits")
    assert m["eps"] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.3] and m["attack"]["steps"] == 20 and m["created"]
    shown = [x for x in m["models"] if x["shown"]]
    assert [x["name"] for x in shown] == [r.name for r in default_recipes("digits")]
    assert all(x["spec"]["dataset"] == "digits" and x["key"] and x["checkpoint"] for x in shown)
    assert written.bytes < 8e6

    dest = tmp_path / "unpacked"
    assert R.extract(written.path, dest) == m
    n_logits = 0
    for name in m["files"]:
        if name.startswith("logits/"):  # every entry is byte-for-byte the cache's, so identical tensors
            mine, theirs = load_file(dest / name), load_file(study_cache / name)
            assert torch.equal(mine["logits"], theirs["logits"]) and torch.equal(mine["labels"], theirs["labels"])
            n_logits += 1
    assert n_logits >= len(shown) * len(m["eps"])
    ds, original = R.bundled_dataset(dest, m), load_dataset("digits")
    assert torch.equal(ds.x_test, original.x_test) and torch.equal(ds.y_test, original.y_test)
    assert torch.equal(ds.x_train, original.x_train) and (ds.mean, ds.std) == (original.mean, original.std)
    assert ds.classes == original.classes
    stats = pd.read_parquet(dest / "stats" / "per_sample.parquet")
    assert len(stats) == len(shown) * len(m["eps"]) * 360 and {"model", "eps", "idx", "confidence"} <= set(stats)
    model = load_checkpoint(dest / shown[0]["checkpoint"])
    x = original.x_test[:4]
    with torch.no_grad():
        assert model(x).shape == (4, 10)


def test_nothing_in_a_bundle_is_pickled(written):
    with zipfile.ZipFile(written.path) as z:
        for name in z.namelist():
            assert Path(name).suffix in SAFE_SUFFIXES, name
            blob = z.read(name)
            if name.endswith(".npz"):
                with np.load(io.BytesIO(blob), allow_pickle=False) as f:
                    assert all(f[k].dtype != object for k in f.files)
            elif name.endswith(".pt"):
                torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            elif name.endswith(".json"):
                json.loads(blob)


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of a bundle with `change(name, blob, manifest) -> (name, blob) | None` applied to every member."""
    with zipfile.ZipFile(src) as z:
        manifest = json.loads(z.read("manifest.json"))
        members = {n: z.read(n) for n in z.namelist() if n != "manifest.json"}
    out = [c for c in (change(n, b, manifest) for n, b in members.items()) if c is not None]
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        for name, blob in out:
            z.writestr(name, blob)
    return dst


def test_corrupt_or_foreign_bundles_are_refused_with_a_clear_message(written, tmp_path):
    src = written.path
    target = next(n for n in written.manifest["files"] if n.startswith("logits/"))

    def flip(name, blob, manifest):  # modified after bundling: the zip is sound, the checksum is not
        return name, (blob[:-1] + bytes([blob[-1] ^ 1]) if name == target else blob)

    def newer(name, blob, manifest):
        manifest["version"] = C.VERSION + 1
        return name, blob

    def drop(name, blob, manifest):
        return None if name == target else (name, blob)

    def escape(name, blob, manifest):
        if name != target:
            return name, blob
        manifest["files"]["../escape.safetensors"] = manifest["files"].pop(name)
        return "../escape.safetensors", blob

    def extra(name, blob, manifest):
        return ("evil.pkl", b"\x80\x04.") if name == target else (name, blob)

    cases = {
        "checksum": (_rewrite(src, tmp_path / "flip.zip", flip), f"{target} does not match its checksum"),
        "version": (_rewrite(src, tmp_path / "v2.zip", newer), f"version {C.VERSION + 1}"),
        "missing": (_rewrite(src, tmp_path / "drop.zip", drop), f"{target} is missing"),
        "unsafe": (_rewrite(src, tmp_path / "escape.zip", escape), "unsafe path"),
        "extra": (_rewrite(src, tmp_path / "extra.zip", extra), "does not list (evil.pkl)"),
    }
    raw = bytearray(src.read_bytes())  # damaged in transit: the zip's own CRC check fails first
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(target)
    raw[info.header_offset + 30 + len(info.filename.encode()) + 5] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(raw))
    cases["damaged"] = (tmp_path / "crc.zip", "is damaged")
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    cases["junk"] = (tmp_path / "junk.zip", "it is not a zip file")
    for what, (path, message) in cases.items():
        dest = tmp_path / f"x-{what}"
        with pytest.raises(LogitscopeError) as exc:
            R.extract(path, dest)
        assert message in str(exc.value) and "python -m core bundle" in str(exc.value), (what, str(exc.value))
        assert not dest.exists(), what  # nothing half-unpacked is left behind
    assert not (tmp_path / "escape.safetensors").exists()
    with pytest.raises(LogitscopeError, match="No bundle at"):
        R.read_manifest(tmp_path / "nowhere.zip")


def test_the_command_line_writes_a_bundle_and_says_how_to_serve_it(study_cache, tmp_path, capsys):
    out = tmp_path / "b.zip"
    assert main(["bundle", "--dataset", "digits", "--models", "standard,pgd-at", "--no-maps", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Bundle written to {out}" in printed and "LOGITSCOPE_DEMO=" in printed
    m = R.read_manifest(out)
    assert [x["name"] for x in m["models"] if x["shown"]] == ["standard", "pgd-at"]
    assert {x["name"] for x in m["models"]} == {"standard", "pgd-at", "trades"}  # teachers ride along for the lab
    assert main(["bundle", "--models", "standard", "--steps", "3", "--out", str(tmp_path / "c.zip")]) == 1
    assert "precompute" in capsys.readouterr().err  # not computed for that attack: says what to run
