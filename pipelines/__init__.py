"""The build: one module per DVC stage (``python -m pipelines.<stage> ...``) and its helpers.

Where every output lives and what a release holds: :mod:`pipelines.manifest`. The flow and the
layering: docs/architecture.md; the pins: docs/determinism.md.
"""
