"""``explore``: the Streamlit explorer on 127.0.0.1, with every telemetry switch off.

Streamlit reads ``.streamlit/config.toml`` only from its working directory, so the settings
that keep it private go on its command line as flags (and into its environment through
:func:`commonforge.settings.apply`): bound to 127.0.0.1 (which also skips its external-IP
lookup), usage statistics off, headless, no file watcher. The server is a child process;
this command prints the address once it answers and waits for it (Ctrl+C stops both).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from commonforge.cli.command import add_command

HOST = "127.0.0.1"
DEFAULT_PORT = 8501


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "explore", cmd_explore,
                    "browse releases, datasets and evaluations in a local Streamlit app (read-only)",
                    "Start the explorer on http://127.0.0.1:PORT: every release with its status, "
                    "reproducibility, scores, card, architecture, training curves, lineage and artifacts; every "
                    "dataset with its datasheet, statistics and a full-text document browser; two releases "
                    "compared. It never changes the registry. Bound to 127.0.0.1, telemetry off.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--root", type=Path, default=None,
                   help="the checkout to browse (default: the one around the current directory)")


def app_path() -> Path:
    """The explorer's entry file, from the installed package (so --root can be any checkout)."""
    import explorer

    return Path(explorer.__file__).resolve().parent / "app.py"


def streamlit_command(app: Path, port: int) -> list[str]:
    return [
        # -P: the working directory (the checkout) is not put on sys.path, so the installed
        # explorer runs as one piece whichever directory the server starts in.
        sys.executable, "-P", "-m", "streamlit", "run", str(app),
        "--server.address", HOST,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", HOST,
        "--global.developmentMode", "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--client.toolbarMode", "minimal",
        "--logger.level", "warning",
    ]


def wait_until_ready(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll Streamlit's health endpoint on 127.0.0.1 until it answers (or the child exits)."""
    import urllib.request

    url = f"http://{HOST}:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def cmd_explore(args: argparse.Namespace) -> int:
    from commonforge.errors import ForgeError, InputError
    from commonforge.settings import apply

    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port} is not a TCP port", hint="use a number from 1 to 65535, e.g. 8501")
    root = None
    if args.root is not None:
        root = Path(args.root).resolve()
        if not (root / "registry" / "entries").is_dir():
            raise InputError(f"{root} is not a commonforge checkout (no registry/entries in it)",
                             hint="point --root at your clone of the forge")
    settings = apply(root)
    env = dict(os.environ, COMMONFORGE_ROOT=str(settings.root))
    # Flags are what Streamlit honours from any directory; the environment says the same.
    env.update({"STREAMLIT_SERVER_ADDRESS": HOST, "STREAMLIT_SERVER_PORT": str(args.port),
                "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_HEADLESS": "true"})
    cmd = streamlit_command(app_path(), args.port)
    try:
        proc = subprocess.Popen(cmd, cwd=settings.root, env=env)
    except OSError as err:
        raise ForgeError(f"could not start Streamlit: {err}",
                         hint="is the project's venv complete? `make venv`") from None
    url = f"http://{HOST}:{args.port}"

    def _stop(signum, frame):  # SIGTERM (a service manager, a test) stops the server too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"commonforge explore: starting the explorer for {settings.root} on {url}", flush=True)
    try:
        if wait_until_ready(args.port, proc):
            print(f"commonforge explore: ready at {url}  (read-only; Ctrl+C to stop)", flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("commonforge explore: stopped", flush=True)
        return 0
    if code != 0:
        raise ForgeError(f"the Streamlit server exited with status {code}",
                         hint=f"is port {args.port} already in use? try --port {args.port + 1}")
    return 0
