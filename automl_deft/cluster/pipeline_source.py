"""Where the pipelines come from: the source tree, not the installed distribution.

``pipelines/`` (wiring) and ``components/`` (thin KFP definitions) sit at the
repository root next to ``automl_deft/`` and are not installed with the library:
as top-level packages they would put two generic names into the user's
environment, where another ``pipelines`` or ``components`` may live. Pods never
import them either: KFP ships each component's function source inside the
compiled spec, and only the library runs in the image.

The commands that build a pipeline (``run``, ``compile``, and ``submit`` /
``schedule`` without ``--package``) load them from the source tree that this
``automl_deft`` is imported from:

- a checkout: ``pip install -e .`` (``make setup``), or the repository root on
  ``sys.path`` (``python -m pytest``, ``python -m automl_deft.cli``);
- the component image: ``/opt/automl-deft`` is such a tree, installed the same way
  (``docker/Dockerfile``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import automl_deft
from automl_deft.errors import UserError

__all__ = ["SOURCE_PACKAGES", "load_pipelines", "source_root"]

SOURCE_PACKAGES = ("components", "pipelines")
"""The repository-root packages a pipeline is built from (``pipelines`` imports ``components``)."""


def source_root() -> Path:
    """The directory that holds the ``automl_deft/`` package this process imported."""
    return Path(automl_deft.__file__).resolve().parents[1]


def load_pipelines(root: str | os.PathLike[str] | None = None) -> ModuleType:
    """The ``pipelines`` package of the source tree ``root`` (default: :func:`source_root`).

    ``root`` goes first on ``sys.path``, so ``pipelines`` and ``components`` import
    from it; each is then checked to come from ``root`` (not a same-named package
    imported earlier or installed elsewhere).

    Raises:
        UserError: ``root`` has no ``pipelines/`` and ``components/`` (automl-deft
            installed from a wheel), or another package of that name shadows them.
    """
    tree = Path(root).resolve() if root is not None else source_root()
    missing = [name for name in SOURCE_PACKAGES if not (tree / name / "__init__.py").is_file()]
    if missing:
        raise UserError(
            f"{tree} has no {' or '.join(f'{name}/' for name in missing)} next to "
            "automl_deft/: the pipeline definitions are not part of the installed package; "
            "run automl-deft from a checkout (pip install -e .) or in the component image"
        )
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    for name in SOURCE_PACKAGES:
        module = importlib.import_module(name)
        origin = Path(module.__file__ or "").resolve()
        if not origin.is_relative_to(tree / name):
            raise UserError(
                f"`{name}` imports from {origin.parent}, not from {tree / name}: another "
                f"package named {name!r} shadows automl-deft's; uninstall it or use a "
                "separate environment"
            )
    return sys.modules["pipelines"]
