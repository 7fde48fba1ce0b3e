"""The consolidated pre-flight: one summary, one gate, before anything with side effects.

:func:`build_preflight` computes the run's plan (:func:`automl_deft.plan.plan_run`),
looks at the workspace and the environment, and returns a :class:`Preflight` with
exactly nine sections, in this order:

1. Workspace & platform   2. Credentials          3. Container images
4. Datasets              5. Phase 1 (AutoML)     6. Phase 2 (DEFT)
7. Phase 3 (AutoML warm-started)                 8. Compute estimate
9. Confirmation

Problems that would stop the run later (leakage, missing files, the KPI set used
for validation, a config that cannot work) are collected in ``blocking``, one line
each with the fix; :attr:`Preflight.ok` is False while any remain. After the user
confirms, only the hard safety gates that section 9 names can stop the run.

Nothing here writes files but the workspace's image cache
(:data:`automl_deft.workspace.HASH_CACHE`, digests of the images it checked), and
credential *values* are never read: only whether each variable is set
(:func:`automl_deft.credentials.credential_status`). Every plug-in name the run
gives (search algorithm, backbone, SDG backend, mining embedder) is checked against
its registry (:mod:`~automl_deft.preflight.plugins`).
The same object renders for a terminal (:meth:`Preflight.text`), for the KFP
dashboard (:meth:`Preflight.markdown`) and as JSON (:meth:`Preflight.to_dict`).

Modules: :mod:`~automl_deft.preflight.model` (sections and their blocks),
:mod:`~automl_deft.preflight.render` (the summary and its text, Markdown and JSON),
:mod:`~automl_deft.preflight.probes` (docker and GPU),
:mod:`~automl_deft.preflight.environment` (sections 1–4),
:mod:`~automl_deft.preflight.run_sections` (sections 5–9, rendering the plan) and
:mod:`~automl_deft.preflight.plugins` (plug-in names against their registries).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from automl_deft.plan import PHASES, RunPlan, plan_run
from automl_deft.preflight.context import PHASE_NAMES, Context
from automl_deft.preflight.environment import (
    credentials_section,
    datasets_section,
    images_section,
    platform_section,
)
from automl_deft.preflight.model import SECTION_TITLES, Block, KeyValue, Note, Section, Table
from automl_deft.preflight.probes import (
    DOCKER_TIMEOUT_S,
    GPU_BATCH_RULE,
    IMAGE_STATUSES,
    MISSING,
    PRESENT,
    RULE_IMAGE_SIDE,
    RULE_TEXT,
    UNKNOWN,
    GpuInfo,
    ImageProbe,
    docker_image_probe,
    gpu_batch_limit,
    resolve_image_ref,
    visible_gpus,
)
from automl_deft.preflight.render import Preflight
from automl_deft.preflight.run_sections import (
    BASELINE_SOURCES,
    NO_TIME,
    compute_section,
    confirmation_section,
    phase1_section,
    phase2_section,
    phase3_section,
)
from automl_deft.run_config import RunConfig

__all__ = [
    "BASELINE_SOURCES",
    "DOCKER_TIMEOUT_S",
    "GPU_BATCH_RULE",
    "IMAGE_STATUSES",
    "MISSING",
    "NO_TIME",
    "PHASES",
    "PHASE_NAMES",
    "PRESENT",
    "RULE_IMAGE_SIDE",
    "RULE_TEXT",
    "SECTION_TITLES",
    "UNKNOWN",
    "Block",
    "GpuInfo",
    "ImageProbe",
    "KeyValue",
    "Note",
    "Preflight",
    "Section",
    "Table",
    "build_preflight",
    "docker_image_probe",
    "gpu_batch_limit",
    "render_plan",
    "resolve_image_ref",
    "visible_gpus",
]


def render_plan(
    plan: RunPlan,
    *,
    env: Mapping[str, str] | None = None,
    check_images: bool = True,
    image_probe: ImageProbe | None = None,
) -> Preflight:
    """The nine sections for an already computed plan (see :func:`build_preflight`)."""
    # Looked up here, not imported into the section modules, so that patching
    # ``automl_deft.preflight.visible_gpus`` / ``docker_image_probe`` takes effect.
    ctx = Context(plan=plan, gpus=visible_gpus())
    if plan.spec_error is not None:
        ctx.block(plan.spec_error)
    if plan.resume_error is not None:
        ctx.block(plan.resume_error)
    if plan.settings_differ:
        ctx.warn(
            f"resuming {plan.results_dir}: its deft_state.json settings are used, not this "
            f"config's ({', '.join(plan.settings_differ)} differ); start a new results "
            "directory to change them"
        )
    sections = [
        platform_section(ctx),
        credentials_section(env),
        images_section(ctx, image_probe or docker_image_probe()),
        datasets_section(ctx, check_images),
        phase1_section(ctx, check_images=check_images),
        phase2_section(ctx),
        phase3_section(ctx),
        compute_section(ctx),
    ]
    sections.append(confirmation_section(ctx))
    return Preflight(sections=sections, blocking=ctx.blocking, warnings=ctx.warnings)


def build_preflight(
    workspace: str | os.PathLike[str],
    config: RunConfig,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    phases: Sequence[str] = PHASES,
    hpo_backend: str | None = None,
    env: Mapping[str, str] | None = None,
    check_images: bool = True,
    image_probe: ImageProbe | None = None,
) -> Preflight:
    """Look at everything a run depends on and summarise it in nine sections.

    Nothing is written (but the image cache) and nothing is started; credential values
    are never read.

    Args:
        workspace: the workspace root.
        config: the whole run's config.
        results_dir: the run's results directory; one holding ``deft_state.json`` is
            reported as a resumed run (default: a fresh timestamped directory).
        phases: the phases this pipeline runs (``automl``, ``deft``, ``phase3``);
            the sections of the others say they are skipped.
        hpo_backend: the search backend the pipeline uses (default: ``config.automl.backend``).
        env: the environment to check credentials in (default: ``os.environ``).
        check_images: decode every dataset image and compare content for leakage
            (slower); without it leakage is checked by row key only.
        image_probe: answers ``PRESENT``/``MISSING``/``UNKNOWN`` for a resolved image
            reference (default: :func:`docker_image_probe`).

    Returns:
        The summary; ``ok`` is False while ``blocking`` lists problems.

    Raises:
        UserError: ``phases`` names an unknown phase.
    """
    plan = plan_run(
        workspace,
        config,
        phases=tuple(phases),
        hpo_backend=hpo_backend,
        results_dir=results_dir,
    )
    return render_plan(plan, env=env, check_images=check_images, image_probe=image_probe)
