"""The page's HTML: the inline style sheet, the document shell, tables, cells and number formats.

Everything is escaped here; a builder passes plain text, or :class:`Raw` for a cell
that is already HTML and :class:`Num` for a right-aligned number.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from automl_deft.deft.report.values import number
from automl_deft.kpi import format_far, format_threshold

__all__ = [
    "CSS",
    "NOT_YET",
    "Num",
    "Raw",
    "ci_text",
    "delta_html",
    "document",
    "duration",
    "far_ci",
    "fmt",
    "fmt_float",
    "img",
    "na",
    "pct",
    "ratio_pct",
    "share",
    "table",
    "thr",
]

NOT_YET = "Not yet available"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:72em;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff8dc}
.meta{color:#555;font-size:.9em}.na{color:#777;font-style:italic}
.good{color:#16803c}.bad{color:#b42318}
.banner{padding:.8em 1em;border-radius:6px;font-size:1.25em;font-weight:600;margin:1em 0}
.banner small{display:block;font-size:.7em;font-weight:400;margin-top:.3em}
.banner.met{background:#dcfce7;border:1px solid #16a34a}
.banner.gap{background:#fef3c7;border:1px solid #d97706}
.banner.progress{background:#dbeafe;border:1px solid #2563eb}
.banner.stopped{background:#fee2e2;border:1px solid #dc2626}
.banner.review{background:#ffedd5;border:1px solid #ea580c}
img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;
font-size:.8em;white-space:pre-wrap}code{font-size:.9em}
.flex{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}
.samples figure{margin:0 0 1em}figcaption{font-size:.75em;color:#444}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
.headline{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}
.card{flex:1 1 20em;border:1px solid #ccc;border-radius:6px;padding:.6em 1em}
.card h3{margin:.1em 0 .3em;font-size:1em}.card .big{font-size:1.6em;font-weight:600;margin:.2em 0}
.card.steering{background:#f8fafc}.card.holdout{background:#f0fdf4;border-color:#16a34a}
.card.none{background:#fff7ed;border-color:#ea580c}
.callout{border-left:5px solid #dc2626;background:#fef2f2;padding:.6em 1em;margin:1em 0}
.callout ul{margin:.3em 0}.scroll{overflow-x:auto}
""".strip()


def document(title: str, body: Sequence[str]) -> str:
    """The whole page: ``body`` (HTML fragments) under an inline style sheet, no script."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


class Raw(str):
    """A table cell that is already HTML."""

    __slots__ = ()


class Num(str):
    """A right-aligned (numeric) table cell."""

    __slots__ = ()


def table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[object]],
    *,
    row_classes: Sequence[str] | None = None,
    table_id: str | None = None,
) -> str:
    """An HTML table; ``headers`` None for a key/value table (first column as ``<th>``)."""
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and row_classes[i] else ""
        cells = "".join(
            f"<th>{escape(str(c))}</th>" if headers is None and j == 0 else _cell(c)
            for j, c in enumerate(row)
        )
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    id_attr = f' id="{escape(table_id)}"' if table_id else ""
    head = (
        ""
        if headers is None
        else "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>"
    )
    return f"<table{id_attr}>{head}<tbody>{''.join(body)}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    if isinstance(value, Num):
        return f'<td class="num">{escape(str(value))}</td>'
    return f"<td>{escape(str(value))}</td>"


def na(text: str) -> str:
    """A "not (yet) available" paragraph."""
    return f'<p class="na">{escape(text)}</p>'


def img(png_b64: str, alt: str, img_id: str | None = None) -> str:
    """An inline PNG (base64 ``data:`` URI)."""
    id_attr = f' id="{escape(img_id)}"' if img_id else ""
    return f'<img{id_attr} alt="{escape(alt)}" src="data:image/png;base64,{png_b64}">'


# --- number formats ------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """Any value as cell text: ``—`` for missing, 4 significant digits for a float."""
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return fmt_float(value)
    return str(value)


def fmt_float(value: Any) -> str:
    num = number(value)
    return "—" if num is None else f"{num:.4g}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def far_ci(far_pct: float | None, ci95: Sequence[float] | None = None) -> str:
    """``0.18% [0.00–0.55]`` (:func:`~automl_deft.kpi.format_far`); ``—`` when missing."""
    return "—" if far_pct is None else format_far(far_pct, ci95)


def ci_text(ci95: Sequence[float] | None) -> str:
    """``[0.00–0.55]`` (percent), ``—`` when there is no interval."""
    if ci95 is None or len(ci95) != 2:
        return "—"
    return f"[{ci95[0]:.2f}–{ci95[1]:.2f}]"


def ratio_pct(value: Any) -> str:
    """A 0–1 share as a whole percentage."""
    num = number(value)
    return "—" if num is None else f"{num * 100:.0f}%"


def share(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "—"
    return f"{part / whole * 100:.1f}%"


def thr(value: float | None) -> str:
    return "—" if value is None else format_threshold(value)


def delta_html(delta: float | None) -> str:
    """A signed pp change, green when it went down (better), red when up."""
    if delta is None:
        return "—"
    css = "good" if delta < 0 else "bad" if delta > 0 else ""
    return f'<span class="{css}">{delta:+.2f}</span>' if css else f"{delta:+.2f}"


def duration(seconds: float) -> str:
    """``42s``, ``11m``, ``1h05m``."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds // 3600:.0f}h{seconds % 3600 / 60:02.0f}m"
