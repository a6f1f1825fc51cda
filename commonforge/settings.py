"""Paths and privacy defaults, resolved once and applied by every entry point.

The one module that reads the forge's configuration from environment variables; everything
else asks it (``Settings`` for a checkout's paths, the functions below for what needs none).

Every process the forge starts (the CLI, each DVC stage, the server, the explorer) calls
:func:`apply` before importing anything heavy. It

* sets the privacy variables in ``os.environ``, so they hold for this process *and every
  child it starts* (DVC's stage processes, Streamlit, lm-eval workers): Hugging Face offline,
  no MLflow / DVC / Streamlit telemetry, ``DO_NOT_TRACK``;
* points Hugging Face's home into the clone, so nothing lands in ``~/.cache``.

Paths (override with environment variables, e.g. in tests):

=====================  ==========================================  =========================
what                   default                                     variable
=====================  ==========================================  =========================
repository root        nearest parent of the cwd with registry/     ``COMMONFORGE_ROOT``
build outputs          ``<root>/build``                            (fixed: DVC tracks them)
artifact store         ``<root>/.forge/store``                     ``COMMONFORGE_STORE``
MLflow tracking        ``sqlite:///<root>/.forge/mlflow.db``       ``MLFLOW_TRACKING_URI``
Hugging Face home      ``<root>/.forge/hf``                        ``HF_HOME``
DVC remote (default)   ``$XDG_DATA_HOME/commonforge/dvc-remote``   ``COMMONFORGE_DVC_REMOTE``
source download cache  ``$XDG_CACHE_HOME/commonforge/sources``     ``COMMONFORGE_CACHE``
explorer's search idx  ``<root>/.forge/explorer``                  ``COMMONFORGE_EXPLORER_CACHE``
kernel tuning cache    ``$XDG_CACHE_HOME/commonforge/kernel_tuning.json``  ``COMMONFORGE_KERNEL_TUNING_CACHE``
server API key         none (no key asked)                         ``COMMONFORGE_API_KEY``
signing keys           ``$XDG_CONFIG_HOME/commonforge/keys``       ``COMMONFORGE_KEYS``
accepted policy pins   ``$XDG_CONFIG_HOME/commonforge/trust-pins.json``  ``COMMONFORGE_TRUST_PINS``
transparency log copy  ``$XDG_DATA_HOME/commonforge/log``          ``COMMONFORGE_LOG``
the user's registry    ``$XDG_DATA_HOME/commonforge/registry``     ``COMMONFORGE_USER_REGISTRY``
accepted checkpoints   ``$XDG_STATE_HOME/commonforge/log-state.json``  ``COMMONFORGE_LOG_STATE``
peers you added        ``$XDG_CONFIG_HOME/commonforge/peers.json``  ``COMMONFORGE_PEERS``
peer port              ``8470``                                    ``COMMONFORGE_PEER_PORT``
=====================  ==========================================  =========================

The DVC remote and the download cache live outside the clone on purpose: a second clone,
a rebuild in a temporary worktree and CI all reuse them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from commonforge.errors import InputError

# Variables that keep every dependency offline and quiet. Values are strings because they
# go into os.environ (and from there into every child process).
PRIVACY_ENV: dict[str, str] = {
    # Hugging Face: never reach a hub, never ping download counters.
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_EVALUATE_OFFLINE": "1",
    # MLflow: no telemetry look-up, no telemetry file.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # DVC: no analytics process, no updater.
    "DVC_NO_ANALYTICS": "1",
    "DVC_NO_UPDATE_CHECK": "1",
    # Streamlit reads STREAMLIT_<SECTION>_<KEY>; the CLI also passes these as flags.
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
    "STREAMLIT_SERVER_HEADLESS": "true",
    "STREAMLIT_GLOBAL_DEVELOPMENT_MODE": "false",
    # The generic opt-out many tools honour (Console Do Not Track).
    "DO_NOT_TRACK": "1",
    # Gradio/W&B style trackers some evaluation extras pull in.
    "WANDB_DISABLED": "true",
    "WANDB_MODE": "disabled",
    "GRADIO_ANALYTICS_ENABLED": "False",
}

ENTRIES_DIR = Path("registry") / "entries"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def find_root(start: Path | None = None) -> Path:
    """The repository root: ``COMMONFORGE_ROOT``, else the nearest parent holding registry/entries."""
    env = os.environ.get("COMMONFORGE_ROOT")
    if env:
        root = Path(env).resolve()
        if not (root / ENTRIES_DIR).is_dir():
            raise InputError(
                f"COMMONFORGE_ROOT={env} has no {ENTRIES_DIR} directory",
                hint="point COMMONFORGE_ROOT at a commonforge checkout, or unset it",
            )
        return root
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ENTRIES_DIR).is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    user = user_root()
    if (user / ENTRIES_DIR).is_dir():
        return user.resolve()  # no checkout here: the user's own registry stands alone
    raise InputError(
        f"{here} is not inside a commonforge checkout (no {ENTRIES_DIR} above it), and you have no registry "
        f"of your own yet ({user})",
        hint="cd into your commonforge clone, set COMMONFORGE_ROOT, or pull a model into your own registry "
        "with `commonforge pull REF --from URL`",
    )


def user_root() -> Path:
    """The user's own registry: pulled releases (and their store) live here, outside every checkout,
    so a pull never dirties a clone. Layered under the checkout when there is one, alone otherwise."""
    value = os.environ.get("COMMONFORGE_USER_REGISTRY")
    return Path(value) if value else _xdg("XDG_DATA_HOME", ".local/share") / "commonforge" / "registry"


def is_user_root(root: Path) -> bool:
    return Path(root).resolve() == user_root().resolve()


@dataclass(frozen=True)
class Settings:
    """Resolved paths of one checkout. Build with :meth:`Settings.load`."""

    root: Path
    store_dir: Path
    mlflow_uri: str
    hf_home: Path
    dvc_remote: Path
    source_cache: Path
    explorer_cache: Path  # the explorer's search index and other derived tables

    @property
    def entries_dir(self) -> Path:
        return self.root / ENTRIES_DIR

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def state_dir(self) -> Path:
        """Local, unversioned state of this clone (store, MLflow db, HF home)."""
        return self.root / ".forge"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.state_dir / "mlartifacts"

    def layer(self, root: Path | None) -> Settings:
        """The settings of the registry layer ``root`` (this checkout's, or the user registry's:
        its store is its own) - ``self`` when ``root`` is this checkout or None."""
        if root is None or Path(root).resolve() == self.root:
            return self
        return Settings.load(root)

    @classmethod
    def load(cls, root: Path | None = None) -> Settings:
        root = (root or find_root()).resolve()
        state = root / ".forge"
        env = os.environ
        return cls(
            root=root,
            # The user registry keeps its store inside it; COMMONFORGE_STORE is a checkout's.
            store_dir=(state / "store" if is_user_root(root) else Path(env.get("COMMONFORGE_STORE") or state / "store")
                       ).resolve(),
            mlflow_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow.db'}",
            hf_home=Path(env.get("HF_HOME") or state / "hf").resolve(),
            dvc_remote=Path(
                env.get("COMMONFORGE_DVC_REMOTE")
                or _xdg("XDG_DATA_HOME", ".local/share") / "commonforge" / "dvc-remote"
            ).resolve(),
            source_cache=Path(
                env.get("COMMONFORGE_CACHE")
                or _xdg("XDG_CACHE_HOME", ".cache") / "commonforge" / "sources"
            ).resolve(),
            explorer_cache=Path(env.get("COMMONFORGE_EXPLORER_CACHE") or state / "explorer").resolve(),
        )

    def environ(self) -> dict[str, str]:
        """The variables this checkout's processes run with (privacy + paths).

        The root is not exported: a child (a stage in a temporary rebuild worktree) finds
        its own checkout from its working directory.
        """
        return {
            **PRIVACY_ENV,
            "HF_HOME": str(self.hf_home),
            "HF_DATASETS_CACHE": str(self.hf_home / "datasets"),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "COMMONFORGE_STORE": str(self.store_dir),
            "COMMONFORGE_DVC_REMOTE": str(self.dvc_remote),
            "COMMONFORGE_CACHE": str(self.source_cache),
        }


# --- what needs no checkout ---------------------------------------------------------------

API_KEY_ENV = "COMMONFORGE_API_KEY"
KERNEL_TUNING_ENV = "COMMONFORGE_KERNEL_TUNING_CACHE"


def kernel_tuning_cache() -> Path:
    """The Triton kernels' tuning cache (per user and machine: a tuned config belongs to a GPU)."""
    value = os.environ.get(KERNEL_TUNING_ENV)
    return Path(value) if value else _xdg("XDG_CACHE_HOME", ".cache") / "commonforge" / "kernel_tuning.json"


