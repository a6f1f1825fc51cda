"""Commands of the pull-request flow (being built: see contributions/)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Nothing registered yet."""
