"""`hardmine report`: the HTML page about mined negatives, checked by parsing it."""

from __future__ import annotations

import base64
import html.parser
import json

import numpy as np
import pytest
from conftest import hardmine_mine, paired_dump

import hardmine
from hardmine import report


class Page(html.parser.HTMLParser):
    """The numbers (``data-key`` cells), images and suspect rows of a report page."""

    def __init__(self, text: str):
        super().__init__()
        self.values: dict[str, str] = {}
        self.images: list[bytes] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-value" in attrs:
            self.values[attrs["data-key"]] = attrs["data-value"]
        if tag == "img":
            head, _, data = attrs["src"].partition(",")
            assert head == "data:image/png;base64", head  # embedded, nothing fetched
            self.images.append(base64.b64decode(data))
        if tag == "table":
            self._table = attrs.get("id")
            self.tables.setdefault(self._table, [])
        if tag == "tr" and self._table:
            self.tables[self._table].append([])
        if tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        if tag == "table":
            self._table = None


def world(seed: int = 0):
    """Queries, candidates with planted near-duplicates of the positives and shared keys, positives."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((120, 12)).astype(np.float32)
    own = q + 0.3 * rng.standard_normal(q.shape).astype(np.float32)
    copies = own[:30] + 1e-3 * rng.standard_normal((30, 12)).astype(np.float32)  # near-duplicates of 0..29
    other = rng.standard_normal((200, 12)).astype(np.float32)
    other[:10] = own[40:50] + 0.4 * rng.standard_normal((10, 12)).astype(np.float32)
    c = np.concatenate([own, copies, other])
    keys = np.concatenate([np.arange(120), 1000 + np.arange(30), 2000 + np.arange(200)])
    keys[150:160] = np.arange(40, 50)  # ten rows near positives 40..49 share their keys
    return q, c, np.arange(120), keys


def expected(result, c, positives, keys, margin=0.05, near=0.95):
    """The page's numbers, computed here independently."""
    ids, s, s_p = result.indices, result.scores.astype(np.float64), result.positive_scores.astype(np.float64)
    valid = ids >= 0
    gap = s - s_p[:, None]
    unit = c / np.linalg.norm(c, axis=1, keepdims=True)
    suspects = same = dup = 0
    for row, rank in zip(*np.nonzero(valid)):
        negative, positive = ids[row, rank], positives[row]
        a, b = keys[negative] == keys[positive], float(unit[negative] @ unit[positive]) >= near
        same, dup, suspects = same + a, dup + b, suspects + (a or b)
    return {"negatives": int(valid.sum()), "above_positive": (valid & (gap > 0)).sum() / valid.sum(),
            "within_margin": (valid & (gap <= 0) & (gap > -margin)).sum() / valid.sum(),
            "short_queries": int((valid.sum(1) < ids.shape[1]).sum()), "identical_keys": same,
            "near_duplicates": dup, "suspects": suspects}


def test_the_page_shows_the_numbers_images_and_suspects(tmp_path):
    q, c, positives, keys = world()
    result = hardmine.mine(q, c, positives=positives, num_negatives=4, metric="cosine", min_score=0.7)
    texts = [f"candidate text {i}" for i in range(len(c))]
    numbers = report.write(result, q, c, tmp_path / "r.html", positives=positives, keys=keys, texts=texts,
                           query_texts=[f"query {i}" for i in range(len(q))], options={"strategy": "top"})
    want = expected(result, c, positives, keys)
    page = Page((tmp_path / "r.html").read_text())
    assert want["suspects"] > 20 and want["identical_keys"] > 0 and want["near_duplicates"] > 0  # planted
    assert want["short_queries"] > 0  # min_score leaves some queries short
    for key, value in want.items():
        assert float(page.values[key]) == pytest.approx(float(value), abs=1e-12), key
        assert float(getattr(numbers, key)) == pytest.approx(float(value), abs=1e-12), key
    assert len(page.images) == 3 and all(png.startswith(b"\x89PNG\r\n") for png in page.images)
    assert (tmp_path / "r.png").read_bytes() == page.images[0]
    rows = page.tables["suspects"][1:]
    assert len(rows) == min(50, want["suspects"])
    # texts side by side: each suspect row names the query, the positive and the negative
    query, negative, positive = int(rows[0][0]), int(rows[0][2]), int(rows[0][4])
    assert rows[0][7:] == [f"query {query}", f"candidate text {positive}", f"candidate text {negative}"]
    assert negative in result.indices[query] and positive == positives[query]
    assert page.tables["options"] == [["strategy", '"top"']]


