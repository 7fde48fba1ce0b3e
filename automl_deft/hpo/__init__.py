"""The AutoML engine: one search space, Optuna locally, Katib on a cluster."""
