"""What every section builder shares: the run plan, the GPUs, and the problems found so far."""

from __future__ import annotations

from dataclasses import dataclass, field

from automl_deft.phases import Phase
from automl_deft.plan import PHASES, RunPlan
from automl_deft.preflight.probes import GpuInfo
from automl_deft.preflight.render import join
from automl_deft.workspace import Workspace

PHASE_NAMES: dict[str, str] = {
    "automl": "Phase 1 (AutoML)",
    "deft": "Phase 2 (DEFT)",
    "phase3": "Phase 3 (AutoML warm-started)",
}
"""The pipeline phases by the names the sections use."""

_NAME_OF: dict[Phase, str] = dict(zip(Phase, PHASES, strict=True))


@dataclass
class Context:
    """The inputs of the section builders and what they found.

    Attributes:
        plan: the run's decisions (the sections render them, never re-derive them).
        gpus: the GPUs this machine sees.
        blocking: problems that stop the run (each once, in the order found).
        warnings: things worth knowing (each once).
    """

    plan: RunPlan
    gpus: list[GpuInfo]
    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ws(self) -> Workspace:
        return self.plan.workspace

    def block(self, *problems: str) -> None:
        for problem in problems:
            if problem not in self.blocking:
                self.blocking.append(problem)

    def warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def skipped(self) -> str:
        names = [PHASE_NAMES[_NAME_OF[p]] for p in self.plan.phases]
        return f"skipped (this pipeline runs {join(names)} only)"
