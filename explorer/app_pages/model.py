"""Model: one release (``?ref=model/NAME@VERSION``): card, architecture, training, evaluation,
lineage, artifacts, how to reproduce it, and a small box to try it. A converted release says
near the top what it was converted from, who made it, its license as its publisher states it,
and which variant holds the checkpoint's blocks unchanged."""

import streamlit as st

from commonforge.errors import ForgeError
from commonforge.settings import peers_file
from explorer import cache, charts, data, generate, ui, views
from registry import layers
from registry.catalog import Registry
from registry.refs import Ref
from sharing.peers import PeerBook

forge = ui.current_forge()
fingerprint = forge.fingerprint()
release_refs, _ = cache.refs(forge, fingerprint)
st.title("Model")
ref = ui.ref_or_choice("release", release_refs, placeholder="model/NAME@VERSION",
                       empty="**The registry has no releases yet.** Build one with `commonforge build forge-tiny`, "
                       "then come back.")

try:
    detail = cache.release_detail(forge, fingerprint, ref)
except ForgeError as err:
    ui.show_problem(err, what=f"No release to show for `{ref}`.")
    ui.choose_instead("release", release_refs)
    st.stop()

release, summary, m = detail.release, detail.summary, detail.release.manifest
# The layer the release is in (the checkout, or the user registry): its card, store and loader from here on.
checkout, forge = forge, detail.forge


def pinned_conversion():
    """(the conversion entry a converted release pins, or None; why not): from the release's layer, else
    the checkout, and only with the digest the manifest pins."""
    pin = m.conversion
    if pin is None:
        return None, ""
    why = f"its conversion entry `{pin.ref}` is in neither registry layer"
    for layer in dict.fromkeys([forge.root, checkout.root]):
        try:
            entry = Registry(layer).conversion(pin.ref)
        except ForgeError:
            continue
        if entry.digest == pin.sha256:
            return entry, ""
        why = f"the conversion entry `{pin.ref}` here does not match the digest the release pins (`{pin.sha256}`)"
    return None, why


conversion, conversion_problem = pinned_conversion()

# --- header ---------------------------------------------------------------------------------
st.header(release.ref, anchor=False)
with st.container(horizontal=True, vertical_alignment="center"):
    ui.status_badge(summary.status)
    st.badge(summary.license, color="violet", icon=":material/license:")
    st.badge(summary.reproducibility, color="green" if summary.reproduced else ("red" if summary.rebuilds else "gray"))
    if summary.evaluated:
        st.badge("evaluated", color="blue", icon=":material/fact_check:")
st.caption(f"release digest sha256:`{release.release_digest}` · in the {summary.layer} (`{forge.root}`)")
if m.provenance == "imported":
    st.warning(
        "**Imported: this model was not built by the forge.** It has no recipe, no source commit and no "
        "training data on record, so nobody can rebuild it and it can never be marked reproduced. "
        + (f"It came from {detail.provenance.imported_from}." if detail.provenance and detail.provenance.imported_from
           else ""), icon=":material/input:")
elif m.provenance == "converted":
    assert m.conversion is not None  # BuildManifest's validator: a converted release names its conversion
    if conversion is not None:
        st.info(
            f"**Converted from `{views.checkpoint_spec(conversion)}` by the forge; made by {conversion.publisher}.** "
            f"The forge did not train this model: `{conversion.ref}` converted the pinned checkpoint (GGUF, sha256 "
            f"`{m.conversion.checkpoint_sha256}`), and `commonforge reproduce` converts it again bit for bit. "
            "Its full-precision weights are the checkpoint's quantized values, dequantized to float32; the "
            f"**`{conversion.lossless_variant}`** variant holds the checkpoint's blocks unchanged (lossless).",
            icon=":material/swap_horiz:")
        st.markdown(f"**{conversion.title}** — {conversion.description}")
        st.markdown(f"**License: {m.license}, as its publisher states it.** {conversion.license_statement}")
    else:
        st.info(f"**Converted by the forge from a pinned checkpoint (GGUF, sha256 `{m.conversion.checkpoint_sha256}`) "
                f"with `{m.conversion.ref}`; not trained by the forge.** Who made it is not shown: "
                f"{conversion_problem}.", icon=":material/swap_horiz:")
