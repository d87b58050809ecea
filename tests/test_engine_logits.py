"""The logits cache: computed once, identical on a hit, named by every spec, safe files, robust to
corruption, and one computation for two processes asking at once."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.config import AttackSpec, DataSpec
from core.engine.data import load_dataset
from core.engine.logits import FORMAT, LogitsRecord, entry_path, get_grid, get_or_compute
from core.engine.models import build_model

ROOT = Path(__file__).resolve().parent.parent
DATA = DataSpec("digits", "test", limit=24)
ATTACK = AttackSpec(eps=0.1, steps=2, seed=0)
KEY = "model0000000"



@pytest.fixture(scope="module")
def net():
    ds = load_dataset("digits")
    torch.manual_seed(0)
    return build_model("digits_cnn", ds.shape, ds.num_classes, ds.mean, ds.std).eval()


class CountingLoader:
    """A model source that counts how often the cache had to build the model."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self):
        self.calls += 1
        return self.model


def test_first_call_computes_and_writes_second_reads(net, isolated_cache):
    loader = CountingLoader(net)
    first = get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 1
    assert isinstance(first, LogitsRecord)
    assert first.path.suffix == ".safetensors" and first.path.is_file()
    assert first.path.is_relative_to(isolated_cache)  # under LOGITSCOPE_CACHE, nowhere else
    assert first.logits.shape == (24, 10) and first.labels.shape == (24,)
    x, y = load_dataset("digits").split(DATA)
    assert torch.equal(first.labels, y)
    assert first.eps == 0.1 and first.attack == ATTACK and first.model_key == KEY and first.data == DATA

    second = get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 1  # the model was never built again
    assert torch.equal(second.logits, first.logits) and torch.equal(second.labels, first.labels)
    assert second.path == first.path


def test_clean_logits_are_the_models_output(net):
    rec = get_or_compute(net, KEY, DATA)  # attack None: clean
    x, _ = load_dataset("digits").split(DATA)
    with torch.no_grad():
        assert torch.allclose(rec.logits, net(x), atol=1e-5)
    assert rec.eps == 0.0 and rec.attack is None and rec.path.name.endswith("-clean.safetensors")
    # clean logits do not depend on the attack's settings: one shared entry
    loader = CountingLoader(net)
    again = get_or_compute(loader, KEY, DATA, AttackSpec(eps=0.0, steps=50, norm="l2"))
    assert loader.calls == 0 and torch.equal(again.logits, rec.logits)


def test_attacked_logits_differ_from_clean(net):
    clean = get_or_compute(net, KEY, DATA)
    adv = get_or_compute(net, KEY, DATA, ATTACK)
    assert not torch.allclose(clean.logits, adv.logits, atol=1e-3)
    assert clean.path != adv.path


def test_grid_reuses_existing_entries_and_computes_only_missing(net):
    loader = CountingLoader(net)
    one = get_grid(loader, KEY, DATA, ATTACK, [0.1])
    assert loader.calls == 1
    grid = get_grid(loader, KEY, DATA, ATTACK, [0.0, 0.05, 0.1])
    assert loader.calls == 2 and set(grid) == {0.0, 0.05, 0.1}
    assert torch.equal(grid[0.1].logits, one[0.1].logits)
    assert grid[0.05].attack == ATTACK.at(0.05)
    get_grid(loader, KEY, DATA, ATTACK, [0.05, 0.0, 0.1])
    assert loader.calls == 2


def test_model_left_in_its_mode(net):
    net.train()
    try:
        get_or_compute(net, KEY, DATA, ATTACK)
        assert net.training
    finally:
        net.eval()


@pytest.mark.parametrize("change", [
    lambda k, d, a: ("model0000001", d, a),
    lambda k, d, a: (k, DataSpec("digits", "train", limit=24), a),
    lambda k, d, a: (k, DataSpec("digits", "test", limit=25), a),
    lambda k, d, a: (k, d, AttackSpec(eps=0.1, steps=3, seed=0)),
    lambda k, d, a: (k, d, AttackSpec(eps=0.1, steps=2, norm="l2")),
    lambda k, d, a: (k, d, AttackSpec(eps=0.1, steps=2, loss="margin")),
    lambda k, d, a: (k, d, a.at(0.2)),
    lambda k, d, a: (k, d, AttackSpec(eps=0.1, steps=2, seed=1)),
], ids=["model", "split", "limit", "steps", "norm", "loss", "eps", "seed"])
def test_every_spec_changes_the_entry_path(change):
    base = entry_path(KEY, DATA, ATTACK)
    assert entry_path(*change(KEY, DATA, ATTACK)) != base
    assert entry_path(KEY, DATA, AttackSpec(eps=0.1, steps=2, seed=0)) == base  # equal specs, same entry


