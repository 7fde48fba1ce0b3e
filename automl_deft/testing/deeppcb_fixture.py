"""A tiny download in DeepPCB's exact on-disk format, for importer tests.

Layout written under ``root``::

    PCBData/trainval.txt, PCBData/test.txt
    PCBData/groupGGGGG/GGGGG/SSSSSSSS_test.jpg   tested image (defects painted in)
    PCBData/groupGGGGG/GGGGG/SSSSSSSS_temp.jpg   template
    PCBData/groupGGGGG/GGGGG_not/SSSSSSSS.txt    ``x1 y1 x2 y2 type`` per defect

Images are 640x640 8-bit grayscale JPEGs of a binarised pattern (pads and
traces). Pair 0 has a box hugging the image corner and one wider than 64 px;
pair 1's annotation uses commas (as DeepPCB's readme shows); pair 2's has blank
lines and trailing whitespace.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 640
GROUPS: tuple[str, ...] = ("00041", "12000")
"""Group numbers (two real DeepPCB group names); pairs alternate between them."""

CELL = 128
"""Boxes sit in distinct cells of a 5x5 grid, so they never overlap."""

ADDS_COPPER = frozenset({2, 4, 5})
"""Type ids painted as extra copper (short, spur, copper); the rest remove copper."""

SPECIAL_CELLS = frozenset({0, 11})
"""Cells the corner box and the oversize box of pair 0 occupy."""

COMMA_PAIR = 1
BLANK_LINES_PAIR = 2


def make_deeppcb_fixture(
    root: str | os.PathLike[str], *, n_trainval: int = 6, n_test: int = 3, seed: int = 0
) -> Path:
    """Write a small DeepPCB tree under ``root`` and return ``root`` (the folder holding
    ``PCBData/``).

    Args:
        root: where to write (created when missing).
        n_trainval: pairs listed in ``trainval.txt``.
        n_test: pairs listed in ``test.txt``.
        seed: makes the pattern, the boxes and their types reproducible.
    """
    root = Path(root)
    data = root / "PCBData"
    lists: dict[str, list[str]] = {"trainval.txt": [], "test.txt": []}
    for i in range(n_trainval + n_test):
        num = GROUPS[i % len(GROUPS)]
        stem = f"{num}{i // len(GROUPS):03d}"
        img_dir = data / f"group{num}" / num
        ann_dir = data / f"group{num}" / f"{num}_not"
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)

        rng = np.random.default_rng([seed, i])
        boxes = _boxes(rng, special=i == 0)
        template, tested = _render(rng, boxes)
        template.save(img_dir / f"{stem}_temp.jpg", format="JPEG", quality=95)
        tested.save(img_dir / f"{stem}_test.jpg", format="JPEG", quality=95)

        sep = "," if i == COMMA_PAIR else " "
        lines = [sep.join(str(v) for v in box) for box in boxes]
        if i == BLANK_LINES_PAIR:
            lines = ["", *(f"{line}  \t" for line in lines), "", ""]
        (ann_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

        name = "trainval.txt" if i < n_trainval else "test.txt"
        lists[name].append(f"group{num}/{num}/{stem}.jpg group{num}/{num}_not/{stem}.txt")
    for name, entries in lists.items():
        (data / name).write_text("".join(f"{e}\n" for e in entries), encoding="utf-8")
    return root


def _boxes(rng: np.random.Generator, *, special: bool) -> list[tuple[int, int, int, int, int]]:
    """3–6 boxes ``(x1, y1, x2, y2, type)``, each in its own grid cell."""
    n = int(rng.integers(3, 7))
    per_row = SIZE // CELL
    boxes = []
    if special:
        # One box hugging the corner (its crop must be clamped) in cell 0, one wider
        # than a 64 px crop (severity "oversize") in cell 11.
        boxes = [(2, 3, 22, 25, 4), (CELL + 10, 2 * CELL + 40, CELL + 110, 2 * CELL + 60, 1)]
    free = [c for c in range(per_row**2) if not (special and c in SPECIAL_CELLS)]
    for cell in rng.choice(free, size=n - len(boxes), replace=False):
        cx, cy = (int(cell) % per_row) * CELL, (int(cell) // per_row) * CELL
        w, h = int(rng.integers(10, 41)), int(rng.integers(10, 41))
        x1 = cx + int(rng.integers(8, CELL - w - 8))
        y1 = cy + int(rng.integers(8, CELL - h - 8))
        boxes.append((x1, y1, x1 + w, y1 + h, int(rng.integers(1, 7))))
    return boxes


def _render(
    rng: np.random.Generator, boxes: list[tuple[int, int, int, int, int]]
) -> tuple[Image.Image, Image.Image]:
    """Template (pads and traces) and tested image (template plus painted defects)."""
    template = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(template)
    for _ in range(40):
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE))
        w, h = int(rng.integers(8, 40)), int(rng.integers(8, 40))
        draw.rectangle((x, y, x + w, y + h), fill=255)
    for _ in range(30):
        x, y = int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE))
        if rng.random() < 0.5:
            end = (int(rng.integers(0, SIZE)), y)
        else:
            end = (x, int(rng.integers(0, SIZE)))
        draw.line((x, y, *end), fill=255, width=int(rng.integers(3, 9)))
    # Make each defect visible: copper under a removal, bare board under an addition.
    for x1, y1, x2, y2, kind in boxes:
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=0 if kind in ADDS_COPPER else 255)
    tested = template.copy()
    paint = ImageDraw.Draw(tested)
    for x1, y1, x2, y2, kind in boxes:
        inset = (x1 + 2, y1 + 2, x2 - 3, y2 - 3)
        paint.ellipse(inset, fill=255 if kind in ADDS_COPPER else 0)
    return template, tested
