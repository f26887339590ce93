"""The real-data study: which negatives train a better text retrieval model (issue "prove it on real data").

    python benches/quality/real_study.py --quick     # CI: Debian, 4,000 train pairs, 3 seeds (3-5 min)
    python benches/quality/real_study.py             # full: 3 data sets, 10,000 pairs, 10 seeds (~18 min)
    python benches/quality/real_study.py --transformer   # confirming run with all-MiniLM-L6-v2 itself

Data: benches/quality/data/textpairs.py (pairs, groups, false-negative relations; sha256 recorded).
Model: a static embedding model distilled from all-MiniLM-L6-v2 (benches/quality/text_models.py),
trained one epoch with MultipleNegativesRankingLoss (batch 128, AdamW without weight decay, lr 0.05
decaying linearly to 0, as sentence-transformers trains a StaticEmbedding):
every strategy gets the same batches and steps. Negatives are mined once, by hardmine, from the
distilled model's embeddings of the training pairs (row level: duplicates stay candidates).

Strategies (settings fixed before looking at results):
  inbatch     in-batch negatives only
  random      uniform negatives (own document excluded)
  top         naive top-n hardest
  recommended hardmine.recipes.recommended(n): top-n, relative_margin=0.05 (NV-Retriever's TopK-PercPos),
              the known relations as positives (same source package / shared lemma / same text)
              and exclude_keys = text hash (one document per text)
  st          the sentence-transformers recipe: random in ranks 10-50, relative_margin=0.05
  tagami      Tagami et al.: cluster-based reliable negatives (hardmine.cluster.reliable_negatives,
              32 clusters a side, thresholds at the median centroid cosine, linear weights) in an
              added loss term next to the in-batch one (weight 1)
  jo          Jo et al.'s active selection (hardmine.active): from 20% of the training pairs,
              3 rounds each adding 10% chosen among the rest by hard-negative unpaired score
              (binary weight, margin 0.2) vs `jo-random` (uniformly chosen); in-batch loss,
              retrained after each round. (Not a mining strategy: n does not apply.)
Reported per data set, strategy and n: R@1/5/10 and MRR@10 of held-out queries against every
document (a document with the same text as the query's own counts as a hit), mean +- 95% CI over
seeds, paired differences against inbatch and random (per-query bootstrap, 10,000 resamples),
the false-negative rate among mined negatives (from the known relations) and the mining time.
Everything but the times (written beside, *_timings.json) is the same bytes run to run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "data")]

import text_models as models
import textpairs

import hardmine
from hardmine import active, cluster, recipes

RESULTS = HERE.parent / "results"
MINED = ("random", "top", "recommended", "st", "tagami")
BINS = np.round(np.linspace(-0.2, 1.0, 25), 2)  # score histograms (base model's cosine)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Config:
    datasets: tuple[str, ...] = ("debian", "wordnet", "bible")
    train: int = 10_000
    test: int = 2_000
    seeds: tuple[int, ...] = tuple(range(10))
    negatives: tuple[int, ...] = (1, 3)
    strategies: tuple[str, ...] = ("inbatch",) + MINED + ("jo",)
    batch: int = 128
    lr: float = 0.05
    model: str = "static"


QUICK = Config(datasets=("debian",), train=4_000, test=1_000, seeds=(0, 1, 2))
TRANSFORMER = Config(datasets=("debian",), train=2_000, test=500, seeds=(0, 1), negatives=(1,),
                     strategies=("inbatch", "random", "top", "recommended"), batch=32, lr=5e-5, model="transformer")


class Data:
    """One data set's train/test sample, tokenised, with the base model's embeddings."""

    def __init__(self, pairs: textpairs.PairSet, config: Config):
        self.pairs = pairs
        train_rows, test_rows = textpairs.split(pairs, config.train, config.test, seed=0)
        self.train, self.test = pairs.take(train_rows), pairs.take(test_rows)
        texts = self.train.queries + self.train.documents + self.test.queries + self.test.documents
        tokens = models.token_ids(texts)
        self.vectors = None
        if config.model == "static":  # the static model holds only the tokens the data uses
            used = np.unique(np.concatenate(tokens))
            self.vectors = models.distill(used)
            tokens = [np.searchsorted(used, t) for t in tokens]
        n, m = len(self.train), len(self.test)
        self.train_q, self.train_d = tokens[:n], tokens[n:2 * n]
        self.test_q, self.test_d = tokens[2 * n:2 * n + m], tokens[2 * n + m:]
        self.related = textpairs.related(self.train.keys)
        text_keys = [next(k for k in keys if k.startswith("text:")) for keys in self.train.keys]
        self.text_ids = np.unique(np.array(text_keys), return_inverse=True)[1].astype(np.int64)
        # evaluation: test queries against every document; a hit is any document with the own text
        all_docs = self.train.documents + self.test.documents
        ids = {text: i for i, text in enumerate(sorted(set(all_docs)))}
        self.doc_text = np.array([ids[t] for t in all_docs], dtype=np.int64)
        self.base = self.model(config)
        self.base_q = models.encode(self.base, self.train_q)
        self.base_d = models.encode(self.base, self.train_d)

    def model(self, config: Config) -> torch.nn.Module:
        return models.Static(self.vectors) if config.model == "static" else models.Transformer()

    def evaluate(self, model) -> np.ndarray:
        """Per test query: the rank (0-based) of the first hit in the top 10, 10 when none."""
        q = models.encode(model, self.test_q)
        d = models.encode(model, self.train_d + self.test_d)
        top = hardmine.topk(q, d, k=10).indices
        own = self.doc_text[len(self.train) + np.arange(len(self.test))]
        hit = self.doc_text[top] == own[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), 10)

    def histogram(self, chosen: np.ndarray) -> list[int]:
        """Counts of the base model's scores of (query row, chosen document) pairs over BINS."""
        rows, cols = np.nonzero(chosen >= 0)
        scores = np.einsum("ij,ij->i", self.base_q[rows], self.base_d[chosen[rows, cols]])
        return np.histogram(np.clip(scores, BINS[0], BINS[-1]), bins=BINS)[0].tolist()

    def false_negative_rate(self, negatives: np.ndarray) -> float:
        indptr, ids = self.related
        rows, cols = np.nonzero(negatives >= 0)
        if rows.size == 0:
            return 0.0
        found = sum(int(negatives[r, c] in ids[indptr[r]:indptr[r + 1]]) for r, c in zip(rows, cols))
        return found / rows.size


