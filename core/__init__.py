"""Logitscope core: data -> models -> attacks -> train -> logits cache -> analysis -> charts.

Nothing in this package imports streamlit; the pages and the command line sit on top of it.
"""

from core.errors import Cancelled, LogitscopeError

__all__ = ["LogitscopeError", "Cancelled"]
