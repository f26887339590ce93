"""``mine_hard_negatives`` with sentence-transformers' parameters and output formats, on hardmine.

A drop-in for ``sentence_transformers.util.mine_hard_negatives``: every argument
of the original with its behaviour (prompts, ``batch_size``, ``cache_folder``
shared with the original, ``use_multi_process``, ``cross_encoder`` rescoring,
the model's ``similarity_fn_name``), the same deduplication of queries and corpus
texts, the same output columns (``triplet``, ``n-tuple``, ``labeled-pair``,
``labeled-list``, with ``output_scores``) in the same row order, returned as a
``datasets.Dataset``, and the same messages. Additionally it takes precomputed
embeddings instead of a model::

    from hardmine.integrations.sentence_transformers import mine_hard_negatives
    triplets = mine_hard_negatives(dataset, query_embeddings=q, corpus_embeddings=c, num_negatives=5,
                                   relative_margin=0.05)

Differences, by decision:

- The search is exact over the whole corpus. sentence-transformers first keeps
  each query's ``range_max + max_positives`` best candidates and filters only
  those, so with margins or score limits it can run out of negatives where
  hardmine still finds them; when it does not run out, the negatives are the
  same (``sampling_strategy="top"``; tested against the real library).
  The skipped-candidate counts it prints are over the whole corpus.
- ``sampling_strategy="random"`` draws with hardmine's seeded, reproducible
  draws (``seed``), not Python's ``random`` module: the same distribution, not
  the same draws.
- ``use_faiss`` is accepted and changes nothing: hardmine's exact engine serves
  the search (the original's exact path, not FAISS's), and faiss need not be
  installed. ``faiss_batch_size`` is the number of queries scored at a time where
  a score block is built (a similarity that is not a dot product, or positives
  kept under a margin); the engine bounds its own memory otherwise.
- With a ``cross_encoder``, each query's ``range_max + max_positives`` (6.3: one more)
  best bi-encoder candidates are rescored, as in the original (rescoring the whole
  corpus would cost a cross-encoder pass per pair); sentence-transformers 6.2 uses the
  cross-encoder only under a filter, 6.3 always.

The behaviour follows the installed sentence-transformers release (:func:`st_version`):
6.3 also never returns a candidate whose text is the query's, and counts ``min_score``
removals only among candidates not dropped already. Both 6.2 and 6.3 are tested against
the real library in CI.
- ``include_positives=True`` with a margin is allowed, as in the original (which
  warns that positives may then be discarded).

Additional keywords: ``query_embeddings``/``corpus_embeddings`` (above), ``seed``, and
hardmine's ``backend`` and ``precision`` (``"fp32"``, ``"bf16"``, ``"int8"``, ``"auto"``: the
same negatives, certified low-precision screening where the engine mines, see
:func:`hardmine.mine`; the cross-encoder path and similarities the engine does not compute
score in float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import logging

from .. import _positives, _precision, api
from . import _st_encoding, _st_mining, _st_output

logger = logging.getLogger(__name__)


class FixedEmbeddingModel:
    """The part of a SentenceTransformer that ``mine_hard_negatives`` uses, over fixed embeddings:
    ``rows`` maps each text to its (already normalised) vector. It lets the original
    sentence-transformers function run on precomputed embeddings, e.g. to compare with this one."""

    class model_card_data:  # noqa: N801 (mirrors the attribute name)
        base_model = "fixed-embeddings"

    def __init__(self, rows: dict[str, np.ndarray], similarity_fn_name: str = "cosine"):
        import torch

        self.rows = rows
        self.similarity_fn_name = similarity_fn_name
        self.device = torch.device("cpu")
        self.dim = int(next(iter(rows.values())).shape[0])

    def get_embedding_dimension(self) -> int:
        return self.dim

    def _encode(self, texts, **kwargs):
        return np.stack([self.rows[t] for t in texts])

    encode_query = encode_document = _encode

    def similarity(self, a, b):
        from sentence_transformers import SimilarityFunction

        return SimilarityFunction.to_similarity_fn(self.similarity_fn_name)(a, b)

    def similarity_pairwise(self, a, b):
        from sentence_transformers import SimilarityFunction

        return SimilarityFunction.to_similarity_pairwise_fn(self.similarity_fn_name)(a, b)


#: similarity_fn_name -> hardmine metric, for the similarities the engine computes itself
ENGINE_METRICS = {"cosine": "cosine", "dot": "dot"}


def _similarity(model) -> tuple[str, Any]:
    """(name, f(queries, corpus) -> float32 scores) of the model's own similarity function."""
    name = getattr(model, "similarity_fn_name", None) or "cosine"  # precomputed embeddings: cosine
    if name not in ("cosine", "dot", "euclidean", "manhattan"):
        raise ValueError(f"model.similarity_fn_name must be cosine, dot, euclidean or manhattan; got {name!r}")

    def scores(queries, corpus):
        import torch
        from sentence_transformers import SimilarityFunction

        values = SimilarityFunction.to_similarity_fn(name)(torch.as_tensor(queries), torch.as_tensor(corpus))
        return values.detach().cpu().float().numpy()

    return name, scores


