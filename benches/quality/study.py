"""The quality study: what the mining strategies and the active-learning selections do, on a
synthetic fine-grained image-text world whose truth is known (hardmine.synthetic.fine_grained_world).

One command, CPU only:  python benches/quality/study.py   (writes results.json here and docs/quality.png)

1. Negatives: a two-tower projection (one hidden layer per modality, torch) trained with a triplet
   loss whose negatives are re-mined every epoch from the current embeddings by
   `random`, `top` (hardest), `top` + relative_margin=0.05, or `cluster` (Tagami et al.'s reliable
   negatives, weighted). Reported: test R@1/5/10 both ways, and the false-negative rate of the mined
   negatives (a generic caption of the anchor image's own fine category: it describes the image).
2. Active learning: 5 rounds growing the paired training set by 10% of the pool each, chosen by
   random selection, core-set (k-center greedy) or hard-negative unpaired samples (Jo et al.);
   the model is retrained (in-batch contrastive loss) after each round; test R@1 is reported.

The world and the settings are fixed before looking at results and not tuned for any method.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hardmine
from hardmine import active, cluster
from hardmine.eval import recall_at_k
from hardmine.synthetic import fine_grained_world

SEEDS = (0, 1, 2)
EPOCHS = 12
MARGIN = 0.2
NEGATIVES = 3
BATCH = 256
STRATEGIES = ("random", "top", "top+relative_margin", "cluster")
ROUNDS = 5
HERE = Path(__file__).resolve().parent


class Towers(torch.nn.Module):
    def __init__(self, dim: int, hidden: int = 128, out: int = 64):
        super().__init__()
        self.image = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))
        self.text = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))

    def forward(self, images, texts):
        return (torch.nn.functional.normalize(self.image(images), dim=1),
                torch.nn.functional.normalize(self.text(texts), dim=1))


def split(world, seed: int):
    """80% of the instances train, 20% test (all captions of an instance on one side)."""
    rng = np.random.default_rng(1000 + seed)
    instances = rng.permutation(world.images.shape[0])
    cut = int(0.8 * instances.size)
    return np.sort(instances[:cut]), np.sort(instances[cut:])


def subset(world, instances: np.ndarray):
    """Images, captions, caption -> local image row, and truth for the given instances."""
    rows = np.flatnonzero(np.isin(world.caption_image, instances))
    local = np.searchsorted(instances, world.caption_image[rows])
    return (world.images[instances], world.captions[rows], local, world.fine[instances],
            world.fine[world.caption_image[rows]], world.generic[rows])


def embed(model, images, captions):
    with torch.no_grad():
        return (t.numpy() for t in model(torch.from_numpy(images), torch.from_numpy(captions)))


CLUSTERS = 32


def median_centroid_similarity(features: np.ndarray, seed: int) -> float:
    """The threshold rule for `cluster`, fixed a priori: the median cosine between distinct centroids
    (so about half of the cluster pairs count as dissimilar)."""
    centroids = cluster.kmeans(features, CLUSTERS, seed=seed, spherical=True, iters=10).centroids
    similarity = centroids @ centroids.T
    return float(np.median(similarity[~np.eye(CLUSTERS, dtype=bool)]))


def mine(strategy: str, image_emb, caption_emb, owner, seed: int, epoch: int, features):
    """(anchor image, positive caption, negative caption, weight) arrays for one epoch.

    `cluster` clusters the input features (the fixed, pretrained-encoder side of the world), as
    Tagami et al. cluster pretrained embeddings; the other strategies mine the current embeddings."""
    groups = dict(query_groups=np.arange(image_emb.shape[0]), candidate_groups=owner, metric="cosine")
    positives = np.arange(owner.size)  # every caption is a positive of its image
    if strategy == "cluster":
        images, captions, thresholds = features
        found = cluster.reliable_negatives(images, captions, owner, n_image_clusters=CLUSTERS,
                                           n_text_clusters=CLUSTERS, image_threshold=thresholds[0],
                                           text_threshold=thresholds[1], num_negatives=NEGATIVES,
                                           seed=seed * 100 + epoch, iters=10)
        return owner[found.anchor], found.anchor, found.negative, found.weight
    if strategy == "random":
        result = hardmine.mine(image_emb, caption_emb, strategy="random", num_negatives=NEGATIVES,
                               seed=seed * 100 + epoch, **groups)
    else:
        extra = {"relative_margin": 0.05} if strategy == "top+relative_margin" else {}
        result = hardmine.mine(image_emb, caption_emb, num_negatives=NEGATIVES, **groups, **extra)
    negatives = np.asarray(result.indices)[owner[positives]]  # each (image, caption) pair gets its image's
    keep = negatives >= 0
    anchors = np.repeat(owner[positives], keep.sum(1))
    return anchors, np.repeat(positives, keep.sum(1)), negatives[keep], np.ones(int(keep.sum()))


def false_negative_rate(anchors, negatives, image_fine, caption_fine, caption_generic) -> float:
    if anchors.size == 0:
        return float("nan")
    return float((caption_generic[negatives] & (caption_fine[negatives] == image_fine[anchors])).mean())


def train_triplet(world, train, strategy: str, seed: int):
    images, captions, owner, image_fine, caption_fine, generic = subset(world, train)
    torch.manual_seed(seed)
    model = Towers(images.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(seed)
    rates = []
    x, t = torch.from_numpy(images), torch.from_numpy(captions)
    features = None
    if strategy == "cluster":
        features = (images, captions, (median_centroid_similarity(images, seed),
                                       median_centroid_similarity(captions, seed + 1)))
    for epoch in range(EPOCHS):
        a, p, n, w = mine(strategy, *embed(model, images, captions), owner, seed, epoch, features)
        rates.append(false_negative_rate(a, n, image_fine, caption_fine, generic))
        order = rng.permutation(a.size)
        for start in range(0, order.size, BATCH):
            batch = order[start : start + BATCH]
            image_emb, positive_emb = model(x[a[batch]], t[p[batch]])
            negative_emb = torch.nn.functional.normalize(model.text(t[n[batch]]), dim=1)
            hinge = MARGIN - (image_emb * positive_emb).sum(1) + (image_emb * negative_emb).sum(1)
            loss = (torch.from_numpy(w[batch]).float() * hinge.clamp(min=0)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model, float(np.mean(rates))


def train_contrastive(world, instances, seed: int, epochs: int = EPOCHS):
    """CLIP-style in-batch loss on the given paired instances (the active-learning trainer)."""
    images, captions, owner, *_ = subset(world, instances)
    torch.manual_seed(seed)
    model = Towers(images.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(seed)
    x, t = torch.from_numpy(images), torch.from_numpy(captions)
    for _ in range(epochs):
        order = rng.permutation(owner.size)
        for start in range(0, order.size, BATCH):
            batch = order[start : start + BATCH]
            image_emb, text_emb = model(x[owner[batch]], t[batch])
            logits = image_emb @ text_emb.T / 0.07
            same = torch.from_numpy(owner[batch][:, None] == owner[batch][None, :]).float()
            targets = same / same.sum(1, keepdim=True)
            loss = -(targets * logits.log_softmax(1)).sum(1).mean() - (targets.T * logits.T.log_softmax(1)).sum(
                1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model


def evaluate(model, world, test) -> dict:
    images, captions, owner, *_ = subset(world, test)
    image_emb, caption_emb = embed(model, images, captions)
    recall = recall_at_k(image_emb, caption_emb, owner, ks=(1, 5, 10))
    return {"i2t": {str(k): v for k, v in recall.i2t.items()}, "t2i": {str(k): v for k, v in recall.t2i.items()},
            "rsum": recall.rsum}


def active_curve(world, train, test, method: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    step = int(0.1 * train.size)
    labeled = np.sort(rng.choice(train, size=step, replace=False))
    points = []
    for round_ in range(ROUNDS + 1):
        model = train_contrastive(world, labeled, seed)
        points.append({"fraction": labeled.size / train.size, **evaluate(model, world, test)})
        if round_ == ROUNDS:
            break
        pool = np.setdiff1d(train, labeled)
        if method == "random":
            chosen = rng.choice(pool, size=step, replace=False)
        else:
            pool_images, _ = embed(model, world.images[pool], world.captions[:1])
            if method == "coreset":
                labeled_images, _ = embed(model, world.images[labeled], world.captions[:1])
                chosen = pool[active.coreset(pool_images, labeled_images, step)]
            else:  # hard-negative unpaired samples (Jo et al.): score the pool images against the paired data
                images, captions, owner, *_ = subset(world, labeled)
                image_emb, caption_emb = embed(model, images, captions)
                scores = active.score_unpaired(pool_images, image_emb, caption_emb, owner, weight="hinge",
                                               margin=MARGIN)
                chosen = pool[active.select(scores, step)]
        labeled = np.sort(np.concatenate([labeled, chosen]))
    return points


def mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std())


def main() -> int:
    torch.set_num_threads(2)
    start = time.time()
    results: dict = {"settings": {"seeds": SEEDS, "epochs": EPOCHS, "margin": MARGIN, "negatives": NEGATIVES,
                                  "world": "fine_grained_world() defaults: 10 coarse x 8 fine x 12 instances, "
                                           "5 captions each, 30% generic"},
               "strategies": {}, "active": {}}
    for strategy in STRATEGIES:
        runs = []
        for seed in SEEDS:
            world = fine_grained_world(seed=seed)
            train, test = split(world, seed)
            model, rate = train_triplet(world, train, strategy, seed)
            runs.append({"seed": seed, "false_negative_rate": rate, **evaluate(model, world, test)})
            print(f"[{time.time() - start:6.0f}s] {strategy:<20} seed {seed}: rsum {runs[-1]['rsum']:.1f}, "
                  f"FN rate {rate:.3f}", flush=True)
        results["strategies"][strategy] = runs
    for method in ("random", "coreset", "hard-negative"):
        curves = []
        for seed in SEEDS:
            world = fine_grained_world(seed=seed)
            train, test = split(world, seed)
            curves.append(active_curve(world, train, test, method, seed))
            print(f"[{time.time() - start:6.0f}s] active {method:<14} seed {seed}: final R@1 i2t "
                  f"{curves[-1][-1]['i2t']['1']:.1f}", flush=True)
        results["active"][method] = curves
    results["seconds"] = time.time() - start
    (HERE / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(table(results))
    plot(results, HERE.parent.parent / "docs" / "quality.png")
    return 0


def table(results: dict) -> str:
    lines = ["| negatives | R@1 i2t | R@5 i2t | R@10 i2t | R@1 t2i | R@5 t2i | R@10 t2i | rsum | FN rate |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for strategy, runs in results["strategies"].items():
        cells = []
        for side in ("i2t", "t2i"):
            for k in ("1", "5", "10"):
                m, s = mean_std([r[side][k] for r in runs])
                cells.append(f"{m:.1f} ± {s:.1f}")
        m, s = mean_std([r["rsum"] for r in runs])
        fm, fs = mean_std([r["false_negative_rate"] for r in runs])
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {m:.1f} ± {s:.1f} | {fm:.3f} ± {fs:.3f} |")
    lines += ["", "| selection | " + " | ".join(f"{int(round(100 * p['fraction']))}% paired"
                                                for p in next(iter(results["active"].values()))[0]) + " |",
              "|---|" + "---:|" * (ROUNDS + 1)]
    for method, curves in results["active"].items():
        cells = []
        for i in range(ROUNDS + 1):
            m, s = mean_std([(c[i]["i2t"]["1"] + c[i]["t2i"]["1"]) / 2 for c in curves])
            cells.append(f"{m:.1f} ± {s:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(results["strategies"])
    rsum = [mean_std([r["rsum"] for r in results["strategies"][n]]) for n in names]
    rate = [mean_std([r["false_negative_rate"] for r in results["strategies"][n]]) for n in names]
    left.bar(names, [m for m, _ in rsum], yerr=[s for _, s in rsum], color="#4c72b0")
    left.set_ylabel("test rsum (R@1+5+10, both ways)")
    twin = left.twinx()
    twin.plot(names, [m for m, _ in rate], "o-", color="#c44e52")
    twin.set_ylabel("false-negative rate of mined negatives", color="#c44e52")
    left.set_title("negatives (mean ± std over seeds)")
    left.tick_params(axis="x", rotation=15)
    for method, curves in results["active"].items():
        fractions = [p["fraction"] for p in curves[0]]
        values = np.array([[(p["i2t"]["1"] + p["t2i"]["1"]) / 2 for p in c] for c in curves])
        right.errorbar(fractions, values.mean(0), yerr=values.std(0), marker="o", capsize=3, label=method)
    right.set_xlabel("fraction of the training pool paired")
    right.set_ylabel("test R@1 (mean of i2t, t2i)")
    right.set_title("active learning, 5 rounds")
    right.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
