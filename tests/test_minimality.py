"""The minimality metrics: the per-pair reference and the column version must agree exactly."""

from __future__ import annotations

import random
import sys

import numpy as np
import pyarrow as pa
import pytest

from engine.minimality import batch_metrics, jaccard, pair_metrics

ALPHABET = ["a", "b", "c", "é", "漢", "🙂", " ", "  ", "\n", "\t", "\x1c", "\x1f", "\xa0", "\u3000", "\u2028",
            "\x85", "\u200b", "\ufeff", ".", ",", "foo", "bar", "Foo"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))


def _check(revisions: list[str | None], originals: list[str | None]) -> None:
    got = batch_metrics(pa.array(revisions, pa.string()), pa.array(originals, pa.string()))
    for i, (r, o) in enumerate(zip(revisions, originals, strict=True)):
        if r is None or o is None:
            assert got["jaccard"][i].as_py() is None and got["levenshtein"][i].as_py() is None
            assert got["length_ratio"][i].as_py() is None
            continue
        want = pair_metrics(r, o)
        assert got["jaccard"][i].as_py() == want["jaccard"], (r, o)  # exact, not approximate
        assert got["levenshtein"][i].as_py() == want["levenshtein"], (r, o)
        assert got["length_ratio"][i].as_py() == want["length_ratio"], (r, o)


def test_batch_metrics_equal_the_reference_on_random_unicode_pairs():
    rng = random.Random(7)
    revisions, originals = [], []
    for _ in range(2000):
        o = _text(rng)
        r = o if rng.random() < 0.1 else (o + _text(rng) if rng.random() < 0.5 else _text(rng))
        revisions.append(r)
        originals.append(o)
    _check(revisions, originals)


def test_batch_metrics_edge_cases():
    _check(["", " ", "a", "", "a b", None, "x", "same text", "a\x1cb"],
           ["", "", "", "a", "b a a", "x", None, "same text", "a b"])
    empty = batch_metrics(pa.array([], pa.string()), pa.array([], pa.string()))
    assert all(len(v) == 0 for v in empty.values())


def test_batch_metrics_accepts_chunked_columns():
    rev = pa.chunked_array([["a b", "c"], ["d e f"]])
    orig = pa.chunked_array([["a"], ["c d", "f e d"]])
    got = batch_metrics(rev, orig)
    assert got["jaccard"].to_pylist() == [jaccard("a b", "a"), jaccard("c", "c d"), 1.0]


def test_arrow_and_python_split_on_the_same_whitespace():
    """Every code point: str.split() and the column path must cut (or not cut) at it alike."""
    points = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    texts = [f"{chr(c)}a{chr(c)}b{chr(c)}" for c in points]
    got = batch_metrics(pa.array(texts), pa.array(["a b"] * len(texts)))["jaccard"].to_numpy()
    want = np.array([jaccard(t, "a b") for t in texts])
    bad = [hex(points[i]) for i in np.flatnonzero(got != want)]
    assert not bad, bad[:20]


def test_ascii_columns_split_on_the_same_whitespace(monkeypatch):
    """An all-ASCII column takes Arrow's ASCII split: every ASCII character must cut (or not) as
    str.split() does, in both paths."""
    import pyarrow.compute as pc

    calls = []
    ascii_split = pc.ascii_split_whitespace
    monkeypatch.setattr(pc, "ascii_split_whitespace", lambda col: (calls.append(len(col)), ascii_split(col))[1])
    texts = [f"{chr(c)}a{chr(c)}b{chr(c)}c d" for c in range(128)]
    _check(texts, ["a b"] * len(texts))  # ASCII only
    assert calls == [128, 128]  # both sides took the ASCII path
    _check([*texts, "é"], ["a b"] * 129)  # one non-ASCII row: the UTF-8 path for that side
    assert calls == [128, 128, 129]


@pytest.mark.parametrize("n", [1, 257])
def test_batch_metrics_on_long_texts(n):
    rng = random.Random(n)
    words = [f"w{i}" for i in range(500)]
    originals = [" ".join(rng.choice(words) for _ in range(300)) for _ in range(n)]
    revisions = [o.replace("w1 ", "w2 ", 3) + " extra" for o in originals]
    _check(revisions, originals)