elif m.provenance == "finetuned":
    assert m.finetune is not None  # BuildManifest's validator: a finetuned release names its fine-tune
    st.info(
        f"**Private fine-tune of `{m.base_model}`**, a {m.finetune.method.upper()} adapter trained on your own "
        f"{m.finetune.data_format} data (sha256 `{m.finetune.data_sha256}`; the data is not part of the release). "
        "It is shown only here, in your own registry: it is never offered to peers, signed for or logged.",
        icon=":material/lock:")
elif detail.recipe is not None:
    st.markdown(f"**{detail.recipe.title}** — {detail.recipe.description}")
if detail.provenance:
    p = detail.provenance
    verb = {"built": "built", "converted": "converted", "finetuned": "fine-tuned"}.get(m.provenance, "imported")
    st.caption(f"{verb} by {p.built_by} at {p.created_at} on {p.machine.get('hostname', '?')} "
               f"({p.machine.get('cpu', '?')}, {p.machine.get('cores', '?')} cores)")
for problem in summary.problems:
    st.warning(problem)
missing = [a for a in m.artifacts if not detail.in_store.get(a.sha256)]
if missing:
    st.warning(
        f"**{len(missing)} of {len(m.artifacts)} artifacts of this release are not in the local store** "
        f"(`{forge.store_dir}`): {', '.join(a.path for a in missing)}. Everything recorded about the release is "
        "shown below, but trying it needs the files: rebuild it (`commonforge build`) or fetch it from a peer.",
        icon=":material/inventory_2:")

gov = summary.governance
if summary.status == "revoked":
    st.error("**This release is REVOKED.** " + " ".join(f"Revoked by {line}." for line in gov.get("revocations", []))
             + " Serving, evaluating and trying it are refused unless you insist.", icon=":material/block:")

TABS = ["Card", "Governance", "Architecture", "Training", "Evaluation", "Lineage", "Artifacts", "Reproduce", "Try it"]
tabs = dict(zip(TABS, st.tabs(TABS, key="tab", bind="query-params")))


# --- card ---------------------------------------------------------------------------------
def show_card() -> None:
    card = cache.model_card(forge, fingerprint, release.ref)
    if card.status in ("none", "build"):
        st.info(card.message, icon=":material/description:")
    elif card.status != "ok":
        st.warning(card.message)
    if card.blocks:
        st.caption(f"`{card.path}`")
        with st.container(border=True):
            for kind, body, alt in card.blocks:
                if kind == "image":
                    st.image(body, caption=alt or None)
                else:
                    st.markdown(body)
        if card.front_matter:
            with st.expander("Card metadata (front matter)"):
                st.code(card.front_matter, language="yaml")
    st.subheader("Intended use and limitations", anchor=False)
    r = detail.recipe or conversion
    if r is None:
        st.info("An imported release has no recipe, so the forge records no intended use or limitations for it."
                if m.provenance != "converted" else
                f"Its conversion entry is not available ({conversion_problem}), so no intended use or limitations "
                "are shown.")
        return
    st.caption(f"from {r.ref}")
    st.markdown(f"**Intended use.** {r.intended_use}")
    st.markdown("**Out of scope.**\n" + "\n".join(f"- {x}" for x in r.out_of_scope))
    st.markdown("**Known limitations.**\n" + "\n".join(f"- {x}" for x in r.limitations))


# --- architecture -------------------------------------------------------------------------
def show_architecture() -> None:
    config = detail.config
    if config is None:
        st.info(f"No architecture to show: {detail.config_source}.")
        return
    pc = views.parameter_counts(config)
    st.caption(f"from {detail.config_source}")
    cols = st.columns(5)
    cols[0].metric("Parameters", views.human_count(pc["total"]), help=f"{pc['total']:,}")
    cols[1].metric("Layers", config["num_hidden_layers"])
    cols[2].metric("Hidden size", config["hidden_size"])
    cols[3].metric("Context", f"{config.get('max_position_embeddings', '?')} tokens")
    cols[4].metric("Vocabulary", f"{config['vocab_size']:,}")
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Layer stack", anchor=False)
        st.graphviz_chart(views.layer_stack_dot(config))
    with right:
        st.subheader("Parameters by part", anchor=False)
        st.altair_chart(charts.parameter_chart(pc["parts"]), width="stretch")
        st.dataframe([{"part": p["part"], "parameters": f"{p['parameters']:,}", "share": f"{p['share']:.1%}"}
                      for p in pc["parts"]], hide_index=True)
        st.subheader("Config", anchor=False)
        rows = views.config_rows(config)
        st.dataframe(rows, hide_index=True, height=views.table_height(rows))


