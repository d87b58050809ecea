"""Hosted-demo mode: the app serving a bundle through AppTest, read-only, with heavy work disabled."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
from apptest import open_page, texts
from streamlit.testing.v1 import AppTest

from core.app import bundle as B
from core.app import bundle_read as R
from core.app import demo as core_demo
from core.app import jobs
from core.app.palette import display_name
from core.engine import data as core_data
from core.errors import LogitscopeError

PAGES = ["overview", "distributions", "differences", "lab", "embedding", "across", "why"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle_file(_study_dir, tmp_path_factory) -> Path:
    """A digits bundle of the trained study, with its default UMAP maps (written once for this module)."""
    cache = tmp_path_factory.mktemp("demo-src") / "cache"
    shutil.copytree(_study_dir, cache, ignore=shutil.ignore_patterns("*.lock", "lab", "embeddings"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGITSCOPE_CACHE", str(cache))
        return B.write_bundle("digits", tmp_path_factory.mktemp("demo") / "digits-bundle.zip").path


@pytest.fixture
def served(bundle_file, monkeypatch):
    """LOGITSCOPE_DEMO points at the bundle; each test unpacks it afresh and leaves no job or dataset behind."""
    jobs.clear()
    monkeypatch.setenv(core_demo.ENV, str(bundle_file))
    monkeypatch.setattr(core_demo, "_started", {})
    monkeypatch.setattr(core_data, "_PROVIDED", {})
    before = _sha(bundle_file)
    yield bundle_file
    jobs.clear()
    for d in core_demo._started.values():
        shutil.rmtree(d.cache, ignore_errors=True)
    assert _sha(bundle_file) == before  # the bundle is never modified


def wait_for_jobs(at: AppTest, seconds: float = 150) -> AppTest:
    for job in jobs.active():
        assert job.wait(seconds), f"{job.label} did not finish in {seconds} s"
    return at.run()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_from_the_bundle(served, page):
    at = open_page(page)
    if page == "embedding":  # the default map comes from the bundle: no UMAP fit on the small host
        assert jobs.find(lambda j: j.key.startswith("umap:"), active_only=False) is None
    at = wait_for_jobs(at)
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.body for e in at.error]
    assert "Waiting for" not in texts(at)
    if page == "why":  # self-contained: no shared settings in its sidebar
        assert not at.sidebar.selectbox and "This page is self-contained" in texts(at)
        return
    assert at.sidebar.selectbox(key="w.ds").disabled and at.sidebar.radio(key="w.norm").disabled
    assert at.sidebar.text_input(key="w.dd").disabled and at.sidebar.text_input(key="w.own").disabled
    assert at.sidebar.multiselect(key="w.m").value == ["standard", "pgd-at"]
    if page == "embedding":
        assert "Nothing selected yet" in texts(at)


def test_the_overview_says_it_is_a_demo_and_training_is_off(served):
    at = open_page("overview")
    assert "This is a hosted demo" in texts(at) and "digits-bundle.zip" in texts(at)
    assert "training missing models" in texts(at)
    assert at.button(key="train_missing").disabled and at.button(key="compute_missing").disabled
    assert set(at.dataframe[0].value["status"]) == {"ready"}
    assert not jobs.active()  # no first-run training in the demo


def test_a_tiny_lab_run_works_within_the_demo_limits(served):
    at = open_page("lab")
    assert at.slider(key="w.epochs").max == core_demo.LAB_MAX_EPOCHS
    at.selectbox(key="w.manip").set_value("flatten_nonmax").run()
    at.slider(key="w.epochs").set_value(1).run()
    at.number_input(key="w.seed").set_value(5).run()
    at.button(key="distill").click().run()
    assert not at.exception and not at.error
    at = wait_for_jobs(at)
    assert not at.exception, [e.message for e in at.exception]
    name = "lab:pgd-at:flatten_nonmax epochs=1 seed=5"
    assert name in list(at.dataframe[-1].value["name"])
    assert "Clean accuracy" in [m.label for m in at.metric]
    assert display_name(name) in at.sidebar.multiselect(key="w.m").options  # offered like the bundled models


def test_visitors_keep_their_runs_apart_and_bundled_runs_are_read_only(served, monkeypatch):
    """One visitor's lab run is theirs: another visitor neither sees it nor can remove it; nobody removes the
    bundle's runs; a visitor keeps a bounded number of runs."""
    from core.app import lab
    alice = open_page("lab")
    bundled = {"run": "bundled-run", "name": "lab:pgd-at:none", "dataset": "digits", "teacher": "pgd-at",
               "manipulation": "none", "temperature": 4.0, "hard_weight": 0.0, "fraction": 1.0, "epochs": 20,
               "seed": 0, "norm": "linf", "steps": 20, "clean_accuracy": 0.97, "robust_accuracy": '{"0": 0.97}',
               "order_agreement": 0.6, "mean_max_logit": 7.0, "mean_logit_gap": 5.0, "max_logit_ks_to_teacher": 0.2,
               "seconds": 5.0, "created": "2026-01-01T00:00:00", "student_key": "abc", "spec": "{}"}
    lab.record(bundled)  # as if it came in the bundle (the demo's unpacked cache)
    alice.slider(key="w.epochs").set_value(1).run()
    alice.number_input(key="w.seed").set_value(6).run()
    alice.button(key="distill").click().run()
    alice = wait_for_jobs(alice)
    assert not alice.exception, [e.message for e in alice.exception]
    name = "lab:pgd-at:shuffle_nonmax epochs=1 seed=6"
    table = alice.dataframe[-1].value
    assert dict(zip(table["name"], table["whose"])) == {name: "yours", "lab:pgd-at:none": "bundled (read-only)"}
    assert display_name(name) in alice.sidebar.multiselect(key="w.m").options

    bob = open_page("lab")  # another browser session
    table = bob.dataframe[-1].value
    assert list(table["name"]) == ["lab:pgd-at:none"] and list(table["whose"]) == ["bundled (read-only)"]
    assert display_name(name) not in bob.sidebar.multiselect(key="w.m").options
    bob_id, alice_id = bob.session_state["_logitscope_visitor"], alice.session_state["_logitscope_visitor"]
    assert bob_id != alice_id
    runs = lab.load_runs("digits")
    assert lab.delete_runs(list(runs["run"]), owner=bob_id) == 0  # neither alice's run nor the bundle's
    assert len(lab.load_runs("digits")) == 2

    monkeypatch.setattr(lab, "VISITOR_RUNS", 1)
    alice.number_input(key="w.seed").set_value(7).run()
    alice.button(key="distill").click().run()
    assert "You have 1 run in this demo" in texts(alice) and not jobs.active()
    assert lab.delete_runs(list(runs["run"]), owner=alice_id) == 1
    assert list(lab.load_runs("digits")["run"]) == ["bundled-run"]


