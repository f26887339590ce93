"""``mine_hard_negatives`` with sentence-transformers' parameters and output formats, on hardmine.

A drop-in for ``sentence_transformers.util.mine_hard_negatives``: same
arguments, same deduplication of queries and corpus texts, same output columns
(``triplet``, ``n-tuple``, ``labeled-pair``, ``labeled-list``, with
``output_scores``), returned as a ``datasets.Dataset``. Additionally it takes
precomputed embeddings instead of a model::

    from hardmine.integrations.sentence_transformers import mine_hard_negatives
    triplets = mine_hard_negatives(dataset, query_embeddings=q, corpus_embeddings=c, num_negatives=5,
                                   relative_margin=0.05)

Differences, by decision:

- The search is exact over the whole corpus. sentence-transformers first keeps
  each query's ``range_max + max_positives`` best candidates and filters only
  those, so with margins or score limits it can run out of negatives where
  hardmine still finds them; when it does not run out, the negatives are the
  same (``sampling_strategy="top"``; tested against the real library).
- ``sampling_strategy="random"`` draws with hardmine's seeded, reproducible
  draws (``seed``), not Python's ``random`` module: the same distribution, not
  the same draws.
- ``cross_encoder`` rescoring, ``use_multi_process``, ``use_faiss`` and
  ``cache_folder`` are not supported (a clear error says so); use the original
  for cross-encoder rescoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _positives, api

FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")


class FixedEmbeddingModel:
    """The part of a SentenceTransformer that ``mine_hard_negatives`` uses, over fixed embeddings:
    ``rows`` maps each text to its (already normalised) vector. It lets the original
    sentence-transformers function run on precomputed embeddings, e.g. to compare with this one."""

    similarity_fn_name = "cosine"

    class model_card_data:  # noqa: N801 (mirrors the attribute name)
        base_model = "fixed-embeddings"

    def __init__(self, rows: dict[str, np.ndarray]):
        import torch

        self.rows = rows
        self.device = torch.device("cpu")
        self.dim = int(next(iter(rows.values())).shape[0])

    def get_embedding_dimension(self) -> int:
        return self.dim

    def _encode(self, texts, **kwargs):
        return np.stack([self.rows[t] for t in texts])

    encode_query = encode_document = _encode

    def similarity(self, a, b):
        import torch

        return torch.as_tensor(a) @ torch.as_tensor(b).T

    def similarity_pairwise(self, a, b):
        import torch

        return (torch.as_tensor(a) * torch.as_tensor(b)).sum(dim=1)


def _embeddings(value: Any, rows: int, name: str, what: str) -> np.ndarray:
    if type(value).__module__.split(".")[0] == "torch":
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows}, d), one row per {what}; got {array.shape}")
    return array


def mine_hard_negatives(
    dataset,
    model=None,
    anchor_column_name: str | None = None,
    positive_column_name: str | None = None,
    corpus: list[str] | None = None,
    cross_encoder=None,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    query_prompt_name: str | None = None,
    query_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    include_positives: bool = False,
    output_format: str = "triplet",
    output_scores: bool = False,
    batch_size: int = 32,
    faiss_batch_size: int = 16384,
    use_faiss: bool = False,
    use_multi_process: bool | list[str] = False,
    verbose: bool = True,
    cache_folder: str | None = None,
    as_triplets: bool | None = None,
    margin: float | None = None,
    *,
    query_embeddings: Any = None,
    corpus_embeddings: Any = None,
    seed: int = 0,
    backend: str = "auto",
):
    """Hard negatives for a dataset of (anchor, positive) text pairs; see the module docstring.

    Give ``model`` (a SentenceTransformer, encoded as sentence-transformers does,
    normalised) or both ``query_embeddings`` (one row per dataset row, aligned
    with the anchor column) and ``corpus_embeddings`` (one row per ``corpus``
    text when ``corpus`` is given, else one per dataset row, aligned with the
    positive column). Scores are cosine similarities.
    """
    from datasets import Dataset

    for name, value in (("cross_encoder", cross_encoder), ("use_multi_process", use_multi_process),
                        ("use_faiss", use_faiss), ("cache_folder", cache_folder)):
        if value:
            raise ValueError(f"{name} is not supported by hardmine's mine_hard_negatives (the search is exact and "
                             f"in-process); use sentence_transformers.util.mine_hard_negatives for it")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty. Please provide a non-empty dataset.")
    if faiss_batch_size <= 0:
        raise ValueError(f"faiss_batch_size must be a positive integer, got {faiss_batch_size}.")
    if (model is None) == (query_embeddings is None or corpus_embeddings is None):
        raise ValueError("give either model, or both query_embeddings and corpus_embeddings")
    columns = dataset.column_names
    if not anchor_column_name or anchor_column_name not in columns:
        anchor_column_name = columns[0]
    if not positive_column_name or positive_column_name not in columns:
        if len(columns) < 2:
            raise ValueError("Dataset must contain at least two columns to select the positive column automatically.")
        positive_column_name = columns[1]
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
    if include_positives:
        output_format = "n-tuple"  # as sentence-transformers: keeps the ranking order
    if output_format == "n-tuple-scores":
        output_format, output_scores = "n-tuple", True
    if output_format not in FORMATS:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of 'triplet', 'n-tuple', "
                         f"'labeled-pair', or 'labeled-list'.")
    if margin is not None:
        absolute_margin = margin
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}.")
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random'; got {sampling_strategy!r}")

    anchors = list(dataset[anchor_column_name])
    positive_texts = list(dataset[positive_column_name])
    separate_corpus = corpus is not None
    texts = list(dict.fromkeys((list(corpus) if separate_corpus else positive_texts) + positive_texts))
    corpus_index = {text: i for i, text in enumerate(texts)}
    queries = list(dict.fromkeys(anchors))
    query_index = {text: i for i, text in enumerate(queries)}
    positive_lists: list[list[int]] = [[] for _ in queries]
    for query, positive in zip(anchors, positive_texts):
        ids = positive_lists[query_index[query]]
        if corpus_index[positive] not in ids:
            ids.append(corpus_index[positive])
    counts = np.array([len(p) for p in positive_lists], dtype=np.int64)
    max_positives = int(np.unique(anchors, return_counts=True)[1].max())

    if range_max is None:
        filtered = absolute_margin is not None or relative_margin is not None or max_score is not None
        range_max = range_min + num_negatives * (10 if filtered else 1) + max_positives
        if verbose:
            print(f"Setting range_max to {range_max} based on the provided parameters.")
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}.")
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} and "
                         f"range_max={range_max}.")
    if num_negatives > range_max - range_min:
        raise ValueError(f"Cannot mine {num_negatives} negatives per query: only {range_max - range_min} candidates "
                         f"remain after skipping the first range_min={range_min} of range_max={range_max}.")

    if model is not None:
        if getattr(model, "similarity_fn_name", "cosine") not in ("cosine", "dot", None):
            raise ValueError(f"model.similarity_fn_name={model.similarity_fn_name!r}: hardmine mines by cosine/dot")
        common = {"batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True,
                  "show_progress_bar": verbose}
        corpus_vectors = model.encode_document(texts, prompt_name=corpus_prompt_name, prompt=corpus_prompt, **common)
        query_vectors = model.encode_query(queries, prompt_name=query_prompt_name, prompt=query_prompt, **common)
    else:
        rows = _embeddings(query_embeddings, len(anchors), "query_embeddings", "dataset row")
        first_anchor = {text: i for i, text in reversed(list(enumerate(anchors)))}
        query_vectors = rows[[first_anchor[q] for q in queries]]
        if separate_corpus:
            given = _embeddings(corpus_embeddings, len(corpus), "corpus_embeddings", "corpus text")
            first_row = {text: i for i, text in reversed(list(enumerate(corpus)))}
            missing = [text for text in texts if text not in first_row]
            if missing:
                raise ValueError(f"corpus_embeddings covers `corpus` only, but {len(missing)} positive(s) are not in "
                                 f"the corpus, e.g. {missing[0]!r}; add them to corpus and corpus_embeddings")
            corpus_vectors = given[[first_row[text] for text in texts]]
        else:
            given = _embeddings(corpus_embeddings, len(positive_texts), "corpus_embeddings", "dataset row")
            first_row = {text: i for i, text in reversed(list(enumerate(positive_texts)))}
            corpus_vectors = given[[first_row[text] for text in texts]]

    indptr = np.concatenate([[0], np.cumsum(counts)])
    positive_ids = np.array([i for ids in positive_lists for i in ids], dtype=np.int64)
    options: dict[str, Any] = {"num_negatives": num_negatives, "rank_range": (range_min, range_max),
                               "max_score": max_score, "min_score": min_score, "seed": seed}
    if sampling_strategy == "random":
        options["strategy"] = "random"
    if include_positives:
        if absolute_margin is not None or relative_margin is not None:
            raise ValueError("include_positives=True keeps the positives among the candidates, so absolute_margin "
                             "and relative_margin (which would remove them) cannot be combined with it")
        mined = api.mine(query_vectors, corpus_vectors, metric="cosine", backend=backend, **options)
    else:
        mined = api.mine(query_vectors, corpus_vectors, positives=(indptr, positive_ids), metric="cosine",
                         margin=absolute_margin, relative_margin=relative_margin, backend=backend, **options)
    positive_scores = _positives.positive_scores(_problem(query_vectors, corpus_vectors), indptr, positive_ids)[1]
    positive_scores = positive_scores.astype(np.float32)
    negatives = np.asarray(mined.indices)
    negative_scores = np.asarray(mined.scores)
    data = _assemble(output_format, output_scores, anchor_column_name, positive_column_name, queries, texts,
                     counts, positive_ids, positive_scores, negatives, negative_scores)
    if verbose:
        print(mined.stats.table())
    return Dataset.from_dict(data)


def _problem(queries, candidates):
    from .. import _validation as v

    return v.problem(queries, candidates, metric_name="cosine")


def _assemble(output_format, output_scores, anchor, positive, queries, texts, counts, positive_ids, positive_scores,
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