def test_the_page_without_positives_says_suspects_need_them(tmp_path):
    q, c, positives, _ = world(1)
    result = hardmine.mine(q, c, positives=positives, num_negatives=3)
    numbers = report.write(result, q, c, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    assert numbers.suspects == 0 and page.values["suspects"] == "0"
    assert "Suspects need the positives" in (tmp_path / "r.html").read_text()
    assert "Not given" in (tmp_path / "r.html").read_text()  # no mining options


@pytest.mark.parametrize("bad, message", [
    (dict(texts=["a"]), "texts must have one entry per candidate"),
    (dict(query_texts=["a"]), "query_texts must have one entry per query"),
    (dict(positives=np.arange(3)), "positives must have 120 rows"),
    (dict(keys=np.arange(3)), "keys must have one entry per candidate"),
    (dict(positives=np.full(120, 10_000)), "positives must be candidate rows"),
])
def test_bad_input_names_the_argument_and_writes_nothing(tmp_path, bad, message):
    q, c, positives, _ = world()
    result = hardmine.mine(q, c, positives=positives, num_negatives=2)
    with pytest.raises(ValueError, match=message):
        report.write(result, q, c, tmp_path / "r.html", **bad)
    assert not list(tmp_path.iterdir())


def test_mismatched_embeddings_are_refused(tmp_path):
    q, c, positives, _ = world()
    result = hardmine.mine(q, c, positives=positives, num_negatives=2)
    with pytest.raises(ValueError, match="queries has 10 rows"):
        report.write(result, q[:10], c, tmp_path / "r.html")
    with pytest.raises(ValueError, match="candidates has 5 rows"):
        report.write(result, q, c[:5], tmp_path / "r.html")


@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".jsonl"])
def test_cli_reports_every_output_format_alike(tmp_path, suffix):
    c, q, positives = paired_dump(tmp_path, 300, 80, 16)
    keys = np.arange(len(c)) % 50
    np.save(tmp_path / "keys.npy", keys)
    (tmp_path / "texts.txt").write_text("\n".join(f"text {i}" for i in range(len(c))) + "\n")
    done = hardmine_mine(tmp_path, "--queries", "queries.npy", "--candidates", "candidates.npy", "--positives",
                         "positives.npy", "--num-negatives", "3", "--out", f"out{suffix}", "--quiet")
    assert done.returncode == 0, done.stderr
    done = _report(tmp_path, f"out{suffix}", "--queries", "queries.npy", "--candidates", "candidates.npy",
                   "--positives", "positives.npy", "--keys", "keys.npy", "--texts", "texts.txt",
                   "--options", json.dumps({"num_negatives": 3}), "--html", "page.html")
    assert done.returncode == 0, done.stderr
    assert "suspected false negatives" in done.stdout
    page = Page((tmp_path / "page.html").read_text())
    result = hardmine.mine(q, c, positives=positives, num_negatives=3)
    want = expected(result, c, positives, keys)
    for key, value in want.items():
        assert float(page.values[key]) == pytest.approx(float(value), abs=1e-12), key
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_maps_named_ids_back_and_refuses_without_them(tmp_path):
    c, q, positives = paired_dump(tmp_path, 300, 80, 16)
    np.save(tmp_path / "names.npy", np.array([f"doc-{i}" for i in range(len(c))]))
    done = hardmine_mine(tmp_path, "--queries", "queries.npy", "--candidates", "candidates.npy", "--positives",
                         "positives.npy", "--candidate-ids", "names.npy", "--out", "out.jsonl", "--quiet")
    assert done.returncode == 0, done.stderr
    args = ["out.jsonl", "--queries", "queries.npy", "--candidates", "candidates.npy", "--html", "p.html"]
    refused = _report(tmp_path, *args)
    assert refused.returncode == 2 and "--candidate-ids" in refused.stderr
    assert not (tmp_path / "p.html").exists()
    done = _report(tmp_path, *args, "--candidate-ids", "names.npy", "--positives", "positives.npy")
    assert done.returncode == 0, done.stderr
    result = hardmine.mine(q, c, positives=positives, num_negatives=5)
    page = Page((tmp_path / "p.html").read_text())
    assert float(page.values["above_positive"]) == pytest.approx(expected(result, c, positives,
                                                                          np.arange(len(c)))["above_positive"])


def test_cli_refuses_an_unknown_output_and_bad_options(tmp_path):
    paired_dump(tmp_path, 300, 80, 16)
    (tmp_path / "out.csv").write_text("x")
    args = ["--queries", "queries.npy", "--candidates", "candidates.npy", "--html", "p.html"]
    done = _report(tmp_path, "out.csv", *args)
    assert done.returncode == 2 and ".npz, .parquet or .jsonl" in done.stderr
    hardmine_mine(tmp_path, "--queries", "queries.npy", "--candidates", "candidates.npy", "--out", "o.npz", "--quiet")
    done = _report(tmp_path, "o.npz", *args, "--options", "{not json")
    assert done.returncode == 2 and "--options must be a JSON object" in done.stderr
    assert not (tmp_path / "p.html").exists()


def _report(cwd, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "hardmine", "report", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_an_empty_result_and_queries_without_positives_still_make_a_page(tmp_path):
    c = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    empty = {"indices": np.zeros((0, 3), np.int64), "scores": np.zeros((0, 3), np.float32),
             "positive_scores": np.zeros(0, np.float32)}
    numbers = report.write(empty, np.zeros((0, 4), np.float32), c, tmp_path / "e.html")
    assert numbers.queries == 0 and numbers.negatives == 0 and Page((tmp_path / "e.html").read_text()).images
    lonely = {"indices": np.array([[1, 2, -1]] * 3), "scores": np.array([[0.5, 0.4, -np.inf]] * 3, np.float32),
              "positive_scores": np.full(3, np.nan, np.float32)}
    numbers = report.write(lonely, c[:3], c, tmp_path / "l.html")
    assert (numbers.negatives, numbers.short_queries, numbers.above_positive) == (6, 3, 0.0)