# --- training -----------------------------------------------------------------------------
def show_training() -> None:
    if m.provenance == "imported":
        st.info("Imported releases have no training run on record.")
        return
    if m.provenance == "finetuned":
        st.info("A fine-tune's training is in its record: `commonforge show " + release.ref + "` prints the loss "
                "and the held-out bits per byte before and after.")
        return
    if m.provenance == "converted":
        who = conversion.publisher if conversion else "its publisher"
        st.info(f"**Not trained by the forge:** {who} trained it; its training data is not pinned here and was "
                "not checked for contamination. What the forge did is the conversion:", icon=":material/swap_horiz:")
        if conversion is not None:
            src = conversion.source
            st.dataframe([{"what": k, "value": str(v)} for k, v in [
                ("checkpoint", views.checkpoint_spec(conversion)), ("artifact sha256", src.sha256),
                ("checkpoint sha256", src.member_sha256), ("format", src.format),
                ("lossless variant", conversion.lossless_variant), ("threads", conversion.threads)]],
                hide_index=True)
        if detail.provenance and detail.provenance.stage_seconds:
            st.dataframe([{"stage": k, "seconds": v} for k, v in detail.provenance.stage_seconds.items()],
                         hide_index=True)
        return
    build, run = detail.build, detail.mlflow
    if build is not None:
        (st.caption if build.matches_release else st.warning)(build.note)
    if run is not None:
        st.caption(run.message if run.found else f"MLflow: {run.message}")
    chart = charts.training_curves(build, run)
    if chart is None:
        st.info("No training curves here: neither build/models/…/train/loss.csv nor an MLflow run is on this machine.")
    else:
        st.altair_chart(chart, width="stretch")
    if build is not None and build.metrics:
        mt = build.metrics
        cols = st.columns(5)
        cols[0].metric("Steps", mt.get("steps", "–"))
        cols[1].metric("Tokens trained", views.human_count(mt.get("tokens_trained")))
        cols[2].metric("Final train loss", f"{mt['final_train_loss']:.3f}" if "final_train_loss" in mt else "–")
        cols[3].metric("Validation loss", f"{mt['val_loss']:.3f}" if "val_loss" in mt else "–")
        cols[4].metric("Validation bits/byte", f"{mt['val_bits_per_byte']:.3f}" if "val_bits_per_byte" in mt else "–")
    if build is not None and build.quantize.get("variants"):
        st.subheader("Quantized variants on the validation split", anchor=False)
        st.dataframe([{"variant": k, **{f: v.get(f) for f in ("method", "bits", "group_size", "val_loss", "perplexity",
                                                              "bits_per_byte")}}
                      for k, v in build.quantize["variants"].items()], hide_index=True)
    if detail.provenance and detail.provenance.stage_seconds:
        with st.expander("Wall time per stage (this build's provenance)"):
            st.dataframe([{"stage": k, "seconds": v} for k, v in detail.provenance.stage_seconds.items()],
                         hide_index=True)
    if detail.recipe is not None:
        with st.expander("Training settings (from the recipe)"):
            st.dataframe([{"setting": k, "value": str(v)} for k, v in detail.recipe.training.model_dump().items()],
                         hide_index=True)


# --- evaluation ---------------------------------------------------------------------------
def show_evaluation() -> None:
    ev = detail.evaluation
    if ev is None:
        st.info(f"**{release.ref} has not been evaluated yet**: there is no evaluation record beside it. "
                "The evaluate stage writes one when the release is built.", icon=":material/fact_check:")
        return
    scores = summary.scores
    variants = views.variant_order(scores)
    st.caption(f"{ev.harness} · evaluated at {ev.evaluated_at} · variants: {', '.join(variants)}")
    chart = charts.evaluation_chart(scores, variants)
    if chart is not None:
        st.altair_chart(chart)
        st.caption("Dashed red line: chance level (random guessing), where the task has one.")
    st.subheader("Scores, every variant side by side", anchor=False)
    table = views.evaluation_table(scores)
    st.dataframe(table, hide_index=True, height=views.table_height(table))
    st.subheader("Contamination", anchor=False)
    rows = views.contamination_rows(ev)
    if rows:
        ngram = rows[0]["n-gram"]
        st.caption(f"Benchmark items that share a {ngram}-gram with the training data"
                   + ("; the 'clean' rows above leave them out." if any(s.subset == "clean" for s in scores) else "."))
        st.dataframe(rows, hide_index=True, column_config={"share": st.column_config.NumberColumn(format="percent")})
    else:
        st.info("No contamination check is recorded for this evaluation.")


