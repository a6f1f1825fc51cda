"""The licenses check against the committed policy: open licenses pass, NC/ND and missing credit fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from contributions.licenses import POLICY, Policy, alternatives, check_licenses, parse
from contributions.report import CheckInput
from tests.helpers import REPO, sample, snapshot, write_yaml

CREDIT = "Texts by A. Writer, from the Example Archive, CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); cleaned."


def forge(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / POLICY).parent.mkdir(parents=True)
    shutil.copy2(REPO / POLICY, root / POLICY)
    return root


def dataset(root: Path, license: str, sources: list[dict], name: str = "sample") -> CheckInput:
    entry = sample("dataset")
    entry.update(name=name, license=license)
    base = entry["sources"][0]
    entry["sources"] = [{**base, "id": f"s{i}", **s} for i, s in enumerate(sources)]
    rel = f"registry/entries/datasets/{name}/1.yaml"
    write_yaml(root / rel, entry)
    return CheckInput(root=root, ref=f"dataset/{name}@1", path=rel)


def recipe(root: Path, license: str, datasets: list[str]) -> CheckInput:
    entry = sample("recipe")
    entry.update(license=license, datasets=datasets)
    rel = "registry/entries/recipes/sample/1.yaml"
    write_yaml(root / rel, entry)
    return CheckInput(root=root, ref="recipe/sample@1", path=rel)


def line_of(root: Path, inp: CheckInput, text: str) -> int:
    return next(n for n, line in enumerate((root / inp.path).read_text().splitlines(), start=1) if text in line)


def run(root: Path, inp: CheckInput):
    before = snapshot(root)
    result = check_licenses(inp)
    assert snapshot(root) == before, "the check changed the repository"
    return result


def test_the_registrys_own_entries_pass():
    for ref, path in [("dataset/literary-pd@1", "registry/entries/datasets/literary-pd/1.yaml"),
                      ("recipe/forge-small@1", "registry/entries/recipes/forge-small/1.yaml")]:
        result = check_licenses(CheckInput(root=REPO, ref=ref, path=path))
        assert result.outcome == "passed", result.problems
    assert result.details["attributions"] == {"dataset/literary-pd@1": ["shakespeare"]}


def test_open_licenses_with_credit_pass(tmp_path):
    root = forge(tmp_path)
    inp = dataset(root, "CC0-1.0 AND CC-BY-4.0 AND LicenseRef-PublicDomain",
                  [{"license": "CC0-1.0"}, {"license": "CC-BY-4.0", "attribution": CREDIT},
                   {"license": "LicenseRef-PublicDomain"}])
    result = run(root, inp)
    assert result.outcome == "passed", result.problems
    assert result.details["attribution"] == ["s1"]
    assert result.details["sources"]["s2"] == "LicenseRef-scancode-public-domain"
    assert "covering its 3 source(s)" in result.summary


def test_a_noncommercial_license_is_refused_with_the_reason(tmp_path):
    root = forge(tmp_path)
    inp = dataset(root, "CC-BY-NC-4.0", [{"license": "CC-BY-NC-4.0", "attribution": CREDIT}])
    result = run(root, inp)
    assert result.outcome == "failed"
    assert len(result.problems) == 2  # the dataset's license and the source's
    p = result.problems[1]
    assert p.message.startswith("source s0: CC-BY-NC-4.0 is refused: NonCommercial: the license forbids commercial use")
    assert (p.path, p.line) == (inp.path, line_of(root, inp, "  license: CC-BY-NC-4.0"))
    assert "separate pull request" in p.fix


def test_a_noderivatives_license_is_refused(tmp_path):
    root = forge(tmp_path)
    result = run(root, dataset(root, "CC-BY-ND-4.0", [{"license": "CC-BY-ND-4.0", "attribution": CREDIT}]))
    assert result.outcome == "failed" and "NoDerivatives" in result.problems[0].message


@pytest.mark.parametrize("license", ["CC-BY-4.0", "ODC-By-1.0"])
def test_a_missing_attribution_is_named_at_its_source(tmp_path, license):
    # The schema refuses CC-BY-* without `attribution:` too; ODC-By only the policy's flag catches.
    root = forge(tmp_path)
    inp = dataset(root, f"CC0-1.0 AND {license}", [{"license": "CC0-1.0"}, {"license": license}])
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert p.message == f"source s1: {license} asks for attribution, and the source has no `attribution:` text"
    assert "add `attribution:`" in p.fix
    assert p.line == line_of(root, inp, "- id: s1")


def test_an_unknown_id_a_misspelling_and_an_uncovered_source_are_each_named(tmp_path):
    root = forge(tmp_path)
    inp = dataset(root, "CC0-1.0", [{"license": "cc0-1.0"}, {"license": "MIT"}, {"license": "Foo-1.0"}])
    result = run(root, inp)
    assert result.outcome == "failed"
    messages = [p.message for p in result.problems]
    assert "source s0: 'cc0-1.0' is spelled 'CC0-1.0' in SPDX" in messages
    assert "the dataset's license 'CC0-1.0' does not cover source s1 (MIT): MIT is missing" in messages
    assert any(m.startswith("source s2: 'Foo-1.0' is not a valid SPDX license expression: Unknown license key") for m in messages)
    assert len(messages) == 3


def test_a_choice_offered_by_the_dataset_must_cover_every_source(tmp_path):
    root = forge(tmp_path)
    result = run(root, dataset(root, "CC0-1.0 OR MIT", [{"license": "CC0-1.0"}, {"license": "MIT"}]))
    assert result.outcome == "failed"
    assert {p.message.split(":")[0] for p in result.problems} == {
        "the dataset's license 'CC0-1.0 OR MIT' does not cover source s0 (CC0-1.0)",
        "the dataset's license 'CC0-1.0 OR MIT' does not cover source s1 (MIT)"}
    assert alternatives(parse("(MIT OR Apache-2.0) AND CC0-1.0")) == [
        frozenset({"Apache-2.0", "CC0-1.0"}), frozenset({"CC0-1.0", "MIT"})]


def test_sharealike_data_needs_a_sharealike_model_license(tmp_path):
    root = forge(tmp_path)
    dataset(root, "CC-BY-SA-4.0", [{"license": "CC-BY-SA-4.0", "attribution": CREDIT}])
    inp = recipe(root, "Apache-2.0", ["dataset/sample@1"])
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert p.message == ("dataset dataset/sample@1 is under CC-BY-SA-4.0, a ShareAlike license, and the model's "
                         "license 'Apache-2.0' is not CC-BY-SA-4.0 or GPL-3.0-only or GPL-3.0-or-later")
    assert p.line == line_of(root, inp, "license: Apache-2.0")
    for ok in ("CC-BY-SA-4.0", "GPL-3.0-or-later"):
        result = run(root, recipe(root, ok, ["dataset/sample@1"]))
        assert result.outcome == "passed", result.problems
        assert result.details["attributions"] == {"dataset/sample@1": ["s0"]}


def test_a_pull_request_is_judged_by_the_base_policy_not_its_own(tmp_path):
    base = forge(tmp_path / "base")
    head = forge(tmp_path / "head")
    loosened = yaml.safe_load((head / POLICY).read_text())
    loosened["refused"] = []
    loosened["families"].append({"name": "anything", "reason": "trust me", "patterns": [".*"]})
    write_yaml(head / POLICY, loosened)
    inp = dataset(head, "CC-BY-NC-4.0", [{"license": "CC-BY-NC-4.0", "attribution": CREDIT}])
    assert check_licenses(inp).outcome == "passed"  # by its own policy
    judged = check_licenses(CheckInput(root=head, ref=inp.ref, path=inp.path, base_root=base))
    assert judged.outcome == "failed" and "NonCommercial" in judged.problems[0].message
    assert Policy.load(REPO).judge("GPL-3.0-only").share_alike
