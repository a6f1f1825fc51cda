"""Entry file of the explorer: ``streamlit run explorer/app.py`` (``commonforge explore`` does it for you).

Sets the page up, switches every dependency's telemetry off for this process (the CLI has
already done it for the environment it starts Streamlit in), and hands over to the page
``st.navigation`` picks. Pages live in ``app_pages/``; what they show is computed in the
modules beside this file.
"""

from __future__ import annotations

import streamlit as st

from commonforge.settings import apply_privacy

apply_privacy()

st.set_page_config(page_title="commonforge explorer", page_icon="⚒️", layout="wide")

pages = [
    st.Page("app_pages/models.py", title="Models", icon=":material/view_list:", url_path="models", default=True),
    st.Page("app_pages/model.py", title="Model", icon=":material/neurology:", url_path="model"),
    st.Page("app_pages/dataset.py", title="Dataset", icon=":material/dataset:", url_path="dataset"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("app_pages/contributions.py", title="Contributions", icon=":material/merge_type:",
            url_path="contributions"),
    st.Page("app_pages/log.py", title="Log", icon=":material/receipt_long:", url_path="log"),
    st.Page("app_pages/peers.py", title="Peers", icon=":material/hub:", url_path="peers"),
]
page = st.navigation(pages)
with st.sidebar:
    st.caption("commonforge explorer · read-only: nothing here changes the registry, the store or build/.")
page.run()
