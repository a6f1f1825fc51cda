"""No telemetry, no connection outside 127.0.0.1, in any Python process a command starts.

Later issues add their commands (build, eval, serve, explore) to this file.
"""

from __future__ import annotations

import configparser
import subprocess
import sys

import pytest

from commonforge.settings import PRIVACY_ENV
from tests.helpers import REPO, cli, forge_env
from tests.privacy.audit import audited_env, processes, unprotected_processes, violations


def test_the_audit_hook_catches_a_connection(tmp_path):
    env = audited_env(forge_env(tmp_path), tmp_path / "audit")
    code = ("import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
            "except Exception as e:\n    print(type(e).__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "PermissionError" in out.stdout
    assert violations(tmp_path / "audit")[0]["host"] == "192.0.2.1"


@pytest.mark.parametrize("command", [["validate"], ["list"], ["list", "recipe"], ["show", "recipe/forge-tiny@1"]])
def test_registry_commands_make_no_connection(tmp_path, command):
    audit = tmp_path / "audit"
    env = audited_env(forge_env(tmp_path), audit)
    for var in PRIVACY_ENV:
        env.pop(var, None)  # the forge must set them itself
    result = cli(*command, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert violations(audit) == []
    assert processes(audit), "the audit saw no Python process"
    assert unprotected_processes(audit) == []


def test_dvc_config_switches_analytics_and_updates_off():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config["core"]["analytics"] == "false"
    assert config["core"]["check_update"] == "false"


def test_streamlit_config_is_private_and_local():
    import tomllib

    data = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert data["browser"]["gatherUsageStats"] is False
    assert data["server"]["address"] == "127.0.0.1"


def test_settings_apply_to_children(tmp_path):
    code = ("from commonforge import settings; settings.apply(); import subprocess, sys; "
            "subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"MLFLOW_DISABLE_TELEMETRY\"], "
            "os.environ[\"HF_HOME\"])'])")
    env = forge_env(tmp_path)
    env.pop("HF_HOME")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    telemetry, hf_home = out.stdout.split()
    assert telemetry == "true" and hf_home == str(REPO / ".forge" / "hf")


@pytest.mark.parametrize("command", [["eval", "forge-tiny", "--tasks", "lambada", "--limit", "2"],
                                     ["card", "forge-tiny"], ["verify", "forge-tiny"]])
def test_model_commands_make_no_connection(tiny_forge, tmp_path, command):
    """eval, card and verify on the built tiny forge. The other commands are audited where they
    are tested: build in tests/pipelines/test_build.py, serve in tests/serving/test_api.py,
    explore in tests/explorer/test_browser.py, and all of them in tests/test_end_to_end.py."""
    audit = tmp_path / "audit"
    env = audited_env(tiny_forge.env, audit)
    for var in PRIVACY_ENV:
        env.pop(var, None)
    result = tiny_forge.cli(*command, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert violations(audit) == []
    assert processes(audit) and unprotected_processes(audit) == []
