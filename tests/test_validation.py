"""Bad input never crashes: random link parameters, command lines and settings, and hostile files.

Property-based (hypothesis): URL query parameters and their parsers never raise and never yield a
value outside their options; command lines either run with checked values or exit 2 with a message
and no traceback; specs accept a value or raise LogitscopeError, nothing else. Paths from a link or a
form cannot leave the data folders, and arrays are loaded without unpickling.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.app import jobs
from core.config import AttackSpec, DistillSpec, TrainSpec, check_eps, data_roots, inside_data_roots
from core.errors import LogitscopeError

ROOT = Path(__file__).resolve().parent.parent
GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
PROFILE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.too_slow])

# Text a link may carry: anything, numbers written every way, and paths that try to get out.
numbers = st.one_of(st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True).map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0x10", "1_0", " 5 ", "", "0.1.2"]))
hostile = st.sampled_from(["npz:../../etc/passwd", "npz:/etc/passwd", "folder:/", "folder:../..", "/", "/etc",
                           "..", "~", "~root", "~nobody-here/x", "npz:~/x.npz", "%00", "a\x00b", "digits\x00",
                           "digits,digits", ",", "standard,,pgd-at", "x" * 300, "ümlaut", "<script>"])
link_text = st.one_of(st.text(max_size=40), numbers, hostile)


# --- the URL parsers ----------------------------------------------------------------------------------

@given(link_text)
@settings(deadline=None)
def test_query_parameter_parsers_never_raise_and_stay_in_range(text):
    from pages import _state as state

    options = ["standard", "pgd-at", "trades"]
    assert state.choice(options)(text) in (None, *options)
    several = state.several(options)(text)
    assert several is None or (isinstance(several, list) and set(several) <= set(options))
    for lo, hi, integer in ((0, 1, False), (1, 200, True), (0.5, 20, False), (0, 999, True)):
        v = state.number(lo, hi, integer)(text)
        assert v is None or (lo <= v <= hi and math.isfinite(v) and (not integer or isinstance(v, int)))
    assert state.on_grid(GRID)(text) in (None, *GRID)


@given(link_text)
@settings(deadline=None, max_examples=60)
def test_data_folder_and_own_data_parsers_never_raise_nor_leave_the_data_folders(text):
    from pages import _data as data

    d = data.folder(text)
    assert d is None or d == "" or (inside_data_roots(d).is_dir())
    assert data.own_parser(None)(text) is None  # nothing under the start folder is an .npz or image tree here


def test_paths_outside_the_data_folders_are_refused(tmp_path, monkeypatch):
    inside, outside = tmp_path / "data", tmp_path / "elsewhere"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    (inside / "escape").symlink_to(outside)  # a symlink inside that points out
    monkeypatch.setenv("LOGITSCOPE_DATA", str(inside))
    assert inside.resolve() in data_roots()
    assert inside_data_roots(inside / "sub") == (inside / "sub").resolve()
    for bad in (outside, inside / ".." / "elsewhere", inside / "escape", "/etc", "/"):
        with pytest.raises(LogitscopeError, match="outside the folders the app may read.*LOGITSCOPE_DATA"):
            inside_data_roots(bad)

    from pages import _data as data

    assert data.folder(str(inside / "sub")) == str(inside / "sub")
    assert data.folder(str(outside)) is None and data.folder(str(inside / "escape")) is None
    np.savez(outside / "x.npz", images=np.zeros((10, 8, 8), np.uint8), labels=np.arange(10) % 2)
    shutil.copy(outside / "x.npz", inside / "x.npz")
    assert data.own_parser(None)(f"npz:{inside / 'x.npz'}").startswith(f"npz:{(inside / 'x.npz').resolve()}@")
    assert data.own_parser(None)(f"npz:{outside / 'x.npz'}") is None
    assert data.own_parser(str(inside))("npz:../elsewhere/x.npz") is None
    with pytest.raises(LogitscopeError, match="outside the folders"):
        data.canonical(f"npz:{outside / 'x.npz'}", None)


# --- random links opened in the app -------------------------------------------------------------------

def open_page(page: str, query: dict):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
    return at.run()


PARAMS = ["ds", "m", "norm", "steps", "eps", "dd", "q", "split", "a", "b", "on", "color", "i", "teacher", "manip", "T",
          "hard", "frac", "epochs", "seed", "lq", "teps", "sep", "noise", "classes", "zzz"]


@given(page=st.sampled_from(["overview", "distributions", "differences", "lab", "why"]),
       query=st.dictionaries(st.sampled_from(PARAMS), link_text.filter(lambda t: "\x00" not in t), max_size=6))
@example(page="distributions", query={"eps": "abc", "steps": "1e309", "m": "nobody", "norm": "l9", "q": "-1"})
@example(page="differences", query={"ds": "npz:../../etc/passwd", "a": "..", "b": "x" * 300, "i": "-5", "eps": "nan"})
@example(page="lab", query={"T": "inf", "hard": "2", "frac": "-0", "epochs": "0x10", "seed": "1_0", "dd": "/"})
@settings(PROFILE, max_examples=16)
def test_random_links_open_every_page_without_an_exception(app_cache, page, query):
    at = open_page(page, query)
    assert not at.exception, (page, query, [e.message for e in at.exception])
    jobs.cancel_all()


def test_a_hostile_link_reads_no_file_outside_the_data_folders(app_cache, tmp_path, monkeypatch):
    import core.engine.data_own as own

    touched = []
    real = own.fingerprint
    monkeypatch.setattr(own, "fingerprint", lambda p: touched.append(Path(p)) or real(p))
    monkeypatch.setenv("LOGITSCOPE_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    for query in ({"ds": "npz:../../../../../../etc/passwd"}, {"ds": "npz:/etc/passwd"}, {"ds": "folder:/"},
                  {"dd": "/", "ds": "folder:etc"}, {"dd": "/etc", "ds": "npz:passwd"}):
        at = open_page("overview", query)
        assert not at.exception, [e.message for e in at.exception]
        assert at.sidebar.selectbox(key="w.ds").value == "digits"
        assert "Ignored link settings" in "\n".join(c.value for c in at.sidebar.caption)
    assert touched == [], f"a link made the app read {touched}"


# --- the command line ---------------------------------------------------------------------------------

@pytest.fixture
def stub_run(monkeypatch):
    """Replace the study itself: what reaches it is recorded, nothing is trained."""
    from core.study import report

    seen = []

    def reproduce(dataset, seeds, eps, attack, device, data_dir, **kwargs):
        seen.append({"dataset": dataset, "seeds": seeds, "eps": eps, "attack": attack, "device": device})
        return {"stub": True}

    monkeypatch.setattr(report, "reproduce", reproduce)
    monkeypatch.setattr(report, "format_report", lambda result: "stub report")
    return seen


def run_cli(argv: list[str]) -> tuple[int, str]:
    from core.__main__ import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def _flag_values(tmp: Path):
    """Each flag's values: a valid one as often as a random or hostile one."""
    return {
        "--dataset": st.one_of(st.just("digits"), st.sampled_from(["mnist", "npz:nope.npz", "folder:nowhere", "npz:",
                                                                    "npz:/etc/passwd"]), link_text),
        "--arch": st.one_of(st.sampled_from(["digits_cnn", "mlp"]), st.just("resnet9000"), link_text),
        "--seeds": st.one_of(st.integers(1, 3).map(str), numbers),
        "--steps": st.one_of(st.integers(1, 50).map(str), numbers),
        "--eps": st.one_of(st.lists(st.floats(0, 1).map(repr), min_size=1, max_size=4).map(",".join),
                           st.lists(numbers, max_size=4).map(",".join), link_text),
        "--norm": st.one_of(st.sampled_from(["linf", "l2"]), st.sampled_from(["L2", "l1"]), link_text),
        "--device": st.one_of(st.sampled_from(["cpu", "auto"]), st.sampled_from(["cuda:7", "mps", "tpu", ""]),
                              link_text),
        "--json": st.sampled_from([str(tmp / "r.json"), str(tmp), "/proc/nope/r.json", str(tmp / "a" / "b.json")]),
        "--data-dir": st.sampled_from([str(tmp), str(tmp / "missing"), "/etc/passwd"]),
    }