# --- lineage ------------------------------------------------------------------------------
def show_lineage() -> None:
    graph = detail.lineage
    if graph is None:
        st.info("The lineage graph could not be built (see the warnings above).")
        return
    st.graphviz_chart(views.lineage_dot(graph, focus=release.ref), width="stretch")
    cols = st.columns(3)
    with cols[0]:
        st.markdown("**Trained on**")
        for d in m.datasets:
            ui.dataset_link(d.ref)
        if not m.datasets:
            st.caption("no datasets on record")
    with cols[1]:
        st.markdown("**Built from**" if m.provenance != "converted" else "**Converted from**")
        if m.conversion is not None:
            st.caption(f"{views.checkpoint_spec(conversion) if conversion else 'a pinned GGUF checkpoint'} "
                       f"by {m.conversion.ref}")
        else:
            st.caption(m.recipe.ref if m.recipe else "no recipe (imported)")
        if m.base_model:
            ui.release_link(m.base_model, label=f"base model: {m.base_model}")
    with cols[2]:
        st.markdown("**Derived models**")
        for derived in detail.derived:
            ui.release_link(derived)
        if not detail.derived:
            st.caption("none yet")


# --- artifacts ----------------------------------------------------------------------------
def show_artifacts() -> None:
    results: dict = st.session_state.setdefault("verified", {})
    if st.button("Re-verify every artifact", icon=":material/verified:"):
        results.update({(release.release_digest, path): status for path, status in data.reverify(forge, m.artifacts)})
    st.caption(f"Store: `{forge.store_dir}`. Re-verifying re-hashes the stored object and compares it with the "
               "manifest; it reads, never writes.")
    header = st.columns([3, 1, 5, 1, 1])
    for col, name in zip(header, ["artifact", "size", "sha256", "status", ""]):
        col.markdown(f"**{name}**")
    for a in m.artifacts:
        key = (release.release_digest, a.path)
        cols = st.columns([3, 1, 5, 1, 1], vertical_alignment="center")
        cols[0].markdown(f"`{a.path}`  \n{a.variant or 'full'} · {a.stage}")
        cols[1].write(views.human_bytes(a.size))
        cols[2].code(a.sha256, language=None, wrap_lines=True)
        if cols[4].button("Verify", key=f"verify-{a.path}"):
            results.update({(release.release_digest, path): status for path, status in data.reverify(forge, [a])})
        status = results.get(key)
        if status is None:
            cols[3].write("present" if detail.in_store.get(a.sha256) else "missing")
        elif status == "ok":
            cols[3].badge("verified", color="green", icon=":material/check:")
        else:
            cols[3].badge(status, color="red", icon=":material/close:")
    show_pull_sources()


def show_pull_sources() -> None:
    """Which layer holds the release here, and the pull command for another machine: the added peers
    whose index listed it when asked on the Peers page (this session), else every added peer. Read from
    the peers file and the session only: nothing here connects to a peer."""
    st.subheader("Where to pull it from", anchor=False)
    entry = Ref("model", release.name, release.version)
    held = [layers.layer_name(r) for r in layers.layer_roots(checkout.root) if Registry(r).entry_path(entry).is_file()]
    st.caption(f"On this machine it is in the {' and the '.join(held or [forge.layer])}.")
    try:
        book = PeerBook.load(peers_file())
    except ForgeError as err:
        ui.show_problem(err, what="The peers file cannot be read.")
        return
    if not book.peers:
        st.info(f"You have added no peers. Add one (`commonforge peers add URL`), then "
                f"`commonforge pull {release.ref} --from URL`.")
        return
    answers = st.session_state.get("peer_answers", {})
    holders = [p.url for p in book.peers if release.ref in (answers.get(p.url) or {}).get("releases", [])]
    if holders:
        st.code("\n".join(f"commonforge pull {release.ref} --from {url}" for url in holders), language="bash")
        st.caption(f"{len(holders)} of your {len(book.peers)} peer(s) listed it when asked on the Peers page. "
                   "A pull verifies signatures, status and every sha256 before it keeps anything.")
    else:
        st.code(f"commonforge pull {release.ref} " + " ".join(f"--from {url}" for url in book.urls()), language="bash")
        st.caption("From the peers you added" + (" (none of those asked on the Peers page listed it)" if answers
                                                 else "; whether they have it, ask them on the Peers page") + ".")
    st.page_link("app_pages/peers.py", label="Peers", icon=":material/hub:")