def mine(data: Data, strategy: str, n: int, seed: int):
    """(negatives (P, n), reliable or None) for a mining strategy, from the base embeddings."""
    q, d, own = data.base_q, data.base_d, np.arange(len(data.train))
    if strategy == "random":
        return hardmine.mine(q, d, positives=own, num_negatives=n, strategy="random", seed=seed).indices, None
    if strategy == "top":
        return hardmine.mine(q, d, positives=own, num_negatives=n).indices, None
    if strategy == "recommended":
        return hardmine.mine(q, d, positives=data.related, exclude_keys=data.text_ids,
                             **recipes.recommended(n)).indices, None
    if strategy == "st":
        return hardmine.mine(q, d, positives=own, num_negatives=n, strategy="random", rank_range=(10, 50),
                             relative_margin=0.05, seed=seed).indices, None
    if strategy == "tagami":
        thresholds = [median_centroid_cosine(x, s) for x, s in ((q, seed), (d, seed + 1))]
        found = cluster.reliable_negatives(q, d, n_image_clusters=32, n_text_clusters=32,
                                           image_threshold=thresholds[0], text_threshold=thresholds[1],
                                           num_negatives=n, seed=seed)
        ids, weights = np.full((own.size, n), -1, np.int64), np.zeros((own.size, n))
        slot = np.zeros(own.size, np.int64)
        for a, b, w in zip(found.anchor, found.negative, found.weight):
            ids[a, slot[a]], weights[a, slot[a]] = b, w
            slot[a] += 1
        return np.full((own.size, 0), -1, np.int64), (ids, weights)
    raise ValueError(strategy)


def median_centroid_cosine(x: np.ndarray, seed: int) -> float:
    """Tagami's threshold, fixed a priori: the median cosine between distinct centroids of the
    same spherical k-means reliable_negatives runs (so about half of the cluster pairs count as dissimilar)."""
    c = cluster.kmeans(x, 32, seed=seed, spherical=True).centroids
    sims = c @ c.T
    return float(np.median(sims[~np.eye(len(c), dtype=bool)]))


def train_eval(data: Data, config: Config, seed: int, negatives: np.ndarray, rows=None, reliable=None):
    rows = np.arange(len(data.train)) if rows is None else rows
    model = data.model(config)
    neg = negatives[rows] if negatives.size else np.zeros((rows.size, 0), np.int64)
    if reliable is not None:
        reliable = (reliable[0][rows], reliable[1][rows])
    models.train(model, [data.train_q[r] for r in rows], data.train_d, neg, seed=seed, batch=config.batch,
                 lr=config.lr, reliable=reliable, query_rows=rows)
    return model, data.evaluate(model)


