"""Look before you train: one self-contained HTML page about a set of mined negatives.

``hardmine report OUT --queries Q.npy --candidates C.npy [--texts T] --html report.html`` (or
:func:`write` on a :class:`hardmine.mine` result) shows

- score histograms of the positives and of the negatives by rank;
- the share of negatives scoring above their query's positive, and within ``margin`` below it;
- suspected false negatives: a negative sharing a key with one of the query's positives
  (``keys``, e.g. a text hash or source id) or a near-duplicate of a positive (cosine between
  the two candidate rows >= ``near_duplicate``), with their texts side by side when given;
- per-query coverage: queries short of negatives, or with none;
- the mining options, when given.

Plots need matplotlib (``pip install "hardmine[report]"``); the page embeds them as PNGs and
loads nothing from the network. The main plot is also written as a PNG beside the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _validation as v

RANKS_SHOWN = 5  # ranks drawn one by one in the histogram; the deeper ones are pooled


class Report(NamedTuple):
    """The numbers the page shows (shares are fractions of all valid negatives)."""

    queries: int
    width: int
    negatives: int
    positive_mean: float
    negative_mean_by_rank: tuple[float, ...]
    above_positive: float
    within_margin: float
    margin: float
    short_queries: int
    empty_queries: int
    identical_keys: int
    near_duplicates: int
    suspects: int


class Suspect(NamedTuple):
    query: int
    rank: int
    negative: int
    positive: int
    score: float
    positive_score: float
    reason: str


def _positive_lists(positives: Any, queries: int, candidates: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``positives`` as CSR (indptr, ids): (Q,) ids, (Q, m) ids with -1 padding, or (indptr, ids)."""
    if positives is None:
        return None
    if isinstance(positives, tuple):
        indptr, ids = (np.asarray(a, dtype=np.int64) for a in positives)
        if indptr.shape != (queries + 1,):
            raise ValueError(f"positives indptr must have {queries + 1} entries; got {indptr.shape}")
    else:
        table = np.asarray(v.int_array(positives, "positives"), dtype=np.int64)
        table = table[:, None] if table.ndim == 1 else table
        if table.ndim != 2 or table.shape[0] != queries:
            raise ValueError(f"positives must have {queries} rows, one per query; got shape {table.shape}")
        keep = table >= 0
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
        ids = table[keep]
    if ids.size and (ids.min() < 0 or ids.max() >= candidates):
        raise ValueError(f"positives must be candidate rows in [0, {candidates})")
    return indptr, ids