# --- governance -------------------------------------------------------------------------------
def show_governance() -> None:
    st.caption("Computed now from the signed statements beside the release, under the policy this checkout "
               "verifies (`commonforge status` says the same in a terminal). Nothing here is read from a stored status.")
    policy = gov.get("policy_version", 0)
    st.markdown(f"**Status: {summary.status}** under governance policy **{policy}**"
                + (" (the empty bootstrap policy: no key counts yet)" if policy == 0 else ""))
    if gov.get("needs"):
        st.warning("**Why it is not published yet**\n\n" + "\n".join(f"- {n}" for n in gov["needs"]),
                   icon=":material/pending:")
    pub = gov.get("publication")
    if pub:
        st.success(f"Published by {pub['name']} ({pub['affiliation']}, key `{pub['keyid'][:16]}`) at "
                   f"{pub['signed_at']} under policy {pub['policy_version']}.", icon=":material/verified:")
    st.subheader("Built by", anchor=False)
    if gov.get("builders"):
        st.dataframe([{"builder": b["name"], "affiliation": b["affiliation"] or "(not a maintainer)", "keyid": b["keyid"]}
                      for b in gov["builders"]], hide_index=True)
    else:
        st.info("No signed build statement: who built it is not vouched for.")
    st.subheader("Approvals counted", anchor=False)
    if gov.get("approvals"):
        st.dataframe([{"maintainer": a["name"], "affiliation": a["affiliation"], "keyid": a["keyid"],
                       "signed at": a["signed_at"], "comment": a.get("comment") or ""} for a in gov["approvals"]],
                     hide_index=True)
    else:
        st.info("No approval counts yet.")
    st.subheader("Independent rebuilds counted", anchor=False)
    if gov.get("rebuilds"):
        st.dataframe([{"rebuilder": r["name"], "affiliation": r["affiliation"], "keyid": r["keyid"],
                       "signed at": r["signed_at"]} for r in gov["rebuilds"]], hide_index=True)
    else:
        st.info("No identical rebuild by another party counts yet.")
    if gov.get("not_counted"):
        with st.expander(f"{len(gov['not_counted'])} statement(s) that do not count, and why"):
            for line in gov["not_counted"]:
                st.markdown(f"- {line}")


# --- reproduce ----------------------------------------------------------------------------
def show_reproduce() -> None:
    recipe_name = detail.recipe.name if detail.recipe else None
    commands = views.reproduce_commands(release, recipe_name, detail.stages)
    if m.provenance == "converted":
        commands = views.conversion_reproduce_commands(release)
        st.markdown(f"The forge did not train **{release.ref}**, so its training can't be reproduced here; its "
                    f"conversion can. Convert it again from the pinned checkpoint at source commit "
                    f"`{m.source_commit}` and compare it bit for bit:")
        st.code(commands or "", language="bash")
        show_environment()
    elif commands is None:
        st.warning("**Imported: not built by the forge, so it cannot be reproduced.** There is no recipe or "
                   "source commit to rebuild it from; check its files against the manifest on the Artifacts tab.")
    else:
        st.markdown(f"Rebuild **{release.ref}** from source commit `{m.source_commit}` and compare it bit for bit:")
        st.code(commands, language="bash")
        show_environment()
    st.subheader("Rebuilds", anchor=False)
    if not summary.rebuilds:
        st.info("Nobody has signed a rebuild of this release yet (`commonforge reproduce --key K`)."
                if m.provenance != "imported" else "Imported releases are never rebuilt.")
        return
    st.dataframe([{"result": r.result, "rebuilt by": r.by, "where": r.where, "when": r.when,
                   "first differing stage": r.first_differing_stage or "–",
                   "counted": "yes" if r.not_counted is None else f"no: {r.not_counted}"} for r in summary.rebuilds],
                 hide_index=True)
    for r in summary.rebuilds:
        if r.differences or r.environment_differences:
            with st.expander(f"What differed in the rebuild on {r.where} at {r.when}"):
                for line in r.environment_differences:
                    st.markdown(f"- environment: {line}")
                for line in r.differences:
                    st.markdown(f"- {line}")


