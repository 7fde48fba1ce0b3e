"""Names for the untyped data at the library's boundaries, one per kind of boundary.

Inside the library, data passed between our own functions is typed (frozen
dataclasses, :mod:`automl_deft.records`). What comes from, or goes to, the
outside world is a plain nested mapping until a record parses it; these
aliases say which outside world it belongs to, so a reader knows what may be
in it and who checks it:

- :data:`JSONObject`: a JSON object read from or written to a file, a YAML
  mapping of a user's config kept for a later parser (``automl.katib``,
  ``automl.search_space`` entries), or what a non-Kubernetes API takes or
  gives (KFP run arguments); a record or a typed config parses it right after
  reading.
- :data:`K8sObject`: a Kubernetes or Katib object (camelCase keys) as the API
  server sends or accepts it, or as a manifest YAML document holds it.
- :data:`SpecTree`: a training-spec / YAML document tree: ``Spec.to_dict()``,
  what :func:`automl_deft.model.spec.deep_merge` merges, and override dicts
  (nested, or with dotted keys such as ``{"train.optim.lr": 1e-3}``) from
  ``--set``, a config's ``pinned`` or a search's winning hyperparameters.
  :func:`automl_deft.model.spec.spec_from_dict` checks it strictly.
- :data:`Checkpoint`: a torch checkpoint payload (``state_dict``, ``spec``,
  ``arch``, ``epoch``, ``metrics``, …; see :mod:`automl_deft.model.checkpoint`),
  checked by :func:`automl_deft.model.checkpoint.load_checkpoint`.

This module imports nothing of the project, so every module may use it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Checkpoint", "JSONObject", "K8sObject", "SpecTree"]

JSONObject: TypeAlias = dict[str, Any]
"""A JSON object (or a user's YAML mapping) read from / written to a file or an API."""

K8sObject: TypeAlias = dict[str, Any]
"""A Kubernetes / Katib object as the API server sends or accepts it."""

SpecTree: TypeAlias = dict[str, Any]
"""A training-spec / YAML document tree, or an override dict merged onto one."""

Checkpoint: TypeAlias = dict[str, Any]
"""A torch checkpoint payload (:mod:`automl_deft.model.checkpoint`)."""
