"""The one owner of every path inside a results directory.

::

    RUN/                               RunLayout(RUN)
      deft_state.json  loop_log.jsonl  .deft.lock  mining_ledger.json
      DEFT_Loop_Report.html  best_model.json  best_model_inference_spec.yaml
      pipeline_summary.json  task_errors.jsonl
      baseline/{train,inference,rca_results}/
      iter<N>/{routing_results,sdg,mining_filter,dataset,train,inference,rca_results}/
      automl_phase1/                   SearchLayout: automl_result.json, leaderboard.csv,
      final_automl/                      automl_report.html, trials/, journals, .search.lock
      kfp/                             kfp.local's pipeline root (artifacts)
      logs/                            automl-deft run: each task's whole output

Every file this project writes inside a run stores paths *relative to the run
directory* (:meth:`RunLayout.rel`), and reads them back with
:meth:`RunLayout.path`, so a run directory can be moved or copied and still
works: the report, resume and the deliverable. Paths outside the run (the
workspace's CSVs and images) stay absolute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from automl_deft.errors import WorkspaceError
from automl_deft.phases import Phase
from automl_deft.workspace import is_absolute, relative_image_dir

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RcaFiles",
    "RunLayout",
    "SearchLayout",
    "TrainFiles",
    "rebase_into_run",
    "relocated_rows",
    "was_moved",
]


class TrainFiles:
    """The files of one training folder (``RUN/<label>/train``, a trial's folder)."""

    BEST = "best_val.pt"
    LATEST = "latest.pt"
    SPEC = "spec.yaml"


class RcaFiles:
    """The files of an RCA folder (``RUN/<label>/rca_results``)."""

    GAPS = "kpi_gaps.parquet"
    WEAK = "weak_samples.csv"
    THRESHOLD = "threshold.txt"
    METRICS = "metrics.json"
    BREAKDOWN = "breakdown.json"
    SUMMARY = "rca_summary.md"
    UNREACHABLE = "unreachable_kpi.txt"


@dataclass(frozen=True)
class SearchLayout:
    """The files of one search (Phase 1 or Phase 3, or a standalone ``automl`` run)."""

    root: Path

    RESULT = "automl_result.json"
    LEADERBOARD = "leaderboard.csv"
    REPORT = "automl_report.html"
    PROBLEM = "search_problem.json"
    OPTUNA_JOURNAL = "optuna_journal.log"
    KATIB_STATE = "katib_experiment.json"
    KATIB_MANIFEST = "katib_experiment.yaml"
    TRIALS = "trials"
    INFERENCE = "inference"
    LOCK = ".search.lock"
    """Held (``flock``) by the process running the search; a second one is refused."""

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def phase(self) -> Phase | None:
        """Which phase of a run this search is (by its folder name), None when standalone."""
        for phase in (Phase.PHASE1, Phase.PHASE3):
            if self.root.name == phase.results_folder:
                return phase
        return None

    @property
    def study_name(self) -> str:
        """``<run>-phase1`` / ``<run>-phase3`` in a run, else ``<parent>-<folder>``."""
        phase = self.phase
        return f"{self.root.parent.name}-{phase.value if phase else self.root.name}"

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    def trial_dir(self, rec_id: str) -> Path:
        """``trials/<rec_id>/``: one trial's spec, checkpoints and ``trial.json``."""
        return self.root / self.TRIALS / rec_id

    @property
    def inference(self) -> Path:
        """Phase 3: where its winner is scored on the KPI set."""
        return self.root / self.INFERENCE


@dataclass(frozen=True)
class RunLayout:
    """Every path inside one run directory (``RUN``)."""

    root: Path

    STATE = "deft_state.json"
    LOG = "loop_log.jsonl"
    LOCK = ".deft.lock"
    LEDGER = "mining_ledger.json"
    REPORT = "DEFT_Loop_Report.html"
    DELIVERABLE = "best_model.json"
    INFERENCE_SPEC = "best_model_inference_spec.yaml"
    SUMMARY = "pipeline_summary.json"
    TASK_ERRORS = "task_errors.jsonl"
    KFP_ROOT = "kfp"
    LOGS = "logs"
    """``automl-deft run``: each task's whole output (``<task>.log``)."""
    HOLDOUT = "holdout"
    """Finalize's hold-out scores, one CSV per step (nothing else reads the hold-out)."""

    # stage folders of an iteration
    TRAIN = "train"
    INFERENCE = "inference"
    RCA = "rca_results"
    ROUTING = "routing_results"
    SDG = "sdg"
    MINING = "mining_filter"
    DATASET = "dataset"
    KPI_SCORES = "kpi_scores.csv"
    DATASET_MANIFEST = "manifest.json"
    """The manifest next to a published Dataset artifact's CSV."""

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> RunLayout:
        return cls(Path(root))

    # --- run-level files --------------------------------------------------------------------

    @property
    def state(self) -> Path:
        return self.root / self.STATE

    @property
    def log(self) -> Path:
        return self.root / self.LOG

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    @property
    def ledger(self) -> Path:
        return self.root / self.LEDGER

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def deliverable(self) -> Path:
        return self.root / self.DELIVERABLE

    @property
    def inference_spec(self) -> Path:
        return self.root / self.INFERENCE_SPEC

    @property
    def summary(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def task_errors(self) -> Path:
        return self.root / self.TASK_ERRORS

    @property
    def kfp_root(self) -> Path:
        return self.root / self.KFP_ROOT

    @property
    def logs(self) -> Path:
        return self.root / self.LOGS

    def holdout_scores(self, label: str) -> Path:
        """``RUN/holdout/<label>_scores.csv``: ``label``'s model on the untouched hold-out."""
        return self.root / self.HOLDOUT / f"{label}_scores.csv"

    def search(self, phase: Phase | str) -> SearchLayout:
        """The folder of a search phase (``automl_phase1`` / ``final_automl``)."""
        return SearchLayout(self.root / Phase(phase).results_folder)

    # --- iterations --------------------------------------------------------------------------

    def stage_dir(self, label: str, *parts: str) -> Path:
        """``RUN/<label>/<parts…>`` (e.g. ``stage_dir("iter1", "train")``)."""
        return self.root.joinpath(label, *parts)

    @staticmethod
    def combined_name(n: int) -> str:
        """``train_combined_iter<n>.csv``: iteration n's assembled training set."""
        return f"train_combined_iter{n}.csv"

    @staticmethod
    def provenance_name(n: int) -> str:
        """``train_combined_iter<n>_provenance.csv``: where each of its rows came from."""
        return f"train_combined_iter{n}_provenance.csv"

    def sdg_images(self, label: str) -> Path:
        return self.stage_dir(label, self.DATASET, "images", self.SDG)

    @property
    def final_inference(self) -> Path:
        """Phase 3's winner scored on the KPI set (``final_automl/inference``)."""
        return self.search(Phase.PHASE3).inference

    # --- relative paths -----------------------------------------------------------------------

    def rel(self, path: str | os.PathLike[str] | None) -> str | None:
        """``path`` as stored in a file: relative (POSIX) when inside the run, else absolute."""
        if path is None:
            return None
        p = Path(path)
        if not p.is_absolute():
            return PurePosixPath(*p.parts).as_posix()
        # As written and with symlinks / ``..`` resolved, on either side.
        for where in (Path(os.path.abspath(p)), p.resolve()):
            for root in (Path(os.path.abspath(self.root)), self.root.resolve()):
                if where.is_relative_to(root):
                    return PurePosixPath(*where.relative_to(root).parts).as_posix() or "."
        return str(p)

    def path(self, stored: str | os.PathLike[str]) -> Path:
        """A stored path back to a usable one (relative ones are under this run)."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def maybe_path(self, stored: str | os.PathLike[str] | None) -> Path | None:
        return None if stored is None else self.path(stored)


def rebase_into_run(
    images_dir: str | os.PathLike[str],
    rel_dir: str,
    created_in: str | os.PathLike[str] | None,
    root: str | os.PathLike[str],
) -> Path:
    """The directory a CSV row's ``input_path``/``golden_path`` names, in a moved run.

    Generated images live inside the run directory and the training CSVs name them
    relative to the workspace images root (:func:`automl_deft.workspace.relative_image_dir`,
    often with ``..``), so after the run directory is moved they point into its old
    location. A directory inside ``created_in`` (the run's absolute location when it was
    created) is mapped to the same place under ``root``; any other is returned as is.

    Args:
        images_dir: the workspace images root.
        rel_dir: the row's ``input_path`` or ``golden_path`` (a relative directory).
        created_in: ``results_dir`` as recorded at creation (``DeftState.created_in``).
        root: the run directory now.

    Raises:
        WorkspaceError: ``rel_dir`` is absolute (CSV paths are relative to the images root).
    """
    if is_absolute(rel_dir):
        raise WorkspaceError(
            f"path {rel_dir!r} is absolute; CSV paths must be directories relative to the "
            f"images root ({images_dir})"
        )
    # relative_image_dir wrote the path from the resolved images root, lexically.
    directory = Path(os.path.normpath(Path(images_dir).resolve() / rel_dir))
    if created_in is None:
        return directory
    try:
        inner = directory.relative_to(Path(os.path.normpath(created_in)))
    except ValueError:
        return directory
    return Path(root) / inner


def was_moved(created_in: str | os.PathLike[str] | None, root: str | os.PathLike[str]) -> bool:
    """True when the run in ``root`` was created elsewhere (``created_in``)."""
    if created_in is None:
        return False
    return Path(os.path.normpath(created_in)) != Path(os.path.normpath(Path(root).resolve()))


def relocated_rows(
    frame: pd.DataFrame,
    images_dir: str | os.PathLike[str],
    created_in: str | os.PathLike[str] | None,
    root: str | os.PathLike[str],
) -> pd.DataFrame:
    """``frame`` with rows that name images inside a moved run pointed at its new place.

    A run's assembled training sets name generated images relative to the workspace
    images root (the workspace format), so the names point into the run's original
    location (``created_in``). Read through this, a moved or copied run trains,
    resumes and publishes its data from where it is now. Unmoved runs (and rows
    outside the run) come back unchanged.
    """
    if created_in is None or not was_moved(created_in, root):
        return frame
    out = frame.copy()
    for column in ("input_path", "golden_path"):
        out[column] = [
            _relocated(images_dir, rel, created_in, root) for rel in frame[column].astype(str)
        ]
    return out


def _relocated(
    images_dir: str | os.PathLike[str],
    rel_dir: str,
    created_in: str | os.PathLike[str],
    root: str | os.PathLike[str],
) -> str:
    directory = rebase_into_run(images_dir, rel_dir, created_in, root)
    original = Path(os.path.normpath(Path(images_dir).resolve() / rel_dir))
    return rel_dir if directory == original else relative_image_dir(images_dir, directory)