def test_changing_the_seed_recomputes(net):
    loader = CountingLoader(net)
    a = get_or_compute(loader, KEY, DATA, ATTACK)
    b = get_or_compute(loader, KEY, DATA, AttackSpec(eps=0.1, steps=2, seed=1))
    assert loader.calls == 2 and a.path != b.path
    assert not torch.equal(a.logits, b.logits)  # other random starts


def test_file_is_plain_safetensors_with_the_specs_in_metadata(net):
    rec = get_or_compute(net, KEY, DATA, ATTACK)
    raw = rec.path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])  # a JSON header, then raw tensor bytes: no pickle
    assert set(header) == {"__metadata__", "logits", "labels"}
    assert header["logits"]["dtype"] == "F32" and header["logits"]["shape"] == [24, 10]
    assert header["labels"]["dtype"] == "I64"
    tensors = load_file(rec.path)
    assert torch.equal(tensors["logits"], rec.logits) and torch.equal(tensors["labels"], rec.labels)
    with safe_open(str(rec.path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["model"] == KEY
    assert DataSpec.from_dict(json.loads(meta["data"])) == DATA
    assert AttackSpec.from_dict(json.loads(meta["attack"])) == ATTACK
    clean = get_or_compute(net, KEY, DATA)
    with safe_open(str(clean.path), "pt") as f:
        assert json.loads(f.metadata()["attack"]) is None
    # no temporary files or stray outputs beside the entries
    assert all(p.suffix in (".safetensors", ".lock") for p in rec.path.parent.iterdir())


@pytest.mark.parametrize("garbage", [
    b"",
    b"\x00" * 3,
    b"not a safetensors file at all" * 10,
    b"\xff" * 8 + b"{}",
], ids=["empty", "short", "text", "huge-header"])
def test_corrupted_entry_is_recomputed(net, garbage):
    loader = CountingLoader(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    good.path.write_bytes(garbage)
    again = get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 2
    assert torch.equal(again.logits, good.logits)  # deterministic: the same numbers come back
    assert torch.equal(load_file(good.path)["logits"], good.logits)  # and the file is healthy again


def test_truncated_entry_is_recomputed(net):
    loader = CountingLoader(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    data = good.path.read_bytes()
    good.path.write_bytes(data[: len(data) - 40])
    again = get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 2 and torch.equal(again.logits, good.logits)


@pytest.mark.parametrize("tensors", [
    {"other": torch.zeros(3)},
    {"logits": torch.zeros(24, 10), "labels": torch.zeros(5, dtype=torch.int64)},
    {"logits": torch.zeros(24), "labels": torch.zeros(24, dtype=torch.int64)},
], ids=["wrong-names", "wrong-length", "wrong-ndim"])
def test_valid_safetensors_with_wrong_content_is_recomputed(net, tensors):
    loader = CountingLoader(net)
    good = get_or_compute(loader, KEY, DATA, ATTACK)
    save_file(tensors, str(good.path))
    again = get_or_compute(loader, KEY, DATA, ATTACK)
    assert loader.calls == 2 and torch.equal(again.logits, good.logits)


CONCURRENT = textwrap.dedent("""
    import hashlib, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from core.config import AttackSpec, DataSpec
    from core.engine.data import load_dataset
    from core.engine.logits import get_or_compute
    from core.engine.models import build_model

    me, marker, ready_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ds = load_dataset("digits")

    def loader():
        with open(marker, "a") as f:
            f.write(me + "\\n")
        time.sleep(1.0)  # long enough for the other process to be waiting on the entry
        torch.manual_seed(0)
        return build_model("digits_cnn", ds.shape, ds.num_classes, ds.mean, ds.std).eval()

    (ready_dir / me).touch()
    deadline = time.time() + 60
    while len(list(ready_dir.iterdir())) < 2 and time.time() < deadline:  # start together
        time.sleep(0.01)
    rec = get_or_compute(loader, "concurrent00", DataSpec("digits", "test", limit=24),
                         AttackSpec(eps=0.1, steps=2, seed=0))
    print(hashlib.sha256(rec.logits.numpy().tobytes()).hexdigest())
""")


def test_two_processes_compute_an_entry_once(tmp_path, isolated_cache):
    script = tmp_path / "worker.py"
    script.write_text(CONCURRENT)
    marker, ready = tmp_path / "marker.txt", tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "LOGITSCOPE_CACHE": str(isolated_cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), name, str(marker), str(ready)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert len(marker.read_text().split()) == 1  # exactly one process built the model and computed
    digests = [out.strip() for out, _ in outs]
    assert digests[0] == digests[1] and len(digests[0]) == 64
    files = list((isolated_cache / "logits" / "concurrent00").glob("*.safetensors"))
    assert len(files) == 1
