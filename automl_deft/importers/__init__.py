"""Importers: turn public datasets into AOI workspaces."""

from __future__ import annotations

from automl_deft.importers.deeppcb import DEFECT_TYPES, ImportSummary, import_deeppcb

__all__ = ["DEFECT_TYPES", "ImportSummary", "import_deeppcb"]
