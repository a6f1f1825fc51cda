"""Dataset: one dataset (``?ref=dataset/NAME@VERSION``): datasheet, statistics, a document
browser with full-text search over the real splits, licenses, and the models trained on it."""

import streamlit as st

from commonforge.errors import ForgeError
from explorer import cache, charts, search, ui, views

PER_PAGE = 10
DOC_PAGE_CHARS = 6000

forge = ui.current_forge()
fingerprint = forge.fingerprint()
_, dataset_refs = cache.refs(forge, fingerprint)
st.title("Dataset")
ref = ui.ref_or_choice("dataset", dataset_refs, placeholder="dataset/NAME@VERSION",
                       empty=f"**The registry has no datasets yet** (`{forge.entries_dir}/datasets` is empty).")

try:
    detail = cache.dataset_detail(forge, fingerprint, ref)
except ForgeError as err:
    ui.show_problem(err, what=f"No dataset to show for `{ref}`.")
    ui.choose_instead("dataset", dataset_refs)
    st.stop()

ds, build = detail.dataset, detail.build
st.header(f"{ds.ref}", anchor=False)
with st.container(horizontal=True):
    st.badge(ds.license, color="violet", icon=":material/license:")
    st.badge(f"{len(ds.sources)} sources", color="blue")
    st.badge("languages: " + ", ".join(ds.language), color="gray")
    if detail.trained_on:
        st.badge(f"trained {len(detail.trained_on)} release(s)", color="green")
st.markdown(f"**{ds.title}.** {ds.description}")

TABS = ["Datasheet", "Statistics", "Documents", "Licenses", "Models"]
tabs = dict(zip(TABS, st.tabs(TABS, key="tab", bind="query-params")))


def show_datasheet() -> None:
    for title, text in views.datasheet_sections(ds):
        st.subheader(title, anchor=False)
        st.markdown(text)
    st.subheader("Processing", anchor=False)
    st.markdown(views.processing_summary(ds))


def show_statistics() -> None:
    if not build.stats:
        st.info(build.note, icon=":material/hourglass_empty:")
        return
    st.caption(build.note)
    st.subheader("Splits", anchor=False)
    st.dataframe(views.split_rows(build.stats), hide_index=True)
    rows = views.source_stats_rows(build.stats)
    left, right = st.columns(2)
    with left:
        st.markdown("**Words per source and split**")
        chart = charts.source_split_chart(rows, "words")
        if chart is not None:
            st.altair_chart(chart, width="stretch")
    with right:
        st.markdown("**Documents per source and split**")
        chart = charts.source_split_chart(rows, "documents")
        if chart is not None:
            st.altair_chart(chart, width="stretch")
    st.subheader("Per source", anchor=False)
    st.dataframe(rows, hide_index=True)
    st.subheader("Cleaning and deduplication", anchor=False)
    st.dataframe(views.dropped_rows(build.stats), hide_index=True)
    dupes = build.stats.get("duplicates") or []
    if dupes:
        with st.expander(f"{len(dupes)} dropped duplicates"):
            st.dataframe(dupes, hide_index=True)


def show_documents() -> None:
    if not build.split_files:
        st.info(build.note, icon=":material/hourglass_empty:")
        return
    splits = list(build.split_files)
    with st.container(horizontal=True, vertical_alignment="bottom"):
        split = st.segmented_control("Split", splits, default=splits[0], key="split", bind="query-params",
                                     required=True)
        query = st.text_input("Search the documents", value=ui.query_param("q") or "", key="q", type="search",
                              placeholder='words, "a phrase", prefix*', width=420)
    ui.keep_in_url("q", query)
    split = split or splits[0]
    split_file = forge.root / build.split_files[split]
    with st.spinner(f"Indexing the {split} split (once per version of the split)…"):
        index = cache.open_index(split_file, forge.cache_dir)
    source_choice = st.pills("Source", ["all", *index.sources], default="all", key=f"source-{split}")
    source = None if source_choice in (None, "all") else source_choice
    first = cache.search_page(index, index.sha256, query or "", 1, PER_PAGE, source)
    if first.total == 0:
        st.info(f"No document in the {split} split matches **{query}**." if query else "This split is empty.")
        return
    page = 1
    if first.pages > 1:
        page = st.pagination(first.pages, key=f"page-{index.sha256[:12]}-{query}-{source}")
    results = first if page == 1 else cache.search_page(index, index.sha256, query or "", page, PER_PAGE, source)
    st.caption(f"{results.total:,} of {index.documents:,} documents"
               + (f" match `{results.fts_query}`" if results.fts_query else " (in id order)")
               + f" · page {results.page} of {results.pages} · index sha256 {index.sha256[:12]}…")
    opened = st.session_state.get("open-doc")
    for hit in results.hits:
        with st.container(border=True):
            with st.container(horizontal=True, vertical_alignment="center"):
                st.markdown(f"**{hit.id}**")
                st.caption(f"{hit.source} · {hit.chars:,} characters")
                if st.button("Open", key=f"open-{hit.id}", icon=":material/article:"):
                    opened = st.session_state["open-doc"] = (index.sha256, hit.id)
            st.markdown(search.markdown_snippet(hit.snippet))
    if opened and opened[0] == index.sha256:
        show_document(index, opened[1])


def show_document(index, doc_id: str) -> None:
    doc = cache.document(index, index.sha256, doc_id)
    if doc is None:
        st.warning(f"{doc_id} is not in this split.")
        return
    st.subheader(doc.id, anchor=False)
    pages = search.text_pages(doc.text, DOC_PAGE_CHARS)
    st.caption(f"{doc.source} · {len(doc.text):,} characters · {len(pages)} page(s)")
    n = st.pagination(len(pages), key=f"doc-page-{doc.id}") if len(pages) > 1 else 1
    with st.container(border=True, height=420):
        st.text(pages[n - 1])


def show_licenses() -> None:
    st.markdown(f"**License of the dataset:** `{ds.license}` (an SPDX expression over its sources)")
    st.dataframe(views.source_rows(ds), hide_index=True)
    for s in ds.sources:
        if s.attribution:
            st.markdown(f"**Attribution for {s.title}** ({s.license}): {s.attribution}")
        if s.notes:
            st.caption(f"{s.id}: {s.notes}")


def show_models() -> None:
    if not detail.trained_on:
        st.info(f"No release in this registry was trained on {ds.ref} yet.")
    else:
        st.markdown(f"**Releases trained on {ds.ref}**")
        for r in detail.trained_on:
            ui.release_link(r)
    recorded = {s: d.get("sha256") for s, d in (build.stats.get("splits") or {}).items()}
    if detail.split_users:
        rows = []
        for rel, splits in detail.split_users.items():
            for split, digest in splits.items():
                rows.append({"release": rel, "split": split, "sha256 it trained on": digest,
                             "same as the split here": ("yes" if recorded.get(split) == digest else "no")
                             if recorded else "not prepared here"})
        st.dataframe(rows, hide_index=True)
    if detail.lineage is not None and detail.lineage.edges:
        st.graphviz_chart(views.lineage_dot(detail.lineage, focus=ds.ref), width="stretch")


SECTIONS = {"Datasheet": show_datasheet, "Statistics": show_statistics, "Documents": show_documents,
            "Licenses": show_licenses, "Models": show_models}
for name, tab in tabs.items():
    if tab.open is False:
        continue
    with tab:
        try:
            SECTIONS[name]()
        except ForgeError as err:
            ui.show_problem(err, what=f"{name}:")
