"""Models: every release with its status, reproducibility, headline scores, size and license."""

import streamlit as st

from explorer import cache, ui, views

forge = ui.current_forge()
listing = cache.listing(forge, forge.fingerprint())

st.title("Models")
st.caption(f"{len(listing.releases)} releases · {listing.recipes} recipes · {listing.datasets} datasets "
           "in " + " and ".join(f"the {layer.layer} (`{layer.entries_dir}`)" for layer in forge.layers()))

for ref, why in listing.broken:
    st.warning(f"**{ref} could not be read.** {why}")

if not listing.releases:
    st.info(
        f"**The registry has no releases yet.** There is nothing to browse under `{forge.entries_dir}/models`. "
        "Build one: `commonforge build forge-tiny` (about two minutes on two cores) makes a release from "
        "the tiny dataset committed in the repository; `commonforge build` builds forge-small."
    )
    _, dataset_refs = cache.refs(forge, forge.fingerprint())
    if dataset_refs:
        st.markdown("Meanwhile, the datasets are here:")
        for ref in dataset_refs:
            ui.dataset_link(ref)
    st.stop()

releases = listing.releases
with st.container(horizontal=True, vertical_alignment="bottom"):
    query = st.text_input("Search", value=ui.query_param("q") or "", key="q", type="search",
                          placeholder="name, title, license, dataset…", width=320)
    statuses = st.multiselect("Status", ["published", "draft", "revoked"], key="status", width=260)
    licenses = st.multiselect("License", sorted({r.license for r in releases}), key="license", width=220)
    provenance = st.multiselect("Provenance", ["built", "converted", "imported", "finetuned"], key="provenance", width=220)
    reproduced = st.toggle("Rebuilt identical", key="reproduced")
    evaluated = st.toggle("Evaluated", key="evaluated")

ui.keep_in_url("q", query)
shown = views.filter_releases(releases, query or "", statuses=statuses, licenses=licenses, provenance=provenance,
                              reproduced_only=reproduced, evaluated_only=evaluated)
if not shown:
    st.info(f"No release matches those filters ({len(releases)} in the registry). Clear the search or a filter.")
    st.stop()

for r in shown:
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            ui.release_link(r.ref, label=f"**{r.ref}**")
            ui.status_badge(r.status)
            st.badge(f"in the {r.layer}", color="gray", icon=":material/folder:")
            st.badge(r.license, color="violet", icon=":material/license:")
            if r.provenance == "imported":
                st.badge("imported: not built by the forge", color="gray", icon=":material/input:")
            elif r.provenance == "converted":
                st.badge("converted from a pinned checkpoint: not trained by the forge", color="orange",
                         icon=":material/swap_horiz:")
            elif r.provenance == "finetuned":
                st.badge("private fine-tune: yours, never shared", color="orange", icon=":material/lock:")
            else:
                st.badge(f"built from {r.recipe}", color="blue", icon=":material/construction:")
            if r.reproduced:
                st.badge(r.reproducibility, color="green", icon=":material/verified:")
            elif r.rebuilds:
                st.badge(r.reproducibility, color="red", icon=":material/error:")
            else:
                st.badge(r.reproducibility, color="gray")
        if r.title:
            st.markdown(f"{r.title}")
        cols = st.columns([1, 1, 4])
        cols[0].metric("Parameters", views.human_count(r.parameters))
        cols[1].metric("Weights", views.human_bytes(r.weights_bytes),
                       help=f"full precision; {views.human_bytes(r.total_bytes)} with every variant")
        with cols[2]:
            if r.headline:
                with st.container(horizontal=True):
                    for label, value in r.headline:
                        st.metric(label, f"{value:.3f}", width="content")
            else:
                st.caption("Scores: not evaluated yet (no evaluation record beside this release).")
            st.caption("Data: " + (", ".join(r.datasets) if r.datasets else "none recorded (imported)")
                       + (f" · variants: {', '.join(r.variants)}" if r.variants else ""))
        for problem in r.problems:
            st.warning(problem)

with st.expander("As a table"):
    st.dataframe(views.releases_table(shown), hide_index=True)