def analyse(indices: Any, scores: Any, positive_scores: Any, queries: Any, candidates: Any, *,
            positives: Any = None, keys: Any = None, margin: float = 0.05,
            near_duplicate: float = 0.95) -> tuple[Report, list[Suspect]]:
    """The report's numbers and its suspected false negatives (best scores first)."""
    ids = np.asarray(indices, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    s_p = np.asarray(positive_scores, dtype=np.float64).ravel()
    if ids.ndim != 2 or s.shape != ids.shape or s_p.shape != (ids.shape[0],):
        raise ValueError(f"indices and scores must be (Q, n) and positive_scores (Q,); got {ids.shape}, "
                         f"{s.shape}, {s_p.shape}")
    q = np.asarray(v.embeddings(queries, "queries").array)
    c = np.asarray(v.embeddings(candidates, "candidates").array)
    if q.shape[0] != ids.shape[0]:
        raise ValueError(f"queries has {q.shape[0]} rows but the result has {ids.shape[0]} queries")
    if ids.size and ids.max() >= c.shape[0]:
        raise ValueError(f"the result names candidate {int(ids.max())} but candidates has {c.shape[0]} rows")
    margin = v.real(margin, "margin")
    near_duplicate = v.real(near_duplicate, "near_duplicate")
    valid = ids >= 0
    num_valid = valid.sum(axis=1)
    gap = np.where(valid, s - s_p[:, None], np.nan)
    total = int(valid.sum())
    share = (lambda mask: float(mask.sum()) / total if total else 0.0)
    above = share(valid & (gap > 0))
    within = share(valid & (gap <= 0) & (gap > -margin))
    members = _positive_lists(positives, ids.shape[0], c.shape[0])
    key_array = None if keys is None else np.asarray(v.int_array(keys, "keys"), dtype=np.int64).ravel()
    if key_array is not None and key_array.shape != (c.shape[0],):
        raise ValueError(f"keys must have one entry per candidate ({c.shape[0]}); got {key_array.shape}")
    suspects: list[Suspect] = []
    identical = near = 0
    if members is not None:
        unit = c.astype(np.float64)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-300)
        indptr, pos_ids = members
        rows, ranks = np.nonzero(valid)
        for start in range(0, rows.size, 1 << 16):  # (negative, positive) pairs in bounded chunks
            r, k = rows[start:start + (1 << 16)], ranks[start:start + (1 << 16)]
            counts = indptr[r + 1] - indptr[r]
            pair = np.repeat(np.arange(r.size), counts)
            offsets = np.cumsum(counts) - counts  # negative i's pairs: offsets[i] to offsets[i] + counts[i]
            positive = pos_ids[indptr[r][pair] + np.arange(pair.size) - offsets[pair]]
            negative = ids[r, k][pair]
            same = np.zeros(pair.size, bool) if key_array is None else key_array[negative] == key_array[positive]
            cosine = np.einsum("ij,ij->i", unit[negative], unit[positive])
            close = cosine >= near_duplicate
            any_same = np.bincount(pair, weights=same, minlength=r.size) > 0
            any_close = np.bincount(pair, weights=close, minlength=r.size) > 0
            identical += int(any_same.sum())
            near += int(any_close.sum())
            # per negative: the positive it shares a key with, else the closest near-duplicate
            best_cos = np.full(r.size, -np.inf)
            np.maximum.at(best_cos, pair, np.where(close, cosine, -np.inf))
            for i in np.nonzero(any_same | any_close)[0]:
                span = slice(offsets[i], offsets[i] + counts[i])
                if any_same[i]:
                    match = positive[span][np.argmax(same[span])]
                    reason = "same key"
                else:
                    match = positive[span][np.argmax(cosine[span])]
                    reason = f"near-duplicate (cos {best_cos[i]:.3f})"
                suspects.append(Suspect(int(r[i]), int(k[i]), int(ids[r[i], k[i]]), int(match),
                                        float(s[r[i], k[i]]), float(s_p[r[i]]), reason))
    suspects.sort(key=lambda x: (-x.score, x.query, x.rank))
    by_rank = tuple(float(np.mean(s[valid[:, r], r])) if valid[:, r].any() else float("nan")
                    for r in range(ids.shape[1]))
    report = Report(int(ids.shape[0]), int(ids.shape[1]), total,
                    float(np.nanmean(s_p)) if np.isfinite(s_p).any() else float("nan"), by_rank, above, within,
                    margin, int((num_valid < ids.shape[1]).sum()), int((num_valid == 0).sum()), identical, near,
                    len(suspects))
    return report, suspects


def _figures(report: Report, indices: np.ndarray, scores: np.ndarray, positive_scores: np.ndarray):
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as error:
        raise RuntimeError('hardmine report draws with matplotlib: pip install "hardmine[report]"') from error
    valid = indices >= 0
    finite = np.isfinite(positive_scores)
    pooled = [scores[valid[:, r], r] for r in range(min(RANKS_SHOWN, indices.shape[1]))]
    labels = [f"negatives, rank {r + 1}" for r in range(len(pooled))]
    if indices.shape[1] > RANKS_SHOWN:
        pooled.append(scores[:, RANKS_SHOWN:][valid[:, RANKS_SHOWN:]])
        labels.append(f"negatives, rank {RANKS_SHOWN + 1}+")
    every = np.concatenate([positive_scores[finite]] + pooled) if (finite.any() or valid.any()) else np.zeros(1)
    bins = np.linspace(float(every.min()), float(every.max()) + 1e-9, 50)
    main, ax = plt.subplots(figsize=(8, 4.2))
    ax.hist(positive_scores[finite], bins=bins, histtype="stepfilled", alpha=0.35, color="tab:green", label="positives")
    for values, label in zip(pooled, labels):
        ax.hist(values, bins=bins, histtype="step", linewidth=1.4, label=label)
    ax.set_xlabel("score")
    ax.set_ylabel("count")
    ax.set_title("Positives vs mined negatives")
    ax.legend(fontsize=8)
    main.tight_layout()
    gap_fig, ax = plt.subplots(figsize=(8, 3.2))
    gaps = (scores - positive_scores[:, None])[valid & finite[:, None]]
    ax.hist(gaps, bins=50, color="tab:blue")
    ax.axvline(0, color="black", linewidth=1, label="the positive's score")
    ax.axvline(-report.margin, color="tab:red", linestyle="--", linewidth=1, label=f"margin {report.margin:g}")
    ax.set_xlabel("negative score - positive score")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    gap_fig.tight_layout()
    cover_fig, ax = plt.subplots(figsize=(8, 2.8))
    counts = np.bincount(valid.sum(axis=1), minlength=indices.shape[1] + 1)
    ax.bar(np.arange(counts.size), counts, color="tab:gray")
    ax.set_xlabel("negatives found per query")
    ax.set_ylabel("queries")
    cover_fig.tight_layout()
    pngs = []
    for figure in (main, gap_fig, cover_fig):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        pngs.append(buffer.getvalue())
    return pngs


