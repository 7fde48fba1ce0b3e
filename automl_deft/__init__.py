"""automl-deft: AutoML + DEFT for PCB automated optical inspection."""

from __future__ import annotations

__version__ = "0.1.0"
