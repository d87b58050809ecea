"""Logitscope: see what adversarial training does to a classifier's logits.

Run with `streamlit run app.py`. This file only configures the page and the navigation.
"""

import streamlit as st

st.set_page_config(page_title="Logitscope", page_icon=":material/insights:", layout="wide")
st.title("Logitscope")
st.write("The app's pages are being built; meanwhile `python -m core reproduce --dataset digits` "
         "reproduces the paper's three findings from the command line.")
