"""The app's page configuration and navigation, shared by its two entry points.

`app.py` (the local app) and `demo/streamlit_app.py` (the hosted demo, as Streamlit Community Cloud
runs it) both call `run()`. Pages are named by absolute paths, so navigation works whichever folder
the entry point lives in.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.config import DEMO_ENV
from pages import _data as data

ROOT = Path(__file__).resolve().parent.parent
HOME = "home"  # the default page's reserved URL path: Streamlit serves it at / and answers /home with "Page not found"
PAGES = (  # (file, title, icon, URL path); the first is the default page, served at / (and at /overview, below)
    ("overview.py", "Overview", ":material/home:", "overview"),
    ("distributions.py", "Logit distributions", ":material/bar_chart:", "distributions"),
    ("differences.py", "Confidence differences", ":material/compare:", "differences"),
    ("lab.py", "Distillation lab", ":material/science:", "lab"),
    ("embedding.py", "Embedding", ":material/scatter_plot:", "embedding"),
    ("across.py", "Across models", ":material/query_stats:", "across"),
    ("why.py", "Why AT shrinks logits", ":material/lightbulb:", "why"),
)


def run(demo_only: bool = False) -> None:
    """Configure the page and run the navigation (the page the URL names).

    `demo_only` (the hosted demo's entry point): without a bundle to serve, say how to set one and stop,
    rather than start training models on a small host as the local app would.
    """
    st.set_page_config(page_title="Logitscope", page_icon=":material/insights:", layout="wide")
    if demo_only and not data.demo_setting():
        st.error(f"This is Logitscope's hosted-demo entry point, and it has no bundle to serve: set the secret "
                 f"{DEMO_ENV} to a bundle made by `python -m core bundle` (a path from the repository root, or an "
                 "https:// URL). To run the full app instead, start `streamlit run app.py`.", icon=":material/error:")
        st.stop()
    pages = [st.Page(ROOT / "pages" / file, title=title, icon=icon, url_path=HOME if i == 0 else path, default=i == 0)
             for i, (file, title, icon, path) in enumerate(PAGES)]
    home = pages[0]

    def overview_by_name() -> None:
        """/overview, the overview's name in links: a hidden page that opens the default page, link settings kept
        (a default page is served only at /, and its own URL path would say "Page not found")."""
        st.switch_page(home, query_params=st.query_params.to_dict())

    st.navigation(pages + [st.Page(overview_by_name, title=PAGES[0][1], url_path=PAGES[0][3], visibility="hidden")]
                  ).run()
