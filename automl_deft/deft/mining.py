"""Mining: pick labelled pool rows that resemble the model's weak samples.

For every target (a weak sample from RCA) the pool rows with the *same*
normalised label are searched for the ``top_k`` most similar by cosine
similarity of their embeddings (:mod:`automl_deft.deft.embedders`); those at or
above ``min_similarity`` are candidates. A pool row chosen by several targets is
kept once, attributed to its most similar target. Rows picked in an earlier
iteration (the :class:`MiningLedger`) are left out of the search itself, so a
target's ``top_k`` are its nearest rows *not yet mined*: when the yield falls,
the pool really is running out of similar rows.

The search is blocked (:func:`blocked_topk`): memory is
``O(queries x block_rows)``, never ``queries x pool``, so a pool of millions of
rows is searched in one pass over its embeddings.

The caller writes the assembled dataset first and only then records the
selection with :meth:`MiningLedger.commit`, so a crash between the two never
marks rows as mined that no dataset contains.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from automl_deft.errors import StageError
from automl_deft.io import atomic_write_json
from automl_deft.jsontypes import JSONObject
from automl_deft.workspace import leakage_keys, normalize_label

DEFAULT_TOP_K = 5
"""``mining.top_k_per_target`` of the original workflow."""
DEFAULT_MIN_SIMILARITY = 0.9
"""``mining.min_similarity`` of the original workflow (cosine)."""
DEFAULT_BLOCK_ROWS = 65536
"""Pool rows compared per block: 250 queries x 65536 rows is a 64 MiB float32 block."""

MINED_FOR = "mined_for"
"""Column of a mined row: ``object_name`` of the target it was mined for."""
MINED_SIMILARITY = "mined_similarity"
"""Column of a mined row: its cosine similarity to that target (4 decimals)."""

ROW_CHUNK = 64
"""Query rows ranked at a time inside a block: bounds the scratch copy ``np.partition`` makes."""

LEDGER_FORMAT = "automl-deft-mining-ledger"
LEDGER_VERSION = 1


def blocked_topk(
    queries: np.ndarray,
    pool: np.ndarray,
    k: int,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of every query among the pool rows, one block of rows at a time.

    Both arrays are expected L2-normalised (so the dot product is the cosine) and
    finite. Memory is ``O(q * block_rows + q * k)``: a ``q x len(pool)`` matrix is
    never built. Time is one matrix product per block plus, on all but the first
    blocks, mostly a single comparison pass (see :func:`_update`).

    Args:
        queries: ``(q, d)`` query embeddings.
        pool: ``(M, d)`` pool embeddings.
        k: neighbours per query; when fewer than ``k`` rows are searched, every
            searched row is returned (``k`` becomes their number).
        block_rows: pool rows compared per block.
        rows: optional pool row indices to search (a label group, the rows not
            yet mined); the other rows are skipped without being copied. Returned
            indices still refer to ``pool``.

    Returns:
        ``(similarities, indices)``, both ``(q, k)``: similarities ``float32``
        in descending order, indices ``int64`` into ``pool``. Equal similarities
        are ordered by lower pool index first.

    Raises:
        ValueError: on mismatched shapes, a negative ``k`` or ``block_rows < 1``.
    """
    queries = np.asarray(queries, dtype=np.float32)
    pool = np.asarray(pool, dtype=np.float32)
    if queries.ndim != 2 or pool.ndim != 2 or queries.shape[1] != pool.shape[1]:
        raise ValueError(
            f"queries {queries.shape} and pool {pool.shape} must be 2-D with the same width"
        )
    if k < 0 or block_rows < 1:
        raise ValueError(f"need k >= 0 and block_rows >= 1 (got k={k}, block_rows={block_rows})")
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
            rows = np.unique(rows)  # ascending order is what makes "lower index first" hold
    n = len(pool) if rows is None else len(rows)
    k = min(k, n)
    q = len(queries)
    # Running best, padded with -inf until k rows are seen (real similarities are finite).
    best_sim = np.full((q, k), -np.inf, dtype=np.float32)
    best_idx = np.full((q, k), np.iinfo(np.int64).max, dtype=np.int64)
    if k == 0 or q == 0:
        return best_sim, best_idx
    for start in range(0, n, block_rows):
        if rows is None:
            block = pool[start : start + block_rows]
            ids = np.arange(start, start + len(block), dtype=np.int64)
        else:
            ids = rows[start : start + block_rows]
            block = pool[ids]
        sims = queries @ block.T  # (q, b): the only block-sized buffer
        for r0 in range(0, q, ROW_CHUNK):
            rs = slice(r0, r0 + ROW_CHUNK)
            best_sim[rs], best_idx[rs] = _update(sims[rs], ids, best_sim[rs], best_idx[rs])
        del sims, block  # freed before the next block's product is allocated
    return best_sim, best_idx