def active_learning(data: Data, config: Config, seed: int, chooser: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = len(data.train)
    labelled = np.sort(rng.permutation(p)[: p // 5])
    model = None
    for _ in range(3):
        pool = np.setdiff1d(np.arange(p), labelled)
        budget = p // 10
        if chooser == "random":
            chosen = pool[rng.permutation(pool.size)[:budget]]
        else:
            current = data.base if model is None else model
            d_pool = models.encode(current, [data.train_d[r] for r in pool])
            d_lab = models.encode(current, [data.train_d[r] for r in labelled])
            q_lab = models.encode(current, [data.train_q[r] for r in labelled])
            scores = active.score_unpaired(d_pool, d_lab, q_lab, margin=0.2, weight="binary")
            chosen = pool[active.select(scores, budget)]
        labelled = np.sort(np.concatenate([labelled, chosen]))
        model, ranks = train_eval(data, config, seed, np.zeros((p, 0), np.int64), rows=labelled)
    return ranks


def summary(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    half = T_975.get(a.size - 1, 1.96) * a.std(ddof=1) / np.sqrt(a.size) if a.size > 1 else float("nan")
    return {"mean": round(float(a.mean()), 4), "ci95": round(float(half), 4), "per_seed": [round(float(x), 4) for x in a]}


def metrics(ranks: np.ndarray) -> dict:
    return {"R@1": 100 * float(np.mean(ranks < 1)), "R@5": 100 * float(np.mean(ranks < 5)),
            "R@10": 100 * float(np.mean(ranks < 10)), "MRR@10": 100 * float(np.mean(np.where(ranks < 10, 1 / (ranks + 1), 0)))}


def paired(ranks: np.ndarray, base: np.ndarray, seed: int) -> dict:
    """R@1 difference (points) against a baseline, per-query paired bootstrap over the test
    queries of the seed-averaged hit difference: mean, 95% interval, two-sided p."""
    diff = ((ranks < 1).astype(np.float64) - (base < 1)).mean(axis=0)  # (queries,), averaged over seeds
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, diff.size, (10_000, diff.size))].mean(axis=1)
    p = min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0)))
    return {"diff": round(100 * float(diff.mean()), 3), "ci95": [round(100 * float(np.quantile(boot, 0.025)), 3),
                                                                   round(100 * float(np.quantile(boot, 0.975)), 3)],
            "p": round(float(p), 4)}


def study(config: Config, log=print) -> tuple[dict, dict]:
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    results, timings = {"config": asdict(config), "datasets": {}}, {}
    for name in config.datasets:
        start = time.perf_counter()
        pairs = textpairs.load(name)
        data = Data(pairs, config)
        out = {"pairs": len(pairs), "sha256": pairs.sha256(), "train": len(data.train), "test": len(data.test),
               "documents": len(data.train) + len(data.test), "base": metrics(data.evaluate(data.base)),
               "bins": BINS.tolist(), "positive_histogram": data.histogram(np.arange(len(data.train))[:, None]),
               "runs": {}}
        timings[name] = {"prepare_s": round(time.perf_counter() - start, 2), "mining_s": {}}
        ranks = {}
        for strategy in config.strategies:
            for n in (config.negatives if strategy in MINED else (None,)):
                label = strategy if n is None else f"{strategy}/n={n}"
                per_seed, fn, scores = [], [], []
                for seed in config.seeds:
                    if strategy == "jo":
                        per_seed.append(active_learning(data, config, seed, "hard"))
                        continue
                    negatives, reliable = np.zeros((len(data.train), 0), np.int64), None
                    if strategy in MINED:
                        t0 = time.perf_counter()
                        negatives, reliable = mine(data, strategy, n, seed)
                        timings[name]["mining_s"].setdefault(label, []).append(round(time.perf_counter() - t0, 3))
                        chosen = negatives if reliable is None else reliable[0]
                        fn.append(100 * data.false_negative_rate(chosen))
                        if seed == config.seeds[0]:
                            scores.append(data.histogram(chosen))
                    per_seed.append(train_eval(data, config, seed, negatives, reliable=reliable)[1])
                ranks[label] = np.stack(per_seed)
                run = {m: summary([metrics(r)[m] for r in per_seed]) for m in ("R@1", "R@5", "R@10", "MRR@10")}
                if fn:
                    run["false_negative_rate"] = summary(fn)
                    run["score_histogram"] = scores[0]
                out["runs"][label] = run
                log(f"{name} {label}: R@1 {run['R@1']['mean']:.2f} ± {run['R@1']['ci95']:.2f}"
                    + (f", false negatives {run['false_negative_rate']['mean']:.2f}%" if fn else ""))
        if "jo" in config.strategies:
            ranks["jo-random"] = np.stack([active_learning(data, config, s, "random") for s in config.seeds])
            out["runs"]["jo-random"] = {m: summary([metrics(r)[m] for r in ranks["jo-random"]])
                                        for m in ("R@1", "R@5", "R@10", "MRR@10")}
            out["paired"] = {"jo vs jo-random": paired(ranks["jo"], ranks["jo-random"], 0)}
        else:
            out["paired"] = {}
        for base in ("inbatch", "random/n=1", "random/n=3"):
            if base not in ranks:
                continue
            for label, r in ranks.items():
                if label != base and not label.startswith("jo") and (base == "inbatch" or label.endswith(base[-3:])):
                    out["paired"][f"{label} vs {base}"] = paired(r, ranks[base], 0)
        results["datasets"][name] = out
    return results, timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI size: Debian, 4,000 pairs, 3 seeds")
    mode.add_argument("--transformer", action="store_true", help="the confirming run with all-MiniLM-L6-v2")
    parser.add_argument("--out", help="the results JSON (default benches/results/quality_real[_quick|_transformer].json)")
    args = parser.parse_args(argv)
    config, suffix = (QUICK, "_quick") if args.quick else (TRANSFORMER, "_transformer") if args.transformer else (Config(), "")
    out = Path(args.out) if args.out else RESULTS / f"quality_real{suffix}.json"
    try:
        results, timings = study(config)
    except textpairs.SourceMissing as error:
        print(f"real_study: {error}", file=sys.stderr)
        return 2
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_name(out.stem + "_timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