def api_key() -> str | None:
    """The key ``commonforge serve`` asks of clients when ``--api-key`` is not given (None: no key)."""
    return os.environ.get(API_KEY_ENV) or None


def keys_dir(config_home: Path | None = None) -> Path:
    """Where a user's signing keys live: per user, never in a repository (``trust.keys`` refuses one).

    ``COMMONFORGE_KEYS``, else under ``$XDG_CONFIG_HOME`` (``~/.config``); with ``config_home``, under that
    configuration directory instead (``trust.keys.keys_dir``: the one place the layout is spelled).
    """
    if config_home is not None:
        return Path(config_home) / "commonforge" / "keys"
    value = os.environ.get("COMMONFORGE_KEYS")
    return Path(value) if value else keys_dir(_xdg("XDG_CONFIG_HOME", ".config"))


def trust_pins() -> Path:
    """The governance policy versions this user has accepted (trust on first use, no rollback)."""
    value = os.environ.get("COMMONFORGE_TRUST_PINS")
    return Path(value) if value else _xdg("XDG_CONFIG_HOME", ".config") / "commonforge" / "trust-pins.json"


def log_dir() -> Path:
    """This machine's copy of the forge's transparency log (the operator's, or one pulled from a peer)."""
    value = os.environ.get("COMMONFORGE_LOG")
    return Path(value) if value else _xdg("XDG_DATA_HOME", ".local/share") / "commonforge" / "log"