def show_environment() -> None:
    env = m.environment
    assert env is not None  # built and converted releases pin their environment (BuildManifest's validator)
    with st.expander("The pinned build environment a rebuild must match"):
        st.caption(f"It pins {views.environment_pin(m)}.")
        st.dataframe([{"package": k, "version": v} for k, v in sorted(env.package_versions().items())]
                     + [{"package": "python", "version": env.python}], hide_index=True)
        st.dataframe([{"setting": k, "value": v} for k, v in sorted(env.determinism.items())], hide_index=True)


# --- try it -------------------------------------------------------------------------------
def show_try_it() -> None:
    st.caption("Generates on this machine's CPU through the release loader, which re-hashes every file it loads "
               f"against the manifest. At most {generate.MAX_NEW_TOKENS} new tokens. The prompt is a user message "
               "through the release's chat template (as `commonforge generate` and /v1/chat/completions do); "
               "'Raw text' continues it as plain text (`generate --raw`, /v1/completions).")
    with st.form("try-it"):
        variant = st.selectbox("Variant", ["full", *m.variants()])
        prompt = st.text_area("Prompt", value="Call me Ishmael. Some years ago", height=80)
        cols = st.columns(4)
        max_new = cols[0].slider("New tokens", 1, generate.MAX_NEW_TOKENS, 40)
        mode = cols[1].radio("Decoding", ["greedy", "sampling"], horizontal=True)
        temperature = cols[2].slider("Temperature (sampling)", 0.1, 2.0, 0.8)
        seed = cols[3].number_input("Seed (sampling)", min_value=0, max_value=2**31 - 1, value=0, step=1)
        raw = st.checkbox("Raw text (no chat template)", value=False,
                          help="continue the prompt as plain text; a release without a chat template always is")
        allow_revoked = (st.checkbox("Use this REVOKED release anyway") if summary.status == "revoked" else False)
        submitted = st.form_submit_button("Generate", icon=":material/play_arrow:", type="primary")
    outputs: dict = st.session_state.setdefault("generations", {})
    if submitted:
        settings = generate.GenerationSettings(max_new_tokens=int(max_new), sample=mode == "sampling",
                                               temperature=float(temperature), seed=int(seed), raw=bool(raw))
        loaded = None
        try:
            with st.spinner(f"Verifying and loading {release.ref} ({variant})…"):
                loaded = cache.loaded_model(forge, release, str(forge.root), str(forge.store_dir),
                                            release.release_digest, variant, allow_revoked)
            with st.spinner("Generating…"):
                outputs[release.release_digest] = generate.generate(loaded, prompt, settings)
        except ForgeError as err:
            outputs.pop(release.release_digest, None)
            ui.show_problem(err, what="Could not load this release." if loaded is None else "Generation failed.")
        except Exception as err:  # a broken variant must not take the page down
            outputs.pop(release.release_digest, None)
            ui.show_problem(err, what="Generation failed.")
    out = outputs.get(release.release_digest)
    if out is not None:
        with st.container(border=True):
            st.markdown(generate.as_markdown(out))
        stop = ("the end of the reply" if out.chat else "end of text") if out.stopped == "eos" else "the token cap"
        how = "a reply through the chat template" if out.chat else "raw text"
        st.caption(f"{out.new_tokens} new tokens after {out.prompt_tokens} prompt tokens in {out.seconds:.2f} s "
                   f"({out.tokens_per_second:.1f} tokens/s), {how}; stopped at {stop}.")


SECTIONS = {"Card": show_card, "Governance": show_governance, "Architecture": show_architecture, "Training": show_training,
            "Evaluation": show_evaluation, "Lineage": show_lineage, "Artifacts": show_artifacts,
            "Reproduce": show_reproduce, "Try it": show_try_it}
for name, tab in tabs.items():
    if tab.open is False:
        continue  # lazy: only the selected tab runs
    with tab:
        try:
            SECTIONS[name]()
        except ForgeError as err:
            ui.show_problem(err, what=f"{name}:")
