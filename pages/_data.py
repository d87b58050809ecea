"""The sidebar's data settings (a data folder, your own data) and the hosted-demo switch.

- `demo()`: when LOGITSCOPE_DEMO (or the Streamlit secret of that name) names a bundle, serve it
  (core.app.demo) and return it; None otherwise. Called first on every page run, before anything
  reads the cache. A refused bundle stops the app with a visitor's message (the bundle's file name,
  no server path or command); the operator's message goes to the server log.
- `visitor()`: in the demo, this session's visitor id (its lab runs are its own); None in a local app,
  where every run is everyone's.
- `source_settings(demo)`: the "Data folder" and "Your own data" inputs. The folder is the CLI's
  --data-dir (torchvision's files, relative own-data paths), kept in the URL as `dd` and checked to
  be an existing folder; own data ("npz:<path>", "folder:<path>") is checked by opening its path and
  becomes the dataset. Both must lie inside the data folders (`core.config.data_roots`: LOGITSCOPE_DATA,
  default the folder the app started in, plus the cache), so a link cannot make the app read
  elsewhere. Both are disabled in the demo.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
import zipfile
from functools import lru_cache
from pathlib import Path

import streamlit as st

from core.app import demo as core_demo
from core.config import data_roots, inside_data_roots
from core.engine.data import dataset_scheme
from core.engine.data_own import IMAGE_SUFFIXES, own_data_name
from core.errors import LogitscopeError
from pages import _state as state

log = logging.getLogger(__name__)
_logged: set[str] = set()  # refusals of the demo's bundle already in the server log

_OWN = "_logitscope_own_data"      # canonical own-data names added in this session
_VISITOR = "_logitscope_visitor"   # this session's id as a demo visitor: the owner of its lab runs
_FOLDER_ERROR = "_logitscope_dd_error"
_OWN_ERROR = "_logitscope_own_error"


def visitor() -> str | None:
    """This session's id as a demo visitor (a random id, kept for the session), or None outside the demo."""
    if not core_demo.active():
        return None
    return st.session_state.setdefault(_VISITOR, uuid.uuid4().hex[:16])


def demo_setting() -> str | None:
    """The bundle to serve: LOGITSCOPE_DEMO, else the root-level secret of that name (copied into the
    environment, where core.app.demo reads it); None when neither is set."""
    if not os.environ.get(core_demo.ENV):
        try:  # a root-level secret (Streamlit Community Cloud's settings, or .streamlit/secrets.toml)
            secret = st.secrets.get(core_demo.ENV) if st.secrets.load_if_toml_exists() else None
        except Exception:  # an unreadable secrets file: no demo, as without one
            secret = None
        if not secret:
            return None
        os.environ[core_demo.ENV] = str(secret)
    return os.environ[core_demo.ENV]


def demo() -> core_demo.Demo | None:
    """The bundle this app serves (see core.app.demo), or None outside demo mode."""
    if not demo_setting():
        return None
    try:
        return core_demo.start()
    except LogitscopeError as exc:  # core's message is for the operator: server paths, the command to run
        if str(exc) not in _logged:
            _logged.add(str(exc))
            log.error("The hosted demo cannot start: %s", exc)
        st.error(f"The hosted demo cannot start: {_refusal(os.environ[core_demo.ENV])} The site's operator finds "
                 "the details in the server log.", icon=":material/error:")
        st.stop()


def _refusal(where: str) -> str:
    """Why the bundle at `where` (a path or URL) is refused, in a visitor's words: its file name, no server path."""
    if where.startswith(("http://", "https://")):
        name = where.partition("?")[0].rstrip("/").rpartition("/")[2] or "(no file name)"
        return f"its bundle `{name}` could not be downloaded, or is not a usable Logitscope bundle."
    path = Path(where).expanduser()
    if not path.is_file():
        return f"its bundle `{path.name}` is not on the server (no such file)."
    return f"its bundle `{path.name}` is not a usable Logitscope bundle (damaged, or made by another version)."


def folder(text: str) -> str | None:
    """An existing folder ('' for none), or None: the URL parser of the data-folder setting."""
    text = text.strip()
    if not text:
        return ""
    try:  # a link or a form may only point inside the data folders (core.config.data_roots)
        return text if inside_data_roots(text).is_dir() else None
    except (LogitscopeError, OSError):  # outside, or a path the OS refuses (e.g. a name too long)
        return None


@lru_cache(maxsize=64)
def _canonical(text: str, data_dir: str, stamp: tuple) -> str:
    return own_data_name(text, data_dir or None)


