"""commonforge: a forge for open, community-owned language models.

The packages and how they fit together: docs/architecture.md; what makes a build come out bit
for bit the same: docs/determinism.md.
"""

__version__ = "0.1.0"
