"""Layout helpers the pages share: the checkout, problem messages, links between pages."""

from __future__ import annotations

from typing import Literal

import streamlit as st

from commonforge.errors import ForgeError
from explorer import data

PAGES = {
    "models": "app_pages/models.py",
    "model": "app_pages/model.py",
    "dataset": "app_pages/dataset.py",
    "compare": "app_pages/compare.py",
}
BadgeColor = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "grey", "primary"]  # st.badge's
STATUS_BADGE: dict[str, tuple[str, BadgeColor]] = {
    "published": ("published", "green"), "draft": ("draft", "orange"), "revoked": ("revoked", "red")}


def current_forge() -> data.Forge:
    """The checkout this server browses (``COMMONFORGE_ROOT`` or the working directory); stops the page if none."""
    try:
        return data.Forge.load()
    except ForgeError as err:
        st.error(f"**This explorer has no checkout to show.** {err.message}")
        if err.hint:
            st.caption(f"Hint: {err.hint}")
        st.stop()
        raise  # unreachable: st.stop() ends the run


def show_problem(err: Exception, *, what: str = "") -> None:
    """A ForgeError (or anything else) as a message on the page, never a traceback."""
    if isinstance(err, ForgeError):
        st.error((f"**{what}** " if what else "") + err.message)
        if err.hint:
            st.caption(f"Hint: {err.hint}")
    else:
        st.error((f"**{what}** " if what else "") + f"{type(err).__name__}: {err}")


def query_param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def ref_or_choice(kind: str, refs: list[str], *, empty: str, placeholder: str) -> str:
    """The ``?ref=`` of the page; without one, a picker over ``refs`` (or ``empty`` when there are none).

    Stops the page until a ref is chosen; the choice goes into the URL.
    """
    ref = query_param("ref")
    if ref:
        return ref
    if not refs:
        st.info(empty)
        st.stop()
    choice = st.selectbox(f"Choose a {kind}", refs, index=None, placeholder=placeholder)
    if choice:
        st.query_params["ref"] = choice
        st.rerun()
    st.stop()


def keep_in_url(name: str, value: str | None) -> None:
    """Mirror a widget's value into the URL, so the address can be shared and reloaded."""
    if value:
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]


def release_link(ref: str, label: str | None = None) -> None:
    st.page_link(PAGES["model"], label=label or ref, icon=":material/neurology:", query_params={"ref": ref})


def dataset_link(ref: str, label: str | None = None) -> None:
    st.page_link(PAGES["dataset"], label=label or ref, icon=":material/dataset:", query_params={"ref": ref})


def status_badge(status: str) -> None:
    label, color = STATUS_BADGE.get(status, (status, "gray"))
    st.badge(label, color=color)


def choose_instead(kind: str, refs: list[str]) -> None:
    """After a ref that names nothing: the refs that do exist, as links."""
    if not refs:
        return
    st.markdown(f"**{kind.capitalize()}s in this registry:**")
    for ref in refs:
        (release_link if kind == "release" else dataset_link)(ref)