@given(data=st.data())
@settings(PROFILE, max_examples=150)
def test_random_command_lines_run_checked_values_or_exit_2_without_a_traceback(data, stub_run, tmp_path):
    values = _flag_values(tmp_path)
    flags = data.draw(st.lists(st.sampled_from(sorted(values)), unique=True, max_size=5))
    argv = ["reproduce"]
    for f in flags:
        argv += [f, data.draw(values[f].filter(lambda t: "\x00" not in t))]
    stub_run.clear()
    code, err = run_cli(argv)
    assert "Traceback" not in err
    if code == 0:  # it ran: every value that reached the study was checked
        (call,) = stub_run
        assert 1 <= len(call["seeds"]) <= 100 and 1 <= call["attack"].steps <= 10_000
        for e in call["eps"] or []:
            check_eps(e, call["attack"].norm)
    else:
        assert code == 2 and "error:" in err and not stub_run, (argv, code, err)


USAGE_ERRORS = [
    (["reproduce", "--seeds", "0"], "at least 1"),
    (["reproduce", "--seeds", "1000000"], "at most 100"),
    (["reproduce", "--steps", "-3"], "at least 1"),
    (["reproduce", "--steps", "10001"], "at most 10000"),
    (["reproduce", "--eps", "0.1,nan"], "non-negative number"),
    (["reproduce", "--eps", "2"], "exceeds the [0, 1] input range"),
    (["reproduce", "--norm", "l2", "--eps", "1e6"], "beyond any image"),
    (["reproduce", "--device", "tpu"], "Unknown device"),
    (["reproduce", "--json", "/proc/nope/report.json"], "cannot be written"),
    (["reproduce", "--dataset", "npz:/nonexistent/x.npz"], "is not an .npz file"),
    (["precompute", "--steps", "0"], "at least 1"),
    (["precompute", "--eps", "-0.1"], "non-negative"),
    (["precompute", "--device", "tpu"], "Unknown device"),
    (["bundle", "--out", "/proc/nope/b.zip"], "cannot be written"),
]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_a_message(argv, message, stub_run, isolated_cache):
    code, err = run_cli(argv)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not stub_run and not any(isolated_cache.rglob("*.pt")), "a usage error must stop before any work"


