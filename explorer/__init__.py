"""The Streamlit explorer: read-only pages over the registry, the store and the build outputs.

    commonforge explore [--port 8501] [--root CHECKOUT]

``app.py`` is the entry file (``st.navigation`` over ``app_pages/``). The pages only lay out
what the plain modules compute, each testable without Streamlit:

    checkout.py  the checkout: root, store, MLflow URI, the explorer's cache folder
    data.py      reading: releases, their records and summaries, datasets, the store
    outputs.py   reading build/: training curves, metrics, quantize summary, stats; MLflow runs
    cards.py     the rendered model card, as blocks (local images shown, remote ones never fetched)
    views.py     shaping: filters, tables, parameter counts (model_cards.shape), diagrams, commands, diffs
    charts.py    Altair chart specs
    search.py    the full-text document index over a dataset's splits (SQLite FTS5)
    generate.py  the "try it" box: serving's engine over a release the loader verified
    cache.py     the Streamlit cache wrappers (the only module besides the pages that imports it)

Nothing here writes into the registry, the store or ``build/``; the search index lives in a
cache folder keyed by the split's sha256.
"""
