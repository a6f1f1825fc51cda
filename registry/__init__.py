"""The commonforge registry: typed entries, refs, the artifact store and lineage.

Light on purpose: importing it never imports torch, transformers, mlflow or dvc, so
verifying and browsing the registry works on a machine that will never run a model.
Identity (digests, refs, manifests and the records beside them): docs/architecture.md.
"""

from registry.catalog import Registry
from registry.refs import Ref
from registry.schema import (
    BuildManifest,
    Dataset,
    EvaluationRecord,
    ProvenanceRecord,
    Recipe,
    Release,
)
from registry.store import Store

__all__ = [
    "BuildManifest",
    "Dataset",
    "EvaluationRecord",
    "ProvenanceRecord",
    "Recipe",
    "Registry",
    "Ref",
    "Release",
    "Store",
]
