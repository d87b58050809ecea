"""Logitscope's hosted demo: the entry point to choose on Streamlit Community Cloud.

Community Cloud installs demo/requirements.txt (the requirements file beside the entry point comes
first): CPU-only torch, no RobustBench, so the demo fits a 1 GB host. Set the secret LOGITSCOPE_DEMO
to the bundle to serve (a path from the repository root, or an https:// URL); see the README's
"Hosted demo". Locally: `LOGITSCOPE_DEMO=<bundle> streamlit run demo/streamlit_app.py`.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # Streamlit puts this file's folder on the path, not the project's
    sys.path.insert(0, str(ROOT))

from pages import _navigation as navigation  # noqa: E402  (needs the project on the path)

navigation.run(demo_only=True)
