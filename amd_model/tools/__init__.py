"""AMD model tooling: everything not needed to serve calls (corpus builder, training, tuning, evaluation,
the Asterisk baseline). Serving code (amd_model.runtime, amd_model.features, amd_model.traces,
processors/, pipelines/) never imports this package; the CLI (callgate/commands) and scripts do."""