def test_the_demo_names_no_server_path(served):
    at = open_page("overview")
    cache = str(core_demo._started[next(iter(core_demo._started))].cache)
    shown = texts(at) + " ".join(str(v) for df in at.dataframe for v in df.value.to_numpy().ravel())
    assert cache not in shown and "/tmp" not in shown
    assert "The bundle" in [s.value for s in at.subheader] and "In this cache" not in shown


def test_the_demo_entry_point_without_a_bundle_says_what_to_set(monkeypatch):
    monkeypatch.delenv(core_demo.ENV, raising=False)
    at = AppTest.from_file("../demo/streamlit_app.py", default_timeout=120).run()
    assert not at.exception
    assert core_demo.ENV in texts(at) and "hosted-demo entry point" in texts(at)
    assert not jobs.active()  # it trains nothing on a small host


def test_the_demo_folder_installs_cpu_torch_and_no_robustbench():
    root = Path(__file__).resolve().parent.parent
    pins = lambda p: dict(line.split("==") for line in p.read_text().splitlines()
                          if "==" in line and not line.startswith(("#", "-")))
    demo, full = pins(root / "demo" / "requirements.txt"), pins(root / "requirements.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (root / "demo" / "requirements.txt").read_text()
    assert demo.pop("torch") == full["torch"] + "+cpu" and demo.pop("torchvision") == full["torchvision"] + "+cpu"
    assert {k: full.get(k) for k in demo} == demo  # every other pin is the project's
    assert not {"robustbench", "ray", "setuptools"} & set(demo)
    assert {"streamlit", "pyautoattack", "umap-learn", "scikit-learn"} <= set(demo)


_ENTRY = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("robustbench", "ray"):
            raise ImportError(f"{name} is not installed on the demo's host")
sys.meta_path.insert(0, Block())
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=240).run()
errors = [e.message for e in at.exception] + [e.body for e in at.error]
for page in ["distributions", "differences", "lab", "embedding", "across", "why"]:
    at.switch_page(f"../pages/{page}.py").run()
    errors += [f"{page}: {e.message}" for e in at.exception] + [f"{page}: {e.body}" for e in at.error]
print(errors)
"""


def test_the_demo_entry_point_serves_every_page_without_robustbench_or_ray(served):
    """As Community Cloud runs it: demo/streamlit_app.py, the project not installed, RobustBench and Ray absent."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _ENTRY, str(root / "demo" / "streamlit_app.py")], cwd=root,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": "", core_demo.ENV: str(served)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-3000:]


