"""Logitscope: see what adversarial training does to a classifier's logits.

Run with `streamlit run app.py`. This file only configures the page and the navigation; each page
lives in pages/ and shares the sidebar (pages/_context.py) and the cached core calls (pages/_cached.py).
"""

import streamlit as st

st.set_page_config(page_title="Logitscope", page_icon=":material/insights:", layout="wide")
st.navigation([
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
    st.Page("pages/distributions.py", title="Logit distributions", icon=":material/bar_chart:",
            url_path="distributions"),
    st.Page("pages/differences.py", title="Confidence differences", icon=":material/compare:",
            url_path="differences"),
    st.Page("pages/lab.py", title="Distillation lab", icon=":material/science:", url_path="lab"),
    st.Page("pages/embedding.py", title="Embedding", icon=":material/scatter_plot:", url_path="embedding"),
    st.Page("pages/why.py", title="Why AT shrinks logits", icon=":material/lightbulb:", url_path="why"),
]).run()
