"""Widget state that survives page changes and lives in the URL, so a link opens the same view.

Every setting is stored once per session under a short name (which is also its query parameter);
`bind` hands a widget its key, sets its value from the store, and saves changes back through the
widget's callback. On the first run of a session the store is filled from the URL, each value
checked by a parser: a bad value falls back to the default and is listed in the sidebar.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import streamlit as st

Parser = Callable[[str], Any]  # text -> value, or None when the text is not a valid value

_STORE = "_logitscope_store"
_IGNORED = "_logitscope_ignored"


def store() -> dict:
    """This session's settings by name (shared by all pages)."""
    return st.session_state.setdefault(_STORE, {})


def ignored() -> dict[str, str]:
    """Query parameters of the opening link that were not valid, by name."""
    return st.session_state.setdefault(_IGNORED, {})


def encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(encode(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def choice(options: Iterable[Any]) -> Parser:
    """One of `options`, matched by its text."""
    by_text = {encode(o): o for o in options}
    return lambda text: by_text.get(text)


def several(options: Iterable[Any]) -> Parser:
    """A comma-separated list of `options`, unknown entries dropped; None if none is known.

    An empty text is an empty list: the user cleared the widget, which is a choice to keep.
    """
    by_text = {encode(o): o for o in options}

    def parse(text: str):
        if text == "":
            return []
        values = list(dict.fromkeys(by_text[t] for t in text.split(",") if t in by_text))
        return values or None

    return parse


def number(lo: float, hi: float, integer: bool = False) -> Parser:
    """A finite number in [lo, hi] (a whole number if `integer`)."""
    def parse(text: str):
        try:
            v = float(text)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(v) or not lo <= v <= hi or (integer and v != int(v)):
            return None
        return int(v) if integer else v

    return parse


def on_grid(values: Sequence[float]) -> Parser:
    """One of the grid's numbers (compared with a tolerance)."""
    def parse(text: str):
        try:
            v = float(text)
        except (TypeError, ValueError):
            return None
        for g in values:
            if math.isclose(v, g, rel_tol=1e-6, abs_tol=1e-9):
                return g
        return None

    return parse


def _save(name: str, key: str) -> None:
    store()[name] = st.session_state[key]


def value(name: str, default: Any, parse: Parser) -> Any:
    """The stored setting, read from the URL on first use and re-checked against `parse` every run."""
    s = store()
    if name not in s:
        raw = st.query_params.get_all(name)
        v = parse(raw[-1]) if raw else None
        if raw and v is None:
            ignored()[name] = raw[-1]
        s[name] = default if v is None else v
    else:
        v = parse(encode(s[name]))  # options may have changed (another dataset, a deleted run)
        s[name] = default if v is None else v
    return s[name]


def bind(name: str, default: Any, parse: Parser, key: str | None = None, url: bool = True) -> dict:
    """Keyword arguments that tie a widget to the setting `name` (pass them with `**`).

    Do not also pass `value=`/`index=`/`default=` to the widget: its value comes from the store.
    """
    v = value(name, default, parse)
    key = key or f"w.{name}"
    st.session_state[key] = list(v) if isinstance(v, tuple) else v
    if url:
        st.query_params[name] = encode(v)
    return {"key": key, "on_change": _save, "args": (name, key)}


def set_value(name: str, v: Any) -> None:
    """Change a setting from code (a selection, the play button); widgets pick it up next run."""
    store()[name] = v


def keep_only(names: Iterable[str]) -> None:
    """Drop query parameters that belong to other pages."""
    keep = set(names)
    for k in list(st.query_params.keys()):
        if k not in keep:
            del st.query_params[k]
