"""The page's pictures, as inline PNGs: the progress chart, score histograms, sample strips
(generated, mined and flagged rows).

Matplotlib is used through a ``Figure`` with its own Agg canvas (never pyplot), so
rendering inside the loop leaves the process-wide backend alone.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl_deft.deft.report.html import img
from automl_deft.deft.report.load import PROVENANCE_MINED, PROVENANCE_SDG, Best
from automl_deft.deft.report.values import number
from automl_deft.errors import AutomlDeftError
from automl_deft.kpi import KPITarget, plot_score_distribution
from automl_deft.phases import FINAL_AUTOML
from automl_deft.workspace import SCORE_COLUMN, ImageNaming

__all__ = [
    "MAX_FLAGGED_PER_ITERATION",
    "MAX_SAMPLES_PER_ITERATION",
    "THUMB_PX",
    "flagged_caption",
    "pick_samples",
    "progress_chart",
    "sample_caption",
    "sample_figure",
    "score_histogram",
]

MAX_SAMPLES_PER_ITERATION = 8
"""Generated rows shown as thumbnails per iteration (half SDG, half mined when both exist)."""
MAX_FLAGGED_PER_ITERATION = 12
"""Rows flagged as likely label errors shown as thumbnails per iteration (the rest counted)."""
THUMB_PX = 128
"""Longest side of a thumbnail; keeps the page small whatever the image size."""

ImageOf = Callable[[pd.Series, str, str], Path]
"""(row, ``input_path``/``golden_path``, light) → the image file of that row."""


def progress_chart(
    points: Sequence[tuple[str, float]],
    target: KPITarget | None,
    best: Best | None,
    names: Mapping[str, str] | None = None,
) -> str:
    """FAR per step with the KPI target line and the best step starred (base64 PNG).

    Args:
        points: (iteration label, FAR %) in run order.
        target: the KPI target (a dashed line).
        best: the best step (a star).
        names: each label's reader's name (:func:`~.names.step_name`) for the axis and legend.
    """
    from matplotlib.figure import Figure

    shown = dict(names or {})
    fig = _figure(Figure(figsize=(7.5, 3.8), dpi=100))
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    ys = [far for _, far in points]
    loop = [(x, y) for x, (lab, y) in zip(xs, points, strict=True) if lab != FINAL_AUTOML]
    if loop:
        ax.plot(
            *zip(*loop, strict=True),
            marker="o",
            color="tab:blue",
            label="Phase 1 winner → DEFT iterations",
        )
    for x, (lab, y) in zip(xs, points, strict=True):
        if lab == FINAL_AUTOML:
            ax.plot([x], [y], marker="s", color="tab:purple", linestyle="", label="Phase 3 AutoML")
        ax.annotate(f"{y:.2f}%", (x, y), textcoords="offset points", xytext=(0, 7), ha="center")
    if target is not None:
        ax.axhline(target.value_pct, color="tab:red", linestyle="--", label=f"target {target}")
    if best is not None and best.label in dict(points):
        bx = [lab for lab, _ in points].index(best.label)
        ax.plot(
            [bx],
            [best.far_pct],
            marker="*",
            markersize=18,
            color="gold",
            markeredgecolor="k",
            linestyle="",
            label=f"best ({shown.get(best.label, best.label)})",
        )
    ax.set_xticks(xs, [shown.get(lab, lab) for lab, _ in points])
    ax.set_xlabel("step of the run")
    ax.set_ylabel("FAR @ 100% recall, KPI set (%)")
    top = max([*ys, target.value_pct if target else 0.0])
    ax.set_ylim(0, top * 1.2 + 1e-9 if top > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return _png(fig)


def score_histogram(
    labels: pd.Series, scores: np.ndarray, threshold: float | None, title: str
) -> str:
    """PASS vs defect score histogram (:func:`automl_deft.kpi.plot_score_distribution`)."""
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "scores.png"
        plot_score_distribution(labels, scores, png, threshold=threshold, title=title)
        return base64.b64encode(png.read_bytes()).decode()


def pick_samples(prov: pd.DataFrame) -> pd.DataFrame:
    """Up to :data:`MAX_SAMPLES_PER_ITERATION` rows: half SDG, half mined when both exist."""
    sdg = prov[prov["source"] == PROVENANCE_SDG]
    mined = prov[prov["source"] == PROVENANCE_MINED]
    half = MAX_SAMPLES_PER_ITERATION // 2
    n_sdg = min(len(sdg), max(half, MAX_SAMPLES_PER_ITERATION - len(mined)))
    n_mined = min(len(mined), MAX_SAMPLES_PER_ITERATION - n_sdg)
    return pd.concat([sdg.head(n_sdg), mined.head(n_mined)])


def sample_figure(
    row: pd.Series,
    image_of: ImageOf,
    naming: ImageNaming,
    caption: Sequence[str] | None = None,
) -> str:
    """One row as a captioned PNG strip: input | golden | |diff|.

    Args:
        row: a CSV row (``input_path``, ``golden_path``, ``object_name``, …).
        image_of: the row's image file per column and light.
        naming: the run's image naming (its first light is shown).
        caption: the caption's lines (plain text); :func:`sample_caption` when None.
    """
    light = naming.lights[0] if naming.lights else ImageNaming().lights[0]
    test = _thumb(image_of, row, "input_path", light)
    golden = _thumb(image_of, row, "golden_path", light)
    side = THUMB_PX
    blank = np.full((side, side, 3), 200, dtype=np.uint8)
    diff = None
    if test is not None and golden is not None:
        delta = np.abs(test.astype(np.int16) - golden.astype(np.int16)).mean(axis=2)
        diff = _colorize(delta)
    gap = np.full((side, 4, 3), 255, dtype=np.uint8)
    panels = [blank if p is None else p for p in (test, golden, diff)]
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    lines = list(sample_caption(row) if caption is None else caption)
    if test is None or golden is None:
        lines.append("image missing")
    text = "<br>".join(escape(c) for c in lines)
    alt = f"{row.get('source', '')} {row.get('object_name', '')}: input, golden, difference"
    return f"<figure>{img(_png_array(strip), alt)}<figcaption>{text}</figcaption></figure>"


def sample_caption(row: pd.Series) -> list[str]:
    """A generated or mined row's caption: source and label, where it came from, its name.

    A mined row names the weak sample it resembles; a generated row its backend and, for
    a generated PASS pair, the independent PASS check it passed (``sdg_check``).
    """
    source = str(row.get("source", ""))
    caption = [f"{source} · {row.get('label', '')}"]
    if source == PROVENANCE_MINED and str(row.get("mined_similarity", "")):
        caption.append(f"similarity {row['mined_similarity']} to {row.get('mined_for', '?')}")
    elif source == PROVENANCE_SDG:
        if str(row.get("sdg_backend", "")):
            caption.append(f"backend {row['sdg_backend']}")
        if str(row.get("sdg_check", "")):
            caption.append(str(row["sdg_check"]))
    caption.append(str(row.get("object_name", "")))
    return caption


def flagged_caption(row: pd.Series, reason: str) -> list[str]:
    """A row flagged as a likely label error: label and source, name, why, score.

    Args:
        row: a ``hygiene_flagged.csv`` row.
        reason: its ``label_error_reason`` in a reader's words.
    """
    caption = [
        f"{row.get('label', '')} · {row.get('source', '')}",
        str(row.get("object_name", "")),
        f"reason: {reason or '—'}",
    ]
    score = number(row.get(SCORE_COLUMN))
    change = number(row.get("change_px"))
    measured = [] if score is None else [f"score {score:.4g}"]
    measured += [] if change is None else [f"change {change:.0f} px"]
    if measured:
        caption.append(" · ".join(measured))
    return caption


def _thumb(image_of: ImageOf, row: pd.Series, column: str, light: str) -> np.ndarray | None:
    """The row's image as a ``THUMB_PX`` square RGB array (None when unreadable)."""
    from PIL import Image

    try:
        with Image.open(image_of(row, column, light)) as image:
            rgb = image.convert("RGB")
    except (AutomlDeftError, OSError, KeyError, ValueError):
        return None
    scale = THUMB_PX / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    # Small AOI crops are enlarged without smoothing so single pixels stay visible.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    canvas = Image.new("RGB", (THUMB_PX, THUMB_PX), (255, 255, 255))
    canvas.paste(rgb.resize(size, resample), ((THUMB_PX - size[0]) // 2, (THUMB_PX - size[1]) // 2))
    return np.asarray(canvas)


def _colorize(delta: np.ndarray) -> np.ndarray:
    """A 0-255 difference map in the ``magma`` colour map, scaled to its own maximum."""
    from matplotlib import colormaps

    scaled = delta / max(float(delta.max()), 1.0)
    rgba = colormaps["magma"](scaled, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def _png_array(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(fig: Any) -> Any:
    """Attach the Agg canvas (no pyplot: the process-wide backend stays untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()
