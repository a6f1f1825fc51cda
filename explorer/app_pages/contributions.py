"""Contributions: the checkout's ``contrib/*`` branches with their fast-check status, and the review
of one (``?branch=contrib/...``): what it adds in human terms and the check report.

The checks are :func:`contributions.check.check` with ``fast=True`` against ``main`` (schema,
questions, licenses, statements, params: seconds, no network), computed when the page is viewed,
on a temporary worktree of the branch, and cached per branch commit. CI runs them all.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from commonforge.errors import ForgeError
from explorer import ui

BASE = "main"  # what contributions are made against; a clone without it falls back to origin/main
VERDICT_BADGE: dict[str, tuple[str, ui.BadgeColor]] = {
    "passed": ("fast checks passed", "green"), "failed": ("fast checks failed", "red"),
    "needs-review": ("needs a maintainer", "orange")}


@st.cache_data(ttl=600, max_entries=16, show_spinner=False)
def contrib_branches(root: str, fingerprint: str) -> list[tuple[str, str, str]]:
    """(name, commit, subject) of every local and remote-tracking ``contrib/*`` branch, by name."""
    import git

    repo = git.Repo(root)
    found = {}
    for ref in repo.references:
        name = ref.name  # "contrib/x" for a local branch, "origin/contrib/x" for a remote-tracking one
        if name.startswith("contrib/") or name.split("/", 1)[-1].startswith("contrib/"):
            commit = ref.commit
            found[name] = (name, commit.hexsha, str(commit.summary))
    return sorted(found.values())


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def fast_report(root: str, branch: str, commit: str) -> tuple[dict[str, Any], str]:
    """The fast check of ``branch`` at ``commit`` (the key: a new commit is checked again)."""
    from pathlib import Path

    from contributions.check import check, to_markdown

    report = check(Path(root), None, commit, fast=True)  # None: main, else origin/main
    return report.to_dict(), to_markdown(report)


@st.cache_data(ttl=3600, max_entries=32, show_spinner=False)
def branch_review(root: str, branch: str, commit: str) -> str | None:
    """The review's Markdown (:func:`contributions.review.review`); None where this checkout has no review."""
    from pathlib import Path

    import git

    names = {r.name for r in git.Repo(root).references}
    try:
        from contributions.review import review

        return review(Path(root), branch, base=BASE if BASE in names else f"origin/{BASE}").markdown()
    except ImportError:
        return None


def refs_fingerprint(root: str) -> str:
    """Changes whenever a branch moves (git's packed and loose refs): the listing's cache key."""
    import git

    repo = git.Repo(root)
    return "\n".join(f"{r.path}:{r.commit.hexsha}" for r in repo.references)


forge = ui.current_forge()
root = str(forge.root)
st.title("Contributions")
st.caption(f"`contrib/*` branches of `{root}`, checked against `{BASE}` with the fast checks when viewed "
           "(schema, questions, licenses, statements, params); CI runs every check on the pull request.")

try:
    branches = contrib_branches(root, refs_fingerprint(root))
except ImportError:
    st.error("GitPython is not installed in this environment: `make venv` installs it.")
    st.stop()
except Exception as err:  # noqa: BLE001 - not a git checkout, or a broken one: say so on the page
    st.info(f"**This checkout is not a git repository**, so it has no contribution branches ({err}). "
            "Contributions are git branches: clone the forge with git to see them here.")
    st.stop()

if not branches:
    st.info("**No `contrib/*` branches here.** `commonforge contribute ENTRY` makes one from an entry "
            "you scaffolded; a maintainer fetches others' with "
            "`git fetch upstream 'refs/heads/contrib/*:refs/remotes/upstream/contrib/*'`.")
    st.stop()

chosen = ui.query_param("branch")
reports: dict[str, tuple[dict[str, Any], str] | ForgeError] = {}
for name, commit, subject in branches:
    with st.container(border=True):
        try:
            with st.spinner(f"checking {name}…"):
                reports[name] = fast_report(root, name, commit)
        except ForgeError as err:
            reports[name] = err
        found = reports[name]
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"**{name}**")
            if isinstance(found, ForgeError):
                st.badge("cannot be checked", color="red", icon=":material/error:")
            else:
                label, color = VERDICT_BADGE[found[0]["verdict"]]
                st.badge(label, color=color)
            st.caption(f"`{commit[:12]}` {subject}")
        if isinstance(found, ForgeError):
            ui.show_problem(found)
        else:
            doc = found[0]
            entries = ", ".join(e["ref"] or e["path"] for e in doc["entries"]) or "no entries"
            counts = doc["counts"]
            st.caption(f"{entries} · {counts['passed']} passed, {counts['failed']} failed, "
                       f"{counts['skipped']} skipped · {len(doc['changes'])} changed path(s)")
        if st.button("Review", key=f"review-{name}", disabled=chosen == name):
            st.query_params["branch"] = name
            st.rerun()

if chosen is None:
    st.stop()
if chosen not in reports:
    st.warning(f"**No contribution branch `{chosen}` here.** Choose one of the branches above.")
    st.stop()

st.divider()
st.header(f"Review of {chosen}", anchor=False)
commit = next(c for n, c, _ in branches if n == chosen)
try:
    reviewed = branch_review(root, chosen, commit)
except ForgeError as err:
    ui.show_problem(err, what=f"The review of `{chosen}` failed.")
    reviewed = ""
if reviewed is None:
    st.info("**The review view is not available in this checkout** (`contributions.review` is missing): "
            "the check report below is what there is.")
elif reviewed:
    st.markdown(reviewed)
found = reports[chosen]
if not isinstance(found, ForgeError):
    st.subheader("Check report", anchor=False)
    st.markdown(found[1])