def log_state() -> Path:
    """The newest log checkpoint this user accepted, per log (so a rollback or a fork is refused)."""
    value = os.environ.get("COMMONFORGE_LOG_STATE")
    return Path(value) if value else _xdg("XDG_STATE_HOME", ".local/state") / "commonforge" / "log-state.json"


def peers_file() -> Path:
    """The peers this user added (and what each last showed): ``commonforge peers add|list|remove|sync``."""
    value = os.environ.get("COMMONFORGE_PEERS")
    return Path(value) if value else _xdg("XDG_CONFIG_HOME", ".config") / "commonforge" / "peers.json"


def peer_port(default: int = 8470) -> int:
    """The port ``commonforge peer serve`` listens on unless ``--port`` says (``COMMONFORGE_PEER_PORT``)."""
    value = os.environ.get("COMMONFORGE_PEER_PORT")
    if not value:
        return default
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise InputError(f"COMMONFORGE_PEER_PORT={value!r} is not a port number",
                         hint="set it to a number from 1 to 65535 (0: any free port), or unset it")
    return port


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only (the privacy default)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def triton_interpreter() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, the tests' setting)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def output_columns(default: int = 200) -> int:
    """Width of text written to a pipe or file (``COLUMNS``); a terminal reports its own."""
    try:
        return int(os.environ.get("COLUMNS") or default)
    except ValueError:
        return default


def apply_privacy() -> None:
    """Switch off every dependency's telemetry for this process and its children.

    Needs no checkout: safe to call first thing in any entry point.
    """
    os.environ.update(PRIVACY_ENV)


def apply(root: Path | None = None) -> Settings:
    """Resolve the checkout's settings and apply them to ``os.environ``; returns them.

    Call before importing torch, transformers, datasets, mlflow, dvc or streamlit.
    """
    apply_privacy()
    settings = Settings.load(root)
    os.environ.update(settings.environ())
    return settings
