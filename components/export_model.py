"""Component: the deliverable as a deployable package (the pipeline's optional last step)."""

from kfp.dsl import Model, Output


def export_model(results_dir: str, export_format: str, package: Output[Model]) -> str:
    """Export the run's deliverable (``onnx`` or ``torchscript``; ``none`` skips).

    The package directory (model file, ``package.json``, ``model_card.json``,
    ``MODEL_CARD.md``) is the ``package`` Model artifact; its metadata holds the
    threshold, the headline numbers and the card.

    Returns:
        The ``ExportOutcome`` record as JSON.
    """
    from automl_deft.steps import export_step

    outcome = export_step(results_dir, export_format, package.path)
    package.metadata.update(outcome.metadata())
    return outcome.dumps()