def _text(texts: Sequence[str] | None, row: int) -> str:
    return "" if texts is None or row < 0 else str(texts[row])


def _render(report: Report, suspects: list[Suspect], pngs: list[bytes], *, texts=None, query_texts=None,
           options: dict | None = None, source: str = "", max_suspects: int = 50) -> str:
    """The page: numbers (each cell carries ``data-key``), plots, suspects, coverage, options."""
    esc = html.escape
    rows = [("queries", report.queries), ("negatives per query (asked)", report.width),
            ("negatives found", report.negatives), ("mean positive score", f"{report.positive_mean:.4f}"),
            ("negatives above their positive", f"{report.above_positive:.4%}"),
            (f"negatives within {report.margin:g} below their positive", f"{report.within_margin:.4%}"),
            ("queries short of negatives", report.short_queries), ("queries with none", report.empty_queries),
            ("suspected false negatives", report.suspects), ("  sharing a key with a positive", report.identical_keys),
            ("  near-duplicates of a positive", report.near_duplicates)]
    keys = ["queries", "width", "negatives", "positive_mean", "above_positive", "within_margin", "short_queries",
            "empty_queries", "suspects", "identical_keys", "near_duplicates"]
    values = {k: getattr(report, k) for k in keys}
    table = "".join(f'<tr><th>{esc(name)}</th><td data-key="{key}" data-value="{values[key]!r}">{esc(str(shown))}</td></tr>'
                    for (name, shown), key in zip(rows, keys))
    ranks = "".join(f"<tr><th>rank {r + 1}</th><td data-key=\"rank_mean_{r}\">{m:.4f}</td></tr>"
                    for r, m in enumerate(report.negative_mean_by_rank))
    images = "".join(f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     for alt, png in zip(("score histograms", "score gaps", "coverage"), pngs))
    shown = suspects[:max_suspects]
    suspect_rows = "".join(
        f"<tr><td>{x.query}</td><td>{x.rank + 1}</td><td>{x.negative}</td><td>{x.score:.4f}</td><td>{x.positive}</td>"
        f"<td>{x.positive_score:.4f}</td><td>{esc(x.reason)}</td><td>{esc(_text(query_texts, x.query))}</td>"
        f"<td>{esc(_text(texts, x.positive))}</td><td>{esc(_text(texts, x.negative))}</td></tr>" for x in shown)
    note = "" if len(suspects) <= max_suspects else f"<p>{max_suspects} of {len(suspects)} shown (highest scores).</p>"
    if not suspects:
        note = ("<p>None found.</p>" if report.suspects == 0 else "") + (
            "" if report.identical_keys or report.near_duplicates else
            "<p>(Suspects need the positives; keys need --keys.)</p>")
    opts = ("<p>Not given (pass --options / options=).</p>" if not options else
            "<table id=\"options\">" + "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(json.dumps(val))}</td></tr>"
                                for k, val in options.items()) + "</table>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hardmine report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top;font-size:13px}}th{{background:#f4f4f4}}img{{display:block;max-width:100%;margin:1em 0}}</style>
