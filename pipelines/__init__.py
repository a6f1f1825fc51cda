"""The build: one module per DVC stage (``python -m pipelines.<stage> ...``) and its helpers."""
