"""Turn-taking evaluation tools: the dev/test set builder, baselines, metrics and tuning for `callgate eval-turns`.

A tools layer above processors/ and pipelines/: serving code never imports it.
"""
