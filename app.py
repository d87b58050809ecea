"""Logitscope: see what adversarial training does to a classifier's logits.

Run with `streamlit run app.py`. This file only starts the navigation (pages/_navigation.py); each page
lives in pages/ and shares the sidebar (pages/_context.py) and the cached core calls (pages/_cached.py).
The hosted demo's entry point is demo/streamlit_app.py.
"""

from pages import _navigation as navigation

navigation.run()