def _looks_like(kind: str, target: Path) -> bool:
    """An .npz archive, or a folder with images one or two levels down (<class>/ or train/<class>/)."""
    if kind == "npz":
        return target.is_file() and zipfile.is_zipfile(target)
    if not target.is_dir():
        return False
    for pattern in ("*/*", "*/*/*"):
        if any(f.suffix.lower() in IMAGE_SUFFIXES for f in itertools.islice(target.glob(pattern), 10_000)):
            return True
    return False


def canonical(text: str, data_dir: str | None) -> str:
    """The canonical own-data name (absolute path and content hash); LogitscopeError if it cannot be opened."""
    _, _, rest = text.partition(":")
    raw = Path(rest.rpartition("@")[0] if "@" in rest else rest).expanduser()
    target = raw if raw.is_absolute() or not data_dir else Path(data_dir).expanduser() / raw
    inside_data_roots(target)  # a link or a form may only point inside the data folders
    kind = text.partition(":")[0]
    if not str(raw).strip(".") or not _looks_like(kind, target):  # cheap checks; opening the data reads it all
        what = "an .npz file" if kind == "npz" else "a folder with one sub-folder of PNG/JPEG images per class"
        raise LogitscopeError(f"{text}: {target} is not {what}.")
    try:
        s = target.stat()
        stamp = (str(target), s.st_mtime_ns, s.st_size)
    except OSError:
        stamp = (str(target),)
    return _canonical(text.strip(), data_dir or "", stamp)


def own_parser(data_dir: str | None):
    """Accept own-data names that open (their canonical form), for the dataset box and links."""
    def parse(text: str) -> str | None:
        if dataset_scheme(text) is None:
            return None
        try:
            return canonical(text, data_dir)
        except LogitscopeError:
            return None
    return parse


def own_names() -> list[str]:
    return st.session_state.setdefault(_OWN, [])


def _set_folder(name: str, key: str) -> None:
    text = st.session_state[key]
    if folder(text) is None:
        st.session_state[_FOLDER_ERROR] = (f"{text} is not an existing folder inside "
                                           f"{', '.join(map(str, data_roots()))}: give the folder that holds your "
                                           "datasets (start the app with LOGITSCOPE_DATA to allow other folders).")
    else:
        st.session_state.pop(_FOLDER_ERROR, None)
        state.store()[name] = folder(text)


def _add_own(data_dir: str | None) -> None:
    text = st.session_state.get("w.own", "").strip()
    if not text:
        return
    if dataset_scheme(text) is None:
        st.session_state[_OWN_ERROR] = f"{text!r}: start with npz: or folder:, e.g. npz:mine.npz."
        return
    try:
        name = canonical(text, data_dir)
    except LogitscopeError as exc:
        st.session_state[_OWN_ERROR] = str(exc)
        return
    st.session_state.pop(_OWN_ERROR, None)
    if name not in own_names():
        own_names().append(name)
    state.set_value("ds", name)
    st.session_state["w.own"] = ""


def source_settings(demo: core_demo.Demo | None) -> str | None:
    """Render the data-folder and own-data inputs; return the data folder (None: none)."""
    off = demo is not None
    with st.expander("Data folder and your own data", icon=":material/folder_open:"):
        if off:
            st.caption("Disabled in the hosted demo: it shows only its bundle's data.")
        bound = state.bind("dd", "", folder)
        bound["on_change"] = _set_folder
        st.text_input("Data folder", disabled=off, placeholder="/path/to/datasets", **bound,
                      help="A folder with already-downloaded datasets in torchvision's layout (MNIST/raw/, "
                           "FashionMNIST/raw/, cifar-10-batches-py/), like the command line's --data-dir. Relative "
                           "own-data paths start here too.")
        if st.session_state.get(_FOLDER_ERROR):
            st.error(st.session_state[_FOLDER_ERROR], icon=":material/error:")
        data_dir = None if off else (state.store().get("dd") or None)
        st.text_input("Your own data", key="w.own", disabled=off, placeholder="npz:mine.npz or folder:images/",
                      on_change=_add_own, args=(data_dir,),
                      help="An .npz file (images uint8, labels) or a folder with one sub-folder of images per "
                           "class; press Enter to add it to the datasets. `python -m core datasets` explains the "
                           "formats.")
        if st.session_state.get(_OWN_ERROR):
            st.error(st.session_state[_OWN_ERROR], icon=":material/error:")
    return data_dir
