"""Compare: two releases side by side (``?a=model/X@1&b=model/Y@1``): recipe, data and score differences."""

import streamlit as st

from commonforge.errors import ForgeError
from explorer import cache, charts, ui, views

forge = ui.current_forge()
fingerprint = forge.fingerprint()
release_refs, _ = cache.refs(forge, fingerprint)

st.title("Compare")
if not release_refs:
    st.info("**The registry has no releases yet**, so there is nothing to compare. "
            "Build one with `commonforge build forge-tiny`.")
    st.stop()

options = list(release_refs)
for name in ("a", "b"):  # refs from the URL that are not releases here are still offered, then explained
    given = ui.query_param(name)
    if given and given not in options:
        options.append(given)
default_b = release_refs[1] if len(release_refs) > 1 else release_refs[0]
cols = st.columns(2)
ref_a = cols[0].selectbox("Release A", options, index=options.index(ui.query_param("a") or release_refs[0]), key="a")
ref_b = cols[1].selectbox("Release B", options, index=options.index(ui.query_param("b") or default_b), key="b")
ui.keep_in_url("a", ref_a)
ui.keep_in_url("b", ref_b)

details = {}
for label, ref in (("A", ref_a), ("B", ref_b)):
    try:
        details[label] = cache.release_detail(forge, fingerprint, ref)
    except ForgeError as err:
        ui.show_problem(err, what=f"Release {label} (`{ref}`) cannot be shown.")
if len(details) < 2:
    st.stop()
a, b = details["A"], details["B"]
if a.release.release_digest == b.release.release_digest:
    st.info("A and B are the same release" + ("; the registry has only this one." if len(release_refs) == 1 else
                                              ": pick another for B."))

with st.container(horizontal=True):
    ui.release_link(a.release.ref, label=f"A: {a.release.ref}")
    ui.release_link(b.release.ref, label=f"B: {b.release.ref}")

st.subheader("At a glance", anchor=False)
glance = views.summary_diff(a.summary, b.summary)
st.dataframe(glance, hide_index=True, height=views.table_height(glance))

st.subheader("Scores", anchor=False)
if not (a.summary.evaluated or b.summary.evaluated):
    st.info("Neither release has been evaluated yet.")
else:
    if not a.summary.evaluated or not b.summary.evaluated:
        st.warning(f"Only {'A' if a.summary.evaluated else 'B'} has an evaluation record; the other column is empty.")
    rows = views.score_diff(a.summary.scores, b.summary.scores)
    chart = charts.score_diff_chart(rows)
    if chart is not None:
        st.altair_chart(chart)
    st.dataframe(rows, hide_index=True, height=views.table_height(rows))

st.subheader("Recipe differences", anchor=False)
if a.recipe is None or b.recipe is None:
    built = a.recipe or b.recipe
    st.info("An imported release has no recipe: "
            + ("neither has one." if built is None else
               f"only {'A' if a.recipe else 'B'} was built from a recipe ({built.ref})."))
diff = views.recipe_diff(a.recipe, b.recipe)
if diff:
    st.dataframe(diff, hide_index=True)
elif a.recipe is not None:
    st.success("Both were built from identical recipes.")

st.subheader("Training data", anchor=False)
data_rows = views.data_diff(a.release, b.release)
if data_rows:
    st.dataframe(data_rows, hide_index=True)
else:
    st.info("Neither release records training data (imported releases have none).")

env_rows = views.environment_diff(a.release, b.release)
if env_rows:
    st.subheader("Build environment differences", anchor=False)
    st.dataframe(env_rows, hide_index=True)
