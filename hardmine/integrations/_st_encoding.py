"""How the sentence-transformers drop-in gets its embeddings, as the original does: query and
corpus texts encoded with their own prompts (``encode_query`` / ``encode_document``,
normalised), optionally through the model's multi-process pool, and cached in
``cache_folder`` under the original's file names (so the two share a cache)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def cache_file(cache_folder: str, kind: str, model, prompt: str | None, prompt_name: str | None,
               texts: list[str]) -> str:
    """``{kind}_embeddings_{sha256}.npy``: the hash covers the model name, the prompt, the
    prompt name and every text, so a changed prompt never reuses a stale cache."""
    model_name = getattr(getattr(model, "model_card_data", None), "base_model", None) or ""
    digest = hashlib.sha256(repr((model_name, prompt, prompt_name, texts)).encode(), usedforsecurity=False)
    return os.path.join(cache_folder, f"{kind}_embeddings_{digest.hexdigest()}.npy")


def _save(path: str, array: np.ndarray) -> None:
    """Written beside its final name and renamed, so a crash never leaves a truncated cache."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(handle, "wb") as out:
            np.save(out, array)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def encode(model, queries: list[str], corpus: list[str], *, batch_size: int, query_prompt_name: str | None,
           query_prompt: str | None, corpus_prompt_name: str | None, corpus_prompt: str | None,
           use_multi_process: bool | list[str], cache_folder: str | None, verbose: bool) -> tuple[Any, Any]:
    """(query embeddings, corpus embeddings), float32 and normalised, from the cache or the model."""
    vectors: dict[str, Any] = {"query": None, "corpus": None}
    files: dict[str, str] = {}
    if cache_folder:
        os.makedirs(cache_folder, exist_ok=True)
        files = {"query": cache_file(cache_folder, "query", model, query_prompt, query_prompt_name, queries),
                 "corpus": cache_file(cache_folder, "corpus", model, corpus_prompt, corpus_prompt_name, corpus)}
        for kind, path in files.items():
            if os.path.exists(path):
                vectors[kind] = np.load(path)
                texts = queries if kind == "query" else corpus
                if vectors[kind].ndim != 2 or vectors[kind].shape[0] != len(texts):
                    raise ValueError(f"{path}: the cached {kind} embeddings have shape {vectors[kind].shape}, not one "
                                     f"row per {kind} text ({len(texts)}): a damaged or foreign cache file; delete it "
                                     f"to have them encoded again")
                if verbose:
                    print(f"[Cache] Loaded {kind} embeddings from {path} (shape={vectors[kind].shape})")
    if vectors["query"] is None or vectors["corpus"] is None:
        pool = None
        if use_multi_process:
            pool = model.start_multi_process_pool(
                target_devices=None if isinstance(use_multi_process, bool) else use_multi_process)
        try:
            common = {"pool": pool, "batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True,
                      "show_progress_bar": verbose}
            if vectors["corpus"] is None:
                vectors["corpus"] = model.encode_document(corpus, prompt_name=corpus_prompt_name, prompt=corpus_prompt,
                                                          **common)
            if vectors["query"] is None:
                vectors["query"] = model.encode_query(queries, prompt_name=query_prompt_name, prompt=query_prompt,
                                                      **common)
        finally:
            if pool is not None:
                model.stop_multi_process_pool(pool)
    for kind, path in files.items():
        if not os.path.exists(path):
            _save(path, np.asarray(vectors[kind]))
            if verbose:
                print(f"[Cache] Saved {kind} embeddings to {path}")
    return vectors["query"], vectors["corpus"]


def predict(cross_encoder, groups: list[list[tuple[str, str]]], *, batch_size: int,
            use_multi_process: bool | list[str], verbose: bool) -> list[np.ndarray]:
    """``cross_encoder.predict`` of each group of pairs (one call per group, batched as the
    original batches them, so the scores are the same to the last bit), through the
    cross-encoder's multi-process pool when asked; float32."""
    pool = None
    if use_multi_process:
        pool = cross_encoder.start_multi_process_pool(
            target_devices=None if isinstance(use_multi_process, bool) else use_multi_process)
    try:
        out = []
        for pairs in tqdm(groups, desc="Rescoring with CrossEncoder", disable=not verbose):
            scores = (cross_encoder.predict(pairs, batch_size=batch_size, convert_to_numpy=True,
                                            show_progress_bar=False, pool=pool) if pairs else [])
            out.append(np.asarray(scores, dtype=np.float32).reshape(len(pairs)))
        return out
    finally:
        if pool is not None:
            cross_encoder.stop_multi_process_pool(pool)


def _rows(value: Any, rows: int, name: str, what: str) -> np.ndarray:
    if type(value).__module__.split(".")[0] == "torch":
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows}, d), one row per {what}; got {array.shape}")
    return array


def given_embeddings(query_embeddings, corpus_embeddings, anchors, queries, texts, corpus, positive_texts):
    """Precomputed embeddings aligned with the deduplicated queries and corpus texts."""
    rows = _rows(query_embeddings, len(anchors), "query_embeddings", "dataset row")
    first_anchor = {text: i for i, text in reversed(list(enumerate(anchors)))}
    query_vectors = rows[[first_anchor[q] for q in queries]]
    if corpus is not None:
        given = _rows(corpus_embeddings, len(corpus), "corpus_embeddings", "corpus text")
        first_row = {text: i for i, text in reversed(list(enumerate(corpus)))}
        missing = [text for text in texts if text not in first_row]
        if missing:
            raise ValueError(f"corpus_embeddings covers `corpus` only, but {len(missing)} positive(s) are not in "
                             f"the corpus, e.g. {missing[0]!r}; add them to corpus and corpus_embeddings")
    else:
        given = _rows(corpus_embeddings, len(positive_texts), "corpus_embeddings", "dataset row")
        first_row = {text: i for i, text in reversed(list(enumerate(positive_texts)))}
    corpus_vectors = given[[first_row[text] for text in texts]]
    return (np.ascontiguousarray(query_vectors, dtype=np.float32),
            np.ascontiguousarray(corpus_vectors, dtype=np.float32))