def _update(
    sims: np.ndarray, ids: np.ndarray, best_sim: np.ndarray, best_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge one block's similarities ``(r, b)`` into the running top-k ``(r, k)`` of r rows.

    Only values strictly above a row's current k-th best can enter it (an equal
    value has a higher pool index than the one it ties with, since blocks come in
    index order). After the first blocks that is a tiny share of the block, so the
    usual cost is one comparison pass; a row with more than k such values is cut
    to its k largest (and everything tied with the k-th, so ties resolve exactly).
    """
    r, k = best_sim.shape
    b = sims.shape[1]
    above = sims > best_sim[:, -1:]
    counts = np.count_nonzero(above, axis=1)
    crowded = np.flatnonzero(counts > k)
    if len(crowded) == r:  # the first block, or a pool in rising order: rank every row
        above &= sims >= np.partition(sims, b - k, axis=1)[:, b - k : b - k + 1]
        counts = np.count_nonzero(above, axis=1)
    elif len(crowded):
        sub = sims[crowded]
        above[crowded] &= sub >= np.partition(sub, b - k, axis=1)[:, b - k : b - k + 1]
        counts[crowded] = np.count_nonzero(above[crowded], axis=1)
    rr, cc = np.divmod(np.flatnonzero(above), b)  # 1-D search: much faster than 2-D nonzero
    row = np.concatenate([np.repeat(np.arange(r), k), rr])
    sim = np.concatenate([best_sim.ravel(), sims[rr, cc]])
    idx = np.concatenate([best_idx.ravel(), ids[cc]])
    order = np.lexsort((idx, -sim, row))  # by row, then similarity down, then index up
    sizes = counts + k
    take = order[((np.cumsum(sizes) - sizes)[:, None] + np.arange(k)).ravel()]
    return sim[take].reshape(r, k), idx[take].reshape(r, k)


@dataclass
class MiningLedger:
    """Pool rows picked in earlier iterations (by leakage key), so none is picked twice.

    Stored as JSON ``{format, version, entries: {leakage_key: iteration}}``.
    """

    path: Path
    entries: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MiningLedger:
        """The ledger at ``path``; an empty one when the file does not exist yet.

        Raises:
            StageError: the file exists but is not a readable ledger.
        """
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StageError(
                f"mining ledger {path} cannot be read ({type(exc).__name__}); restore it "
                "from the previous iteration or delete it to allow re-mining every row"
            ) from exc
        entries = data.get("entries") if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("format") != LEDGER_FORMAT
            or not isinstance(entries, dict)
        ):
            raise StageError(
                f"{path} is not a mining ledger (no {LEDGER_FORMAT!r} header); point to the "
                "run's ledger or delete it to allow re-mining every row"
            )
        return cls(path, {str(k): int(v) for k, v in entries.items()})

    def save(self) -> None:
        """Write the ledger atomically."""
        atomic_write_json(
            self.path,
            {"format": LEDGER_FORMAT, "version": LEDGER_VERSION, "entries": self.entries},
        )

    def picked(self, keys: Iterable[str]) -> np.ndarray:
        """Boolean mask: True where a leakage key was picked in an earlier iteration."""
        return np.fromiter((k in self.entries for k in keys), dtype=bool)

    def add(self, keys: Iterable[str], iteration: int) -> None:
        """Record ``keys`` as picked in ``iteration`` (a key keeps its first iteration)."""
        for key in keys:
            self.entries.setdefault(key, iteration)

    def commit(self, result: MiningResult) -> None:
        """Record a mining result's rows and save; call after its dataset is written."""
        self.add(leakage_keys(result.rows), result.iteration)
        self.save()

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class MiningResult:
    """What one mining pass selected, and why."""

    rows: pd.DataFrame
    """Selected pool rows (pool columns, as strings) plus ``mined_for`` and
    ``mined_similarity``, in pool order."""
    per_label: dict[str, dict[str, int]]
    """Per targeted label: ``targets``, ``pool_rows`` (rows with that label),
    ``already_mined`` (of those, in the ledger), ``candidates`` (target-row pairs
    at or above the cutoff) and ``selected`` (distinct rows kept)."""
    warnings: list[str]
    iteration: int = 1
    top_k: int = DEFAULT_TOP_K
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    @property
    def selected(self) -> int:
        """Number of rows selected."""
        return len(self.rows)

    def to_dict(self) -> JSONObject:
        """A JSON-ready summary (everything but the rows)."""
        return {
            "iteration": self.iteration,
            "metric": "cosine",
            "top_k_per_target": self.top_k,
            "min_similarity": self.min_similarity,
            "targets": sum(v["targets"] for v in self.per_label.values()),
            "candidates": sum(v["candidates"] for v in self.per_label.values()),
            "selected": self.selected,
            "per_label": self.per_label,
            "warnings": list(self.warnings),
        }


