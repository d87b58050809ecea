"""Logitscope core, in three layers that import one way (never Streamlit):

    core.app     page-facing logic (jobs, views, lab, bundle, demo, ...)
      |
    core.study   the experiment (hyperparameters, recipes, report, precompute)
      |
    core.engine  data, models, zoo, attacks, train, distill, logits cache, analysis
      |
    core.config, core.storage, core.errors   specs and keys; atomic files, locks, checksums

The command line (`python -m core`: core/__main__.py and core/cli/) sits beside the pages, on top of all three.
"""

from core.errors import Cancelled, LogitscopeError

__all__ = ["LogitscopeError", "Cancelled"]