def test_the_demo_limits_are_user_errors():
    demo = core_demo.Demo(Path("b.zip"), Path("c"), {"dataset": "cifar10", "train_images": 0})
    with pytest.raises(LogitscopeError, match="Live distillation is off"):
        core_demo.check_lab(demo, 1, True, False)
    demo = core_demo.Demo(Path("b.zip"), Path("c"), {"dataset": "digits", "train_images": 1437})
    with pytest.raises(LogitscopeError, match=f"at most {core_demo.LAB_MAX_EPOCHS} epochs"):
        core_demo.check_lab(demo, core_demo.LAB_MAX_EPOCHS + 1, True, False)
    with pytest.raises(LogitscopeError, match="does not train teachers"):
        core_demo.check_lab(demo, 1, False, False)
    with pytest.raises(LogitscopeError, match="one job at a time"):
        core_demo.check_lab(demo, 1, True, True)
    with pytest.raises(LogitscopeError, match="at most 1 replicate"):
        core_demo.check_lab(demo, 1, True, False, replicates=3)
    core_demo.check_lab(demo, 1, True, False)
    core_demo.check_lab(demo, 1, True, False, replicates=1)


def test_a_bundle_without_checkpoints_still_shows_its_logits(_study_dir, tmp_path, monkeypatch):
    """Checkpoints over the size cap stay out of a bundle: the pages show logits, the lab says what is missing."""
    cache = tmp_path / "src"
    shutil.copytree(_study_dir, cache, ignore=shutil.ignore_patterns("*.lock", "lab", "embeddings"))
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(cache))
    monkeypatch.setattr(B, "MAX_CHECKPOINT_MB", 0)
    path = B.write_bundle("digits", tmp_path / "logits-only.zip", "standard,pgd-at", maps=False).path
    assert not any(n.endswith(".pt") for n in R.read_manifest(path)["files"])
    jobs.clear()
    monkeypatch.setenv(core_demo.ENV, str(path))
    monkeypatch.setattr(core_demo, "_started", {})
    monkeypatch.setattr(core_data, "_PROVIDED", {})
    try:
        at = open_page("differences")
        assert not at.exception, [e.message for e in at.exception]
        assert "No attacked image for Standard" in texts(at)  # display names
        lab = open_page("lab")
        lab.button(key="distill").click().run()
        assert "does not train teachers" in texts(lab)
        assert not jobs.active()
    finally:
        jobs.clear()


def test_a_corrupt_bundle_stops_the_app_with_a_message(bundle_file, tmp_path, monkeypatch):
    bad = tmp_path / "bad.zip"
    blob = bytearray(bundle_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))
    monkeypatch.setenv(core_demo.ENV, str(bad))
    monkeypatch.setattr(core_demo, "_started", {})
    at = open_page("overview")
    assert not at.exception
    assert "The hosted demo cannot start" in texts(at) and "not a usable Logitscope bundle" in texts(at)
    monkeypatch.setenv(core_demo.ENV, str(tmp_path / "missing.zip"))
    assert "no such file" in texts(open_page("overview"))


def test_a_bundle_can_be_served_from_a_url(bundle_file, monkeypatch, tmp_path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = partial(Quiet, directory=str(bundle_file.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(core_demo, "_started", {})
    monkeypatch.setattr(core_demo, "_fetched", {})
    monkeypatch.setattr(core_data, "_PROVIDED", {})
    monkeypatch.setenv("LOGITSCOPE_CACHE", str(tmp_path / "before"))
    try:
        demo = core_demo.start(f"http://127.0.0.1:{server.server_address[1]}/{bundle_file.name}")
        assert demo.dataset == "digits" and demo.live_lab
        assert (demo.cache / "bundle.json").is_file() and Path(core_demo.os.environ["LOGITSCOPE_CACHE"]) == demo.cache
        with pytest.raises(LogitscopeError, match="Could not download the demo bundle"):
            core_demo.start(f"http://127.0.0.1:{server.server_address[1]}/nothing.zip")
    finally:
        server.shutdown()
        for d in core_demo._started.values():
            shutil.rmtree(d.cache, ignore_errors=True)


def test_the_streamlit_secret_works_like_the_environment_variable(bundle_file, monkeypatch):
    monkeypatch.setenv(core_demo.ENV, "")  # unset for the app; restored (removed) after the test
    monkeypatch.setattr(core_demo, "_started", {})
    monkeypatch.setattr(core_data, "_PROVIDED", {})
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.secrets[core_demo.ENV] = str(bundle_file)
    at.run()
    assert not at.exception and "This is a hosted demo" in texts(at)
    for d in core_demo._started.values():
        shutil.rmtree(d.cache, ignore_errors=True)
