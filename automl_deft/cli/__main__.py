"""``python -m automl_deft.cli``: the same as the ``automl-deft`` console script."""

from automl_deft.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
