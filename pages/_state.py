"""Widget state that survives page changes and lives in the URL, so a link opens the same view.

Every setting is stored once per session under a short name (which is also its query parameter);
`bind` hands a widget its key, sets its value from the store, and saves changes back through the
widget's callback. On the first run of a session the store is filled from the URL, each value
checked by a parser: a bad value falls back to the default and is listed in the sidebar, and so are
the unknown items of a list and the opening link's parameters that no setting of its page reads.
The sidebar is rendered before a page binds its own widgets, so the list lives in a sidebar slot
(`show_ignored`) that is redrawn whenever a setting is ignored, later in the same run included.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, Sequence

import streamlit as st

Parser = Callable[[str], Any]  # text -> value, or None when the text is not a valid value

_STORE = "_logitscope_store"
_IGNORED = "_logitscope_ignored"
_NOTE = "_logitscope_ignored_note"  # this run's sidebar slot that lists them
_OPENED = "_logitscope_link_opened"  # the opening link's unknown parameters were listed
SHOWN_ITEMS, SHOWN_CHARS = 8, 40  # the list names a handful, each cut short: a link may carry anything


def store() -> dict:
    """This session's settings by name (shared by all pages)."""
    return st.session_state.setdefault(_STORE, {})


def ignored() -> dict[str, str]:
    """Query parameters of the opening link that were not valid, by name."""
    return st.session_state.setdefault(_IGNORED, {})


def ignore(name: str, text: str) -> None:
    """Record a link setting that was not used, and redraw the sidebar's list of them."""
    ignored()[name] = text
    _draw_note()


def show_ignored(slot) -> None:
    """List the ignored link settings in `slot` (an `st.empty()` in the sidebar), now and as a page adds more.

    Pass None at the start of a run: a slot of an earlier run must not be drawn into.
    """
    st.session_state[_NOTE] = slot
    _draw_note()


def _draw_note() -> None:
    slot = st.session_state.get(_NOTE)
    if slot is not None and ignored():
        slot.caption(ignored_line(ignored()))


def _shown(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters, with markdown's punctuation escaped (shown as typed)."""
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text))
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def ignored_line(items: dict[str, str]) -> str:
    """'Ignored link settings: k=v, ...': a handful of them, each value cut short, and how many more."""
    shown = [f"{_shown(k, SHOWN_CHARS // 2)}={_shown(v, SHOWN_CHARS)}" for k, v in list(items.items())[:SHOWN_ITEMS]]
    more = len(items) - len(shown)
    return "Ignored link settings: " + ", ".join(shown) + (f" and {more} more" if more else "")


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
    """The grid's number nearest to the text, if closer than half the grid's smallest spacing.

    So a value written shorter (`encode` keeps 6 significant digits: 8/255 is 0.0313725) or by hand
    reads back as the grid's own float, and a value between two grid points is refused, not guessed.
    """
    grid = sorted(set(values))
    gaps = [b - a for a, b in zip(grid, grid[1:])]
    # one point: as close as encode's 6 significant digits
    half = min(gaps) / 2 if gaps else abs(max(grid, default=0.0, key=abs)) * 1e-5 + 1e-12

    def parse(text: str):
        try:
            v = float(text)
        except (TypeError, ValueError):
            return None
        if not grid or not math.isfinite(v):
            return None
        g = min(grid, key=lambda g: abs(v - g))
        return g if abs(v - g) < half else None

    return parse


def _unused(text: str, v: Any) -> str | None:
    """The part of a link's text that the parsed value `v` leaves out: all of it, a list's unknown items, or None."""
    if v is None:
        return text
    if isinstance(v, list):
        known = {encode(x) for x in v}
        return ",".join(t for t in text.split(",") if t and t not in known) or None
    return None


def _save(name: str, key: str) -> None:
    store()[name] = st.session_state[key]


def value(name: str, default: Any, parse: Parser) -> Any:
    """The stored setting, read from the URL on first use and re-checked against `parse` every run."""
    s = store()
    if name not in s:
        raw = st.query_params.get_all(name)
        v = parse(raw[-1]) if raw else None
        if raw and (dropped := _unused(raw[-1], v)) is not None:
            ignore(name, dropped)
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
    """Drop query parameters that belong to other pages; those of the session's opening link are listed as ignored.

    Later runs drop only what the app itself wrote for the page the user left.
    """
    keep, opening = set(names), not st.session_state.get(_OPENED)
    st.session_state[_OPENED] = True
    for k in list(st.query_params.keys()):
        if k not in keep:
            if opening:
                ignore(k, st.query_params[k])
            del st.query_params[k]