def mine(
    targets: pd.DataFrame,
    target_emb: np.ndarray,
    pool: pd.DataFrame,
    pool_emb: np.ndarray,
    *,
    top_k: int = DEFAULT_TOP_K,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ledger: MiningLedger | None = None,
    iteration: int = 1,
    previous_selected: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> MiningResult:
    """Select pool rows similar to the targets, label by label.

    Args:
        targets: the weak samples to mine for (needs ``label`` and ``object_name``).
        target_emb: ``(len(targets), d)`` L2-normalised embeddings of ``targets``.
        pool: the labelled mining pool (a dataset CSV frame).
        pool_emb: ``(len(pool), d)`` L2-normalised embeddings of ``pool``.
        top_k: nearest pool rows considered per target.
        min_similarity: cosine cutoff; rows below it are not candidates.
        ledger: rows mined in earlier iterations; they are not searched. The
            ledger is not changed here: :meth:`MiningLedger.commit` the result
            once the dataset that contains it is written.
        iteration: the DEFT iteration (recorded with the result).
        previous_selected: rows selected by the previous iteration, for the
            yield warning.
        block_rows: pool rows compared per block (see :func:`blocked_topk`).

    Returns:
        The selected rows, per-label counts and warnings.

    Raises:
        StageError: embeddings that do not match their frames.
    """
    target_emb = _check_embeddings(target_emb, targets, "target")
    pool_emb = _check_embeddings(pool_emb, pool, "pool")
    if len(targets) and len(pool) and target_emb.shape[1] != pool_emb.shape[1]:
        raise StageError(
            f"target embeddings have {target_emb.shape[1]} dimensions, pool embeddings "
            f"{pool_emb.shape[1]}; embed both with the same embedder and checkpoint"
        )
    target_labels = _normalized_labels(targets)
    pool_labels = _normalized_labels(pool)
    pool_keys = leakage_keys(pool).to_numpy()
    mined_before = (
        ledger.picked(pool_keys) if ledger is not None else np.zeros(len(pool), dtype=bool)
    )

    per_label: dict[str, dict[str, int]] = {}
    warnings: list[str] = []
    hit_rows, hit_sims, hit_targets = [], [], []
    for label in sorted(set(target_labels)):
        queries = np.flatnonzero(target_labels == label)
        of_label = pool_labels == label
        searchable = np.flatnonzero(of_label & ~mined_before)
        stats = {
            "targets": len(queries),
            "pool_rows": int(of_label.sum()),
            "already_mined": int((of_label & mined_before).sum()),
            "candidates": 0,
            "selected": 0,
        }
        per_label[label] = stats
        if stats["pool_rows"] == 0:
            warnings.append(
                f"label {label!r}: 0 rows in the mining pool; nothing to mine — add pool data "
                "or rely on SDG"
            )
            continue
        if len(searchable) == 0:
            warnings.append(
                f"label {label!r}: all {stats['pool_rows']} pool rows were mined in earlier "
                "iterations; nothing left to mine — add pool data or rely on SDG"
            )
            continue
        sims, idx = blocked_topk(
            target_emb[queries], pool_emb, top_k, block_rows=block_rows, rows=searchable
        )
        keep = sims >= min_similarity
        stats["candidates"] = int(keep.sum())
        hit_rows.append(idx[keep])
        hit_sims.append(sims[keep])
        hit_targets.append(np.broadcast_to(queries[:, None], idx.shape)[keep])

    rows, sims, owners = _dedup(hit_rows, hit_sims, hit_targets, pool_keys)
    for label, count in zip(*np.unique(pool_labels[rows], return_counts=True), strict=True):
        per_label[str(label)]["selected"] = int(count)
    selected = pool.iloc[rows].astype(str).reset_index(drop=True)
    selected[MINED_FOR] = targets["object_name"].astype(str).to_numpy()[owners]
    selected[MINED_SIMILARITY] = [f"{s:.4f}" for s in sims]
    if previous_selected and len(selected) < previous_selected / 2:
        warnings.append(
            f"mining yield halved: {previous_selected} → {len(selected)}; the pool is "
            "running out of similar rows"
        )
    return MiningResult(
        rows=selected,
        per_label=per_label,
        warnings=warnings,
        iteration=iteration,
        top_k=top_k,
        min_similarity=min_similarity,
    )


def _normalized_labels(frame: pd.DataFrame) -> np.ndarray:
    """``normalize_label`` of every row, computed once per distinct label (pools are large)."""
    labels = frame["label"].astype(str)
    mapping = {v: normalize_label(v) for v in labels.unique()}
    return labels.map(mapping).to_numpy(dtype=object)


def _check_embeddings(emb: np.ndarray, frame: pd.DataFrame, role: str) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if len(frame) == 0 and emb.size == 0:
        return emb.reshape(0, emb.shape[-1] if emb.ndim == 2 else 0)
    if emb.ndim != 2 or len(emb) != len(frame):
        raise StageError(
            f"{role} embeddings have shape {emb.shape} for {len(frame)} {role} rows; "
            f"embed exactly the {role} frame (one row per pair)"
        )
    if not np.isfinite(emb).all():
        raise StageError(
            f"{role} embeddings hold NaN or infinite values; re-embed (a corrupt checkpoint "
            "or image gives NaN features)"
        )
    return emb


def _dedup(
    hit_rows: list[np.ndarray],
    hit_sims: list[np.ndarray],
    hit_targets: list[np.ndarray],
    pool_keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hit per pool row (and per leakage key): the most similar target's, in pool order."""
    if not hit_rows:
        empty = np.empty(0, dtype=np.int64)
        return empty, np.empty(0, dtype=np.float32), empty
    rows = np.concatenate(hit_rows)
    sims = np.concatenate(hit_sims)
    owners = np.concatenate(hit_targets)
    # Best first (ties: lower target), so keeping the first of each row keeps the best target.
    order = np.lexsort((owners, rows, -sims))
    rows, sims, owners = rows[order], sims[order], owners[order]
    # Duplicate pool rows (same leakage key) would be one training row twice: keep one.
    _, first = np.unique(pool_keys[rows], return_index=True)
    keep = np.sort(first)
    rows, sims, owners = rows[keep], sims[keep], owners[keep]
    in_pool_order = np.argsort(rows, kind="stable")
    return rows[in_pool_order], sims[in_pool_order], owners[in_pool_order]