</head><body>
<h1>hardmine report</h1><p>{esc(source)}</p>
<h2>Summary</h2><table id="summary">{table}</table>
<h2>Scores</h2>{images}
<h3>Mean negative score by rank</h3><table id="ranks">{ranks}</table>
<h2>Suspected false negatives</h2>{note}
<table id="suspects"><tr><th>query</th><th>rank</th><th>negative</th><th>score</th><th>positive</th>
<th>positive score</th><th>why</th><th>query text</th><th>positive text</th><th>negative text</th></tr>{suspect_rows}</table>
<h2>Mining options</h2>{opts}
</body></html>
"""


def write(result: Any, queries: Any, candidates: Any, html_path: str | os.PathLike, *, positives: Any = None,
          keys: Any = None, texts: Sequence[str] | None = None, query_texts: Sequence[str] | None = None,
          margin: float = 0.05, near_duplicate: float = 0.95,
          options: dict | None = None, png_path: str | os.PathLike | None = None, max_suspects: int = 50,
          source: str = "") -> Report:
    """Writes the page for ``result`` (a :func:`hardmine.mine` result, or a dict with
    ``indices``, ``scores``, ``positive_scores``) and the main plot as a PNG (default: the page's
    path with ``.png``); returns the numbers. Nothing is written when an input is wrong."""
    get = (lambda name: result[name]) if isinstance(result, dict) else (lambda name: getattr(result, name))
    indices, scores, positive_scores = (np.asarray(_numpy(get(n))) for n in ("indices", "scores", "positive_scores"))
    if texts is not None and len(texts) != np.asarray(candidates).shape[0]:
        raise ValueError(f"texts must have one entry per candidate ({np.asarray(candidates).shape[0]}); got {len(texts)}")
    if query_texts is not None and len(query_texts) != indices.shape[0]:
        raise ValueError(f"query_texts must have one entry per query ({indices.shape[0]}); got {len(query_texts)}")
    report, suspects = analyse(indices, scores, positive_scores, queries, candidates, positives=positives, keys=keys,
                               margin=margin, near_duplicate=near_duplicate)
    pngs = _figures(report, indices, scores.astype(np.float64), positive_scores.astype(np.float64))
    page = _render(report, suspects, pngs, texts=texts, query_texts=query_texts, options=options, source=source,
                  max_suspects=max_suspects)
    from .io.outputs import atomic_write

    png_path = Path(html_path).with_suffix(".png") if png_path is None else Path(png_path)
    atomic_write(png_path, lambda out: out.write(pngs[0]))
    atomic_write(html_path, lambda out: out.write(page.encode()))
    return report


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def read_output(path: str | os.PathLike, candidate_ids: Any = None) -> dict:
    """A ``hardmine mine`` output (.npz, .parquet, .jsonl) as padded arrays: ``indices`` (Q, n)
    candidate rows (named ids mapped back through ``candidate_ids``), ``scores``, ``positive_scores``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            ids, scores, positive = data["negative_ids"], data["negative_scores"], data["positive_score"]
    elif suffix in (".parquet", ".jsonl"):
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path).to_pydict()
        else:
            lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
            table = {k: [row[k] for row in lines] for k in ("negative_ids", "negative_scores", "positive_score")}
        width = max((len(x) for x in table["negative_ids"]), default=0)
        named = any(isinstance(x, str) for row in table["negative_ids"] for x in row)
        ids = np.full((len(table["negative_ids"]), width), "" if named else -1, dtype=object if named else np.int64)
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        for row, (found, values) in enumerate(zip(table["negative_ids"], table["negative_scores"])):
            ids[row, :len(found)] = found
            scores[row, :len(values)] = values
        positive = np.array([np.nan if x is None else x for x in table["positive_score"]], dtype=np.float32)
    else:
        raise ValueError(f"OUT must be a .npz, .parquet or .jsonl written by hardmine mine; got {path}")
    if ids.dtype.kind in "UO":
        if candidate_ids is None:
            raise ValueError("OUT names its negatives by id: give --candidate-ids (the .npy the run used)")
        lookup = {str(name): row for row, name in enumerate(np.asarray(candidate_ids).tolist())}
        missing = [x for x in ids.ravel() if x != "" and str(x) not in lookup]
        if missing:
            raise ValueError(f"negative id {missing[0]!r} is not in --candidate-ids")
        ids = np.array([[lookup[str(x)] if x != "" else -1 for x in row] for row in ids], dtype=np.int64).reshape(
            ids.shape)
    return {"indices": np.asarray(ids, dtype=np.int64), "scores": scores, "positive_scores": positive}


def read_texts(path: str | os.PathLike) -> list[str]:
    """Texts, one per row: .txt (a line each), .jsonl or .parquet (the ``text`` column), .npy."""
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return Path(path).read_text().splitlines()
    if suffix == ".jsonl":
        return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise ValueError(f"{path} has no 'text' column (columns: {table.column_names})")
        return [str(x) for x in table.column("text").to_pylist()]
    if suffix == ".npy":
        return [str(x) for x in np.load(path, allow_pickle=False).tolist()]
    raise ValueError(f"texts must be .txt, .jsonl, .parquet or .npy; got {path}")
