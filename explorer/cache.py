"""Streamlit caches around the plain reading functions (bounded; keyed by what the data depends on).

* Registry reads are keyed by :meth:`Forge.fingerprint` (the paths plus every entry file's
  mtime and size), so a new record shows up on the next rerun, and expire after a minute so
  build outputs that changed under an unchanged registry are read again.
* Search indexes and loaded models are resources (``st.cache_resource``): one per split
  digest, and at most two models at a time.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer import cards, data, generate, search
from registry.schema import Release


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def listing(_forge: data.Forge, fingerprint: str) -> data.Listing:
    return data.release_summaries(_forge)


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def release_detail(_forge: data.Forge, fingerprint: str, ref: str) -> data.ReleaseDetail:
    return data.release_detail(_forge, ref)


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def dataset_detail(_forge: data.Forge, fingerprint: str, ref: str) -> data.DatasetDetail:
    return data.dataset_detail(_forge, ref)


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def model_card(_forge: data.Forge, fingerprint: str, ref: str) -> cards.Card:
    reg = _forge.registry()
    return cards.model_card(_forge, reg, data.find_release(reg, ref))


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def refs(_forge: data.Forge, fingerprint: str) -> tuple[list[str], list[str]]:
    # Releases of both layers (checkout, then user registry); datasets of the checkout.
    return data.layered_release_refs(_forge), data.dataset_refs(_forge.registry())


@st.cache_resource(max_entries=8, show_spinner=False)
def document_index(split_file: str, cache_dir: str, size: int, mtime_ns: int) -> search.DocumentIndex:
    # size and mtime are part of the key: a re-prepared split gets (and builds) its own index.
    return search.DocumentIndex.open(Path(split_file), Path(cache_dir))


def open_index(split_file: Path, cache_dir: Path) -> search.DocumentIndex:
    st_ = split_file.stat()
    return document_index(str(split_file), str(cache_dir), st_.st_size, st_.st_mtime_ns)


@st.cache_data(ttl=600, max_entries=256, show_spinner=False)
def search_page(_index: search.DocumentIndex, sha256: str, query: str, page: int, per_page: int,
                source: str | None) -> search.SearchPage:
    return _index.search(query, page=page, per_page=per_page, source=source)


@st.cache_data(ttl=600, max_entries=16, show_spinner=False)
def document(_index: search.DocumentIndex, sha256: str, doc_id: str) -> search.Document | None:
    return _index.document(doc_id)


@st.cache_resource(max_entries=2, show_spinner=False)
def loaded_model(_forge: data.Forge, _release: Release, root: str, store: str, digest: str, variant: str,
                 allow_revoked: bool = False):
    return generate.load(_forge, _release, variant, allow_revoked=allow_revoked)
