"""Paired text data sets with known false-negative relations, built at run time from Debian's
packages (the texts are not committed: Debian descriptions carry per-package licences).

    python benches/quality/data/textpairs.py [debian|wordnet|bible ...]   # prints sizes and sha256

Each data set is a list of pairs (query text, document text) with, per pair:
- ``group``: the split unit (Debian: source package; WordNet: the synset's head lemma; Bible:
  book and chapter); groups holding one document text are joined, so splits never cut a group
  and no document text crosses splits.
- ``keys``: relation keys. Two pairs sharing a key are related, so pair j's document is a
  *false negative* for pair i's query (Debian: same source package or identical long text;
  WordNet: a shared lemma (synonym or same word) or identical document; Bible: identical text).

The pair list is sorted and its sha256 (over the JSON lines) is reported with every result, so a
moved archive (new package versions, another WordNet) is visible.

Sources (install them once, as root):
    apt-get update -o Acquire::Languages=en
    apt-get install -y wordnet-base sword-text-kjv sword-text-web diatheke
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAMES = ("debian", "wordnet", "bible")
INSTALL = ("apt-get update -o Acquire::Languages=en && "
           "apt-get install -y wordnet-base sword-text-kjv sword-text-web diatheke")


@dataclass(frozen=True)
class PairSet:
    name: str
    queries: list[str]
    documents: list[str]
    groups: list[str]
    keys: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.queries)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for row in zip(self.queries, self.documents, self.groups, self.keys):
            digest.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        return digest.hexdigest()

    def take(self, rows) -> PairSet:
        rows = [int(r) for r in rows]
        return PairSet(self.name, [self.queries[r] for r in rows], [self.documents[r] for r in rows],
                       [self.groups[r] for r in rows], [self.keys[r] for r in rows])


class SourceMissing(RuntimeError):
    pass


def _text_key(text: str) -> str:
    return "text:" + hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def _pairs(name: str, rows: list[tuple[str, str, str, tuple[str, ...]]]) -> PairSet:
    rows = sorted(set(rows))
    return PairSet(name, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


# ---------------------------------------------------------------- Debian package descriptions

def _stanzas(text: str):
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and last is not None:
                fields[last] += "\n" + line[1:]
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if fields:
            yield fields


def parse_debian(translations: list[str], available: str, min_words: int = 5) -> PairSet:
    """Pairs "package: short description" -> long description from ``Translation-en`` texts and
    ``apt-cache dumpavail``'s (for each package's Source)."""
    source = {}
    for fields in _stanzas(available):
        if "Package" in fields:
            source.setdefault(fields["Package"], fields.get("Source", fields["Package"]).split()[0])
    rows, seen = [], set()
    for text in translations:
        for fields in _stanzas(text):
            package, description = fields.get("Package"), fields.get("Description-en")
            if not package or not description or package in seen:
                continue
            seen.add(package)
            short, _, long = description.partition("\n")
            long = " ".join(" ".join("" if line.strip() == "." else line for line in long.splitlines()).split())
            if len(long.split()) < min_words:
                continue
            src = source.get(package, package)
            rows.append((f"{package}: {short.strip()}", long, src, ("src:" + src, _text_key(long))))
    return _pairs("debian", rows)


def debian() -> PairSet:
    lists = sorted(glob.glob("/var/lib/apt/lists/*_i18n_Translation-en*"))
    if not lists:
        raise SourceMissing(f"no Translation-en lists under /var/lib/apt/lists; run: {INSTALL}")
    texts = [subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True,
                            text=True).stdout for path in lists]
    available = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    return parse_debian(texts, available)


# ---------------------------------------------------------------- WordNet (reverse dictionary)

POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def parse_wordnet(lines, min_words: int = 4) -> PairSet:
    """Pairs definition -> "lemma, lemma (pos)" from WordNet ``data.*`` lines (Hill et al.'s
    reverse dictionary). The definition is the gloss before its first quoted example."""
    rows = []
    for line in lines:
        if line.startswith(" ") or "|" not in line:
            continue  # the licence header
        head, _, gloss = line.partition("|")
        fields = head.split()
        pos, count = fields[2], int(fields[3], 16)
        # adjectives carry a syntactic marker, e.g. "galore(ip)"
        lemmas = [re.sub(r"\(\w+\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(count)]
        definition = gloss.split('; "')[0].strip().rstrip(";").strip()
        if len(definition.split()) < min_words:
            continue
        document = f"{', '.join(dict.fromkeys(lemmas))} ({POS[pos]})"
        keys = tuple(sorted({"lemma:" + lemma.lower() for lemma in lemmas} | {_text_key(document)}))
        rows.append((definition, document, lemmas[0].lower(), keys))
    return _pairs("wordnet", rows)


def wordnet() -> PairSet:
    files = [Path(f"/usr/share/wordnet/data.{pos}") for pos in ("noun", "verb", "adj", "adv")]
    if not all(path.exists() for path in files):
        raise SourceMissing(f"WordNet data files missing under /usr/share/wordnet; run: {INSTALL}")
    lines = [line for path in files for line in path.read_text(encoding="latin-1").splitlines()]
    return parse_wordnet(lines)


# ---------------------------------------------------------------- Bible verses (KJV -> WEB)

VERSE = re.compile(r"^\s*(.+?) (\d+):(\d+):\s?(.*)$")
MARKUP = re.compile(r"<[^>]*>")


def parse_verses(text: str) -> dict[tuple[str, int, int], str]:
    """diatheke -f plain output -> {(book, chapter, verse): text}; continuation lines join their
    verse, markup and the module's trailing ``(name)`` line are dropped."""
    verses: dict[tuple[str, int, int], str] = {}
    current = None
    for line in text.splitlines():
        match = VERSE.match(line)
        if match:
            current = (match.group(1).strip(), int(match.group(2)), int(match.group(3)))
            verses[current] = match.group(4)
        elif current is not None and line.strip() and not re.fullmatch(r"\s*\(\w+\)\s*", line):
            verses[current] += " " + line
    return {ref: " ".join(MARKUP.sub("", text).split()) for ref, text in verses.items()}


