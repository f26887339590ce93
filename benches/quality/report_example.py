"""`hardmine report` on real negatives: naive top-3 vs the recommended recipe on the Debian pairs.

    python benches/quality/report_example.py OUT_DIR

Mines the study's Debian training sample with the distilled model and writes, per recipe,
OUT_DIR/RECIPE.html and .png through the CLI, as a user would (the dumps, keys and texts are
written to OUT_DIR first). Keys are the source packages, so same-source negatives show as suspects.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import real_study


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(real_study.Config(), datasets=("debian",))
    data = real_study.Data(real_study.textpairs.load("debian"), config)
    np.save(out / "queries.npy", data.base_q)
    np.save(out / "documents.npy", data.base_d)
    np.save(out / "positives.npy", np.arange(len(data.train)))
    sources = [next(k for k in keys if k.startswith("src:")) for keys in data.train.keys]
    np.save(out / "sources.npy", np.unique(np.array(sources), return_inverse=True)[1].astype(np.int64))
    np.save(out / "text_ids.npy", data.text_ids)
    np.savez(out / "related.npz", indptr=data.related[0], indices=data.related[1])
    (out / "documents.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in data.train.documents))
    (out / "queries.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in data.train.queries))
    recipes = {"top": ["--positives", "positives.npy"],
               "recommended": ["--positives", "related.npz", "--relative-margin", "0.05",
                               "--exclude-keys", "text_ids.npy"]}
    for name, flags in recipes.items():
        mine = [sys.executable, "-m", "hardmine", "mine", "--queries", "queries.npy", "--candidates", "documents.npy", "--metric",
                "cosine", "--num-negatives", "3", *flags, "--out", f"{name}.parquet", "--overwrite", "--quiet"]
        subprocess.run(mine, cwd=out, check=True)
        report = [sys.executable, "-m", "hardmine", "report", f"{name}.parquet", "--queries", "queries.npy", "--candidates",
                  "documents.npy", "--positives", "positives.npy", "--keys", "sources.npy", "--texts",
                  "documents.jsonl", "--query-texts", "queries.jsonl", "--options",
                  json.dumps(dict(zip(flags[::2], flags[1::2]))), "--html", f"{name}.html"]
        subprocess.run(report, cwd=out, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