def _arguments(dataset, range_min, range_max, max_score, min_score, absolute_margin, relative_margin,
               num_negatives, sampling_strategy, include_positives, output_format, output_scores, faiss_batch_size,
               as_triplets, margin):
    """The original's argument checks, warnings and renames, in its order."""
    if len(dataset) == 0:
        raise ValueError("The dataset is empty. Please provide a non-empty dataset.")
    if faiss_batch_size <= 0:
        raise ValueError(f"faiss_batch_size must be a positive integer, got {faiss_batch_size}.")
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
        logger.warning("The `as_triplets` parameter is deprecated. Use the `output_format` parameter instead. "
                       f"Setting `output_format` to `{output_format}`.")
    if include_positives:
        if (range_min != 0 or range_max is not None or max_score is not None or min_score is not None
                or absolute_margin is not None or relative_margin is not None or margin is not None
                or sampling_strategy != "top"):
            logger.warning("When using `include_positives=True`, updating `range_min`, `range_max`, `max_score`, "
                           "`min_score`, `absolute_margin`, `relative_margin`, or `sampling_strategy` from the default "
                           "values may still discard the positive values.")
        if output_format != "n-tuple":
            logger.warning('When using `include_positives=True`, `output_format` will be set to `"n-tuple"` to '
                           'ensure that the ranking order is preserved.')
            output_format = "n-tuple"
    if output_format == "n-tuple-scores":
        logger.warning('`output_format="n-tuple-scores"` is deprecated. Use `output_format="n-tuple"` with '
                       "`output_scores=True` instead for equivalent output formats.")
        output_format, output_scores = "n-tuple", True
    if output_format not in _st_output.FORMATS:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of 'triplet', 'n-tuple', "
                         f"'labeled-pair', or 'labeled-list'.")
    if margin is not None:
        absolute_margin = margin
        logger.warning("The `margin` parameter is deprecated. Use the `absolute_margin` and/or `relative_margin` "
                       f"parameter instead. Setting `absolute_margin` to `{absolute_margin}`.")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}.")
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random'; got {sampling_strategy!r}")
    return output_format, output_scores, absolute_margin


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
    precision: str = "fp32",
):
    """Hard negatives for a dataset of (anchor, positive) text pairs; see the module docstring.

    Give ``model`` (a SentenceTransformer, encoded as sentence-transformers does,
    normalised, scored by its ``similarity_fn_name``) or both ``query_embeddings``
    (one row per dataset row, aligned with the anchor column) and
    ``corpus_embeddings`` (one row per ``corpus`` text when ``corpus`` is given,
    else one per dataset row, aligned with the positive column), scored by cosine.
    """
    from datasets import Dataset

    precision = _precision.check(precision)

    output_format, output_scores, absolute_margin = _arguments(
        dataset, range_min, range_max, max_score, min_score, absolute_margin, relative_margin, num_negatives,
        sampling_strategy, include_positives, output_format, output_scores, faiss_batch_size, as_triplets, margin)
    if (model is None) == (query_embeddings is None or corpus_embeddings is None):
        raise ValueError("give either model, or both query_embeddings and corpus_embeddings")
    columns = dataset.column_names
    if not anchor_column_name or anchor_column_name not in columns:
        anchor_column_name = columns[0]
    if not positive_column_name or positive_column_name not in columns:
        if len(columns) < 2:
            raise ValueError("Dataset must contain at least two columns to select the positive column automatically.")
        positive_column_name = columns[1]

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
    rows_per_query = np.unique(anchors, return_counts=True)[1]
    max_positives = int(rows_per_query.max())
    filters = {"absolute_margin": absolute_margin, "relative_margin": relative_margin, "max_score": max_score,
               "min_score": min_score}
    since_63 = st_version() >= (6, 3)
    # 6.2 rescores with the cross-encoder only under a filter; 6.3 whenever one is given
    rescore = cross_encoder is not None and (since_63 or any(value is not None for value in filters.values()))
    # 6.3: a candidate whose text is the query's is never a negative (unless, with include_positives,
    # the query is one of its own positives); -1: none
    query_text = np.full(len(queries), -1, dtype=np.int64)
    if since_63:
        query_text[:] = [corpus_index.get(query, -1) for query in queries]
        if include_positives:
            for query, positive in zip(anchors, positive_texts):
                if query == positive:
                    query_text[query_index[query]] = -1

    if range_max is None:
        filtered = (absolute_margin is not None or relative_margin is not None or max_score is not None
                    or (cross_encoder is not None and min_score is not None))
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
                         f"remain after skipping the first range_min={range_min} of range_max={range_max}. Consider "
                         f"decreasing num_negatives or range_min, or increasing range_max.")
    if verbose and len(queries) != len(anchors):
        print(f"Found {len(queries)} unique queries out of {len(anchors)} total queries.")
    if verbose and max_positives > 1:
        print(f"Found an average of {np.mean(rows_per_query):.3f} positives per query.")

    if model is not None:
        query_vectors, corpus_vectors = _st_encoding.encode(
            model, queries, texts, batch_size=batch_size, query_prompt_name=query_prompt_name,
            query_prompt=query_prompt, corpus_prompt_name=corpus_prompt_name, corpus_prompt=corpus_prompt,
            use_multi_process=use_multi_process, cache_folder=cache_folder, verbose=verbose)
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        corpus_vectors = np.ascontiguousarray(corpus_vectors, dtype=np.float32)
    else:
        query_vectors, corpus_vectors = _st_encoding.given_embeddings(
            query_embeddings, corpus_embeddings, anchors, queries, texts, corpus if separate_corpus else None,
            positive_texts)
    name, similarity = _similarity(model)
    metric = ENGINE_METRICS.get(name)

    indptr = np.concatenate([[0], np.cumsum(counts)])
    positive_ids = np.array([i for ids in positive_lists for i in ids], dtype=np.int64)
    pair_query = np.repeat(np.arange(len(queries)), counts)
    if rescore:
        pairs = [(queries[q], texts[p]) for q, p in zip(pair_query, positive_ids)]
        positive_scores = _st_encoding.predict(cross_encoder, [pairs], batch_size=batch_size,
                                               use_multi_process=use_multi_process, verbose=False)[0]
    elif metric is not None:
        problem = _problem(query_vectors, corpus_vectors, metric)
        positive_scores = _positives.positive_scores(problem, indptr, positive_ids)[1].astype(np.float32)
    else:
        positive_scores = _pairwise(name, query_vectors[pair_query], corpus_vectors[positive_ids])
    s_p = (np.minimum.reduceat(positive_scores, indptr[:-1]) if positive_scores.size
           else np.zeros(len(queries), np.float32))
    pick = dict(filters=filters, range_min=range_min, range_max=range_max, num_negatives=num_negatives,
                strategy=sampling_strategy, seed=seed, min_score_counts_dropped=not since_63)
    margins = absolute_margin is not None or relative_margin is not None
    if rescore:
        # the original rescores range_max + max_positives candidates per query (6.3: one more, for the
        # query's own text)
        width = range_max + max_positives + (1 if since_63 else 0)
        ids = _st_mining.top_candidates(similarity, query_vectors, corpus_vectors, width, metric, faiss_batch_size)
        groups = [[(queries[q], texts[j]) for j in ids[q] if j >= 0] for q in range(len(queries))]
        rescored = _st_encoding.predict(cross_encoder, groups, batch_size=batch_size,
                                        use_multi_process=use_multi_process, verbose=verbose)
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        for q, values in enumerate(rescored):
            scores[q, : values.size] = values
        excluded = (np.zeros(ids.shape, dtype=bool) if include_positives
                    else _st_mining.positive_mask(ids, 0, indptr, positive_ids))
        excluded |= (ids == query_text[:, None]) & (ids >= 0)
        negatives, negative_scores, removed = _st_mining.window_pick(ids, scores, excluded, s_p, first_row=0, **pick)
        candidates_seen = ids.size
    elif metric is None or (margins and (include_positives or (query_text >= 0).any())):
        # (positives kept, or a query's own text excluded, under a margin: the engine's positives
        # would be both the exclusions and the margin's reference)
        negatives, negative_scores, removed = _st_mining.blockwise(
            similarity, query_vectors, corpus_vectors, indptr, positive_ids, s_p, include_positives,
            faiss_batch_size, query_text=query_text, **pick)
        candidates_seen = len(queries) * len(texts)
    else:
        options: dict[str, Any] = {"num_negatives": num_negatives, "rank_range": (range_min, range_max),
                                   "max_score": max_score, "min_score": min_score, "seed": seed,
                                   "strategy": sampling_strategy, "metric": metric, "backend": backend,
                                   "precision": precision}
        # without a margin the positives only exclude: the query's own text joins them (6.3)
        excluded_lists = [([] if include_positives else list(positive_lists[q]))
                          + ([int(query_text[q])] if query_text[q] >= 0 and not (
                              not include_positives and query_text[q] in positive_lists[q]) else [])
                          for q in range(len(queries))]
        exclude_indptr = np.concatenate([[0], np.cumsum([len(ids) for ids in excluded_lists])]).astype(np.int64)
        exclude_ids = np.array([i for ids in excluded_lists for i in ids], dtype=np.int64)
        if include_positives and not exclude_ids.size:
            mined = api.mine(query_vectors, corpus_vectors, **options)
        else:
            mined = api.mine(query_vectors, corpus_vectors, positives=(exclude_indptr, exclude_ids),
                             margin=absolute_margin, relative_margin=relative_margin, **options)
        negatives, negative_scores = np.asarray(mined.indices), np.asarray(mined.scores)
        removed = {("absolute_margin" if key == "margin" else key): count for key, count in mined.stats.removed.items()}
        candidates_seen = len(queries) * len(texts) - exclude_ids.size
    if verbose:
        print("Negative candidates mined, preparing dataset...")
    data = _st_output.assemble(output_format, output_scores, anchor_column_name, positive_column_name, queries,
                               texts, counts, positive_ids, positive_scores, negatives, negative_scores)
    output = Dataset.from_dict(data)
    if verbose:
        _st_output.report(output_format, len(output), len(dataset), counts, positive_scores, negatives,
                          negative_scores, num_negatives, removed, candidates_seen, filters, range_min)
    return output


def st_version() -> tuple[int, int]:
    """The installed sentence-transformers' (major, minor): the drop-in follows the behaviour of that
    release of ``mine_hard_negatives`` (6.2 and 6.3 are matched; older releases get 6.2's, later ones
    6.3's). (0, 0) when it is not installed: 6.2's behaviour."""
    from importlib import metadata

    try:
        version = metadata.version("sentence-transformers")
    except metadata.PackageNotFoundError:
        return (0, 0)
    parts = [int(part) if part.isdigit() else 0 for part in version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def _pairwise(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The model's pairwise similarity (``SimilarityFunction``), float32."""
    import torch
    from sentence_transformers import SimilarityFunction

    values = SimilarityFunction.to_similarity_pairwise_fn(name)(torch.as_tensor(a), torch.as_tensor(b))
    return values.detach().cpu().float().numpy()


def _problem(queries, candidates, metric: str):
    from .. import _validation as v

    return v.problem(queries, candidates, metric_name=metric)
