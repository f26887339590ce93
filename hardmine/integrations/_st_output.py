"""What the sentence-transformers drop-in returns and prints: the original's columns, row
for row in its order, and its statistics table and messages."""

from __future__ import annotations

import numpy as np

FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")


def assemble(output_format, output_scores, anchor, positive, queries, texts, counts, positive_ids, positive_scores,
              negatives, negative_scores) -> dict[str, list]:
    """The columns sentence-transformers writes, row for row in its order."""
    pair_query = np.repeat(np.arange(len(queries)), counts)  # one (query, positive) pair per entry
    valid = negatives >= 0
    data: dict[str, list] = {}
    if output_format == "triplet":
        rows = negatives[pair_query]
        keep = valid[pair_query]
        per_pair = keep.sum(axis=1)
        data[anchor] = [queries[q] for q in np.repeat(pair_query, per_pair)]
        data[positive] = [texts[p] for p in np.repeat(positive_ids, per_pair)]
        data["negative"] = [texts[n] for n in rows[keep]]
        if output_scores:
            data["scores"] = [[float(a), float(b)] for a, b in
                              zip(np.repeat(positive_scores, per_pair), negative_scores[pair_query][keep])]
    elif output_format == "n-tuple":
        full = valid[pair_query].all(axis=1)
        pairs = np.flatnonzero(full)
        data[anchor] = [queries[pair_query[i]] for i in pairs]
        data[positive] = [texts[positive_ids[i]] for i in pairs]
        for j in range(negatives.shape[1]):
            data[f"negative_{j + 1}"] = [texts[negatives[pair_query[i], j]] for i in pairs]
        if output_scores:
            data["scores"] = [[float(positive_scores[i])] + negative_scores[pair_query[i]].astype(float).tolist()
                              for i in pairs]
    elif output_format == "labeled-pair":
        data[anchor], data[positive] = [], []
        values: list = []
        start = 0
        for q, count in enumerate(counts):
            for i in range(start, start + count):
                data[anchor].append(queries[q])
                data[positive].append(texts[positive_ids[i]])
                values.append(float(positive_scores[i]) if output_scores else 1)
            start += count
            for n, score in zip(negatives[q][valid[q]], negative_scores[q][valid[q]]):
                data[anchor].append(queries[q])
                data[positive].append(texts[n])
                values.append(float(score) if output_scores else 0)
        data["score" if output_scores else "label"] = values
    else:  # labeled-list
        pairs = np.flatnonzero(valid[pair_query].any(axis=1))
        data[anchor] = [queries[pair_query[i]] for i in pairs]
        data[positive] = [[texts[positive_ids[i]]] + [texts[n] for n in negatives[pair_query[i]][valid[pair_query[i]]]]
                          for i in pairs]
        if output_scores:
            data["scores"] = [[float(positive_scores[i])]
                              + negative_scores[pair_query[i]][valid[pair_query[i]]].astype(float).tolist()
                              for i in pairs]
        else:
            data["labels"] = [[1] + [0] * int(valid[pair_query[i]].sum()) for i in pairs]
    return data


def _median(values: np.ndarray) -> float:
    """torch.median's median: the lower of the two middle values."""
    return float(np.sort(values)[(values.size - 1) // 2]) if values.size else float("nan")


def _cell(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def report(output_format: str, num_rows: int, dataset_rows: int, counts: np.ndarray, positive_scores: np.ndarray,
           negatives: np.ndarray, negative_scores: np.ndarray, num_negatives: int, removed: dict[str, int],
           candidates_seen: int, filters: dict, range_min: int) -> None:
    """The original's closing printout: positive / negative / difference statistics over what
    the output holds, the candidates each filter removed, and how many rows lacked negatives."""
    num_queries = counts.size
    pair_query = np.repeat(np.arange(num_queries), counts)
    valid = negatives[pair_query] >= 0
    negative = negative_scores[pair_query].astype(np.float32)
    difference = positive_scores.astype(np.float32)[:, None] - negative
    if output_format == "n-tuple":
        full = valid.all(axis=1)
        kept_negatives, kept_differences, maximum = negative[full].ravel(), difference[full].ravel(), full.size
    else:
        kept_negatives, kept_differences = negative[valid], difference[valid]
        maximum = {"triplet": valid.size, "labeled-pair": num_queries * num_negatives + dataset_rows}.get(
            output_format, valid.shape[0])
    columns = (positive_scores.astype(np.float32), kept_negatives, kept_differences)
    row = "{:<6} {:>14} {:>14} {:>14}"
    print(row.format("Metric", "Positive", "Negative", "Difference"))
    print(row.format("Count", _cell(columns[0].size), _cell(columns[1].size), ""))
    statistics = [
        ("mean", lambda x: float(x.mean()) if x.size else float("nan")),
        ("median", _median),
        ("std", lambda x: float(x.std(ddof=1)) if x.size > 1 else float("nan")),
        ("min", lambda x: float(x.min()) if x.size else float("inf")),
        ("25%", lambda x: float(np.quantile(x, 0.25)) if x.size else float("inf")),
        ("50%", lambda x: float(np.quantile(x, 0.5)) if x.size else float("inf")),
        ("75%", lambda x: float(np.quantile(x, 0.75)) if x.size else float("inf")),
        ("max", lambda x: float(x.max()) if x.size else float("-inf")),
    ]
    for name, function in statistics:
        print(row.format(name.capitalize(), *(_cell(function(column)) for column in columns)))
    remaining = candidates_seen
    for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
        skipped = removed.get(name, 0)
        if skipped:
            print(f"Skipped {skipped:,} potential negatives ({skipped / max(remaining, 1):.2%}) due to the {name} of "
                  f"{filters[name]}.")
            if name != "max_score":
                remaining -= skipped
    missing = maximum - num_rows
    if missing > 0:
        solutions = ["range_max"] + (["range_min"] if range_min > 0 else []) + [
            name for name in ("absolute_margin", "relative_margin", "max_score") if filters.get(name) is not None]
        considerations = (", ".join(solutions[:-1]) + " and " + solutions[-1]) if len(solutions) > 1 else solutions[0]
        print(f"Could not find enough negatives for {missing} samples ({missing / maximum:.2%}). Consider adjusting "
              f"the {considerations} parameter{'s' if len(solutions) > 1 else ''} if you'd like to find more valid "
              f"negatives.")
