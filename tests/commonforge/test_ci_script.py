"""The CI script is code too: it must parse, and it must end by running the README's test command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_ci_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ci_script_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = re.search(r"^(make test)\b", readme, flags=re.MULTILINE)
    assert quickstart, "README.md must give the test command in its quickstart"
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] == quickstart.group(1)
    # Exactly one invocation: the script must not run the suite twice or in pieces.
    assert sum(1 for line in lines if line.startswith("make test")) == 1