def parse_bible(kjv: str, web: str, min_words: int = 3) -> PairSet:
    a, b = parse_verses(kjv), parse_verses(web)
    rows = []
    for ref in sorted(a.keys() & b.keys()):
        query, document = a[ref], b[ref]
        if len(query.split()) < min_words or len(document.split()) < min_words:
            continue
        rows.append((query, document, f"{ref[0]} {ref[1]}", (_text_key(document),)))
    return _pairs("bible", rows)


def bible() -> PairSet:
    def read(module: str) -> str:
        try:
            done = subprocess.run(["diatheke", "-b", module, "-f", "plain", "-k", "Gen 1:1-Rev 22:21"],
                                  check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as error:
            raise SourceMissing(f"diatheke could not read {module} ({error}); run: {INSTALL}") from error
        if len(done.stdout) < 1000:
            raise SourceMissing(f"diatheke found no text in {module}; run: {INSTALL}")
        return done.stdout
    return parse_bible(read("engKJV2006eb"), read("engWEB2015eb"))


BUILDERS = {"debian": debian, "wordnet": wordnet, "bible": bible}


def load(name: str) -> PairSet:
    if name not in BUILDERS:
        raise ValueError(f"data set must be one of {NAMES}; got {name!r}")
    return BUILDERS[name]()


# ---------------------------------------------------------------- splits and relations

def split_units(pairs: PairSet) -> np.ndarray:
    """Per row, its split unit: groups joined when they hold the same document text (e.g. two
    Debian source packages shipping one description), so no text is on both sides."""
    names, group_ids = np.unique(np.array(pairs.groups, dtype=object), return_inverse=True)
    parent = np.arange(names.size)

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first: dict[str, int] = {}
    for g, document in zip(group_ids, pairs.documents):
        other = first.setdefault(document, g)
        a, b = root(g), root(other)
        parent[max(a, b)] = min(a, b)
    return np.array([root(g) for g in group_ids], dtype=np.int64)


def split(pairs: PairSet, train: int, test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row ids of a train and a test sample of whole split units (:func:`split_units`): units in
    a seeded order fill test first, then train, each up to its size (a unit that does not fit is
    skipped)."""
    units = split_units(pairs)
    order = np.random.default_rng(seed).permutation(units.max() + 1 if units.size else 0)
    members: list[list[int]] = [[] for _ in range(order.size)]
    for row, unit in enumerate(units):
        members[unit].append(row)
    chosen: dict[str, list[int]] = {"test": [], "train": []}
    for g in order:
        for side, size in (("test", test), ("train", train)):
            if members[g] and len(chosen[side]) + len(members[g]) <= size:
                chosen[side].extend(members[g])
                break
        if len(chosen["test"]) >= test and len(chosen["train"]) >= train:
            break
    return np.sort(np.array(chosen["train"], dtype=np.int64)), np.sort(np.array(chosen["test"], dtype=np.int64))


def related(keys: list[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, ids) of the rows sharing at least one key with each row (itself included)."""
    by_key: dict[str, list[int]] = {}
    for row, row_keys in enumerate(keys):
        for key in row_keys:
            by_key.setdefault(key, []).append(row)
    indptr, ids = [0], []
    for row_keys in keys:
        rows = sorted({r for key in row_keys for r in by_key[key]})
        ids.extend(rows)
        indptr.append(len(ids))
    return np.array(indptr, dtype=np.int64), np.array(ids, dtype=np.int64)


def main(argv: list[str]) -> int:
    for name in argv or NAMES:
        try:
            pairs = load(name)
        except SourceMissing as error:
            print(f"{name}: {error}", file=sys.stderr)
            return 2
        print(f"{name}: {len(pairs)} pairs, {len(set(pairs.groups))} groups, sha256 {pairs.sha256()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