def test_a_folder_that_is_not_a_dataset_is_refused_without_walking_it(stub_run, tmp_path):
    (tmp_path / "deep" / "er" / "still").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "still" / "x.png").write_bytes(b"not read")
    for path in (tmp_path, "/"):  # "/" is refused at its first sub-folder, not hashed whole
        code, err = run_cli(["reproduce", "--dataset", f"folder:{path}"])
        assert code == 2 and ("holds no PNG or JPEG" in err or "cannot be read" in err), err
        assert "Traceback" not in err and not stub_run


@pytest.mark.parametrize("argv", [USAGE_ERRORS[1][0], USAGE_ERRORS[12][0], USAGE_ERRORS[13][0]],
                         ids=["seeds", "device", "out"])
def test_usage_errors_in_a_real_process_print_no_traceback(argv, isolated_cache):
    out = subprocess.run([sys.executable, "-m", "core", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LOGITSCOPE_CACHE": str(isolated_cache)})
    assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr, out.stderr


# --- specs: a value is accepted or refused with LogitscopeError, nothing else ---------------------------

finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))


@given(eps=finite_or_not, norm=st.sampled_from(["linf", "l2", "l1", ""]))
@settings(deadline=None)
def test_epsilon_is_checked_for_its_norm(eps, norm):
    try:
        check_eps(eps, norm)
    except LogitscopeError:
        return
    assert 0 <= eps <= (1 if norm == "linf" else 100) and norm in ("linf", "l2")


@given(eps=finite_or_not, steps=st.integers(-5, 20_000), step_size=st.one_of(st.none(), finite_or_not),
       restarts=st.integers(-2, 5), seed=st.integers(-5, 5))
@settings(deadline=None)
def test_attack_specs_accept_or_refuse_with_a_message(eps, steps, step_size, restarts, seed):
    try:
        a = AttackSpec(eps=eps, steps=steps, step_size=step_size, restarts=restarts, seed=seed)
    except LogitscopeError:
        return
    assert 0 <= a.eps <= 1 and 0 <= a.steps <= 10_000 and a.restarts >= 1
    assert a.step_size is None or (math.isfinite(a.step_size) and a.step_size > 0)


@given(temperature=finite_or_not, hard=finite_or_not, fraction=finite_or_not, epochs=st.integers(-3, 300),
       seed=st.integers(-3, 2000), lr=finite_or_not)
@settings(deadline=None, max_examples=60)
def test_training_and_distillation_settings_accept_or_refuse_with_a_message(temperature, hard, fraction, epochs,
                                                                            seed, lr):
    from core.app import lab

    try:
        d = DistillSpec(teacher="t", temperature=temperature, hard_weight=hard, fraction=fraction)
        assert 0.05 <= d.temperature <= 100 and 0 <= d.hard_weight <= 1 and 0 <= d.fraction <= 1
    except LogitscopeError:
        pass
    try:
        t = TrainSpec(epochs=epochs, seed=seed, lr=lr)
        assert 1 <= t.epochs and t.seed >= 0 and t.lr > 0 and math.isfinite(t.lr)
    except LogitscopeError:
        pass
    try:
        r = lab.LabSpec("digits", "pgd-at", "shuffle_nonmax", temperature, hard, fraction, epochs, seed).recipe()
        assert 1 <= r.spec.train.epochs <= 200 and r.spec.train.seed >= 0
    except LogitscopeError:
        pass


# --- files that would run code if unpickled ----------------------------------------------------------

class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_npz_with_a_pickled_payload_is_refused_without_running_it(tmp_path):
    from core.engine.data import load_dataset

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, np.int64),
             class_names=np.array([_Evil(str(marker))], dtype=object))
    with pytest.raises(LogitscopeError, match="never loads"):
        load_dataset(f"npz:{path}")
    assert not marker.exists()
