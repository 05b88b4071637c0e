"""How contrastive a (revision, original) pair is: the CLAIR paper's minimality heuristics (L2).

* ``jaccard``: whitespace-token Jaccard similarity (|A ∩ B| / |A ∪ B| of token sets; higher = more
  contrastive, 1.0 = same token set);
* ``levenshtein``: character Levenshtein distance (lower = more contrastive), computed by rapidfuzz;
* ``length_ratio``: len(revision) / len(original) in characters.

``pair_metrics`` scores one pair (the reference); ``batch_metrics`` scores whole Arrow columns with the
same results, in Arrow, numpy and rapidfuzz kernels that release the GIL, so the writer thread can score
a chunk of rows without stalling the event loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

#: the distance rapidfuzz is told to expect (``score_hint``): results are exact for any distance
LEVENSHTEIN_HINT = 64
#: characters ``str.split()`` treats as whitespace that Unicode's White_Space (Arrow's split) does not
_PY_ONLY_SPACE = "[\x1c-\x1f]"


def jaccard(a: str, b: str) -> float:
    ta, tb = set(a.split()), set(b.split())
    if not ta and not tb:
        return 1.0
    inter = len(ta.intersection(tb)) if len(ta) < len(tb) else len(tb.intersection(ta))
    return inter / (len(ta) + len(tb) - inter)  # |A ∪ B| without building the union


def levenshtein(a: str, b: str) -> int:
    return int(Levenshtein.distance(a, b))


def length_ratio(revision: str, original: str) -> float | None:
    return len(revision) / len(original) if original else None


def pair_metrics(revision: str, original: str) -> dict[str, Any]:
    return {
        "jaccard": jaccard(revision, original),
        "levenshtein": levenshtein(revision, original),
        "length_ratio": length_ratio(revision, original),
    }


def batch_metrics(revision: pa.Array, original: pa.Array) -> dict[str, pa.Array]:
    """``pair_metrics`` for two aligned string columns: the same values, null where either is null."""
    revision, original = _plain(revision), _plain(original)
    valid = pc.and_(pc.is_valid(revision), pc.is_valid(original)).to_numpy(zero_copy_only=False)
    n = len(revision)
    jac = np.full(n, np.nan)
    lev = np.zeros(n, dtype=np.int64)
    ratio = np.full(n, np.nan)
    idx = np.flatnonzero(valid)
    if len(idx):
        rev, orig = revision.take(idx), original.take(idx)
        jac[idx] = _batch_jaccard(rev, orig)
        # exact whatever the hint: it only picks rapidfuzz's banded algorithm first (a minimal revision is
        # a few edits away: ~3x faster on 3.6 KB answers, and never slower on distant ones)
        lev[idx] = process.cpdist(rev.to_pylist(), orig.to_pylist(), scorer=Levenshtein.distance, workers=1,
                                  score_hint=LEVENSHTEIN_HINT)
        rlen = pc.utf8_length(rev).to_numpy().astype(np.float64)
        olen = pc.utf8_length(orig).to_numpy().astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[idx] = np.where(olen > 0, rlen / olen, np.nan)
    invalid = ~valid
    return {
        "jaccard": pa.array(jac, mask=invalid, type=pa.float64()),
        "levenshtein": pa.array(lev, mask=invalid, type=pa.int64()),
        "length_ratio": pa.array(ratio, mask=np.isnan(ratio), type=pa.float64()),
    }


def _plain(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _tokens(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The ``str.split()`` tokens of every row, flattened, and the row each one comes from."""
    if pc.any(pc.match_substring_regex(col, _PY_ONLY_SPACE)).as_py():
        col = pc.replace_substring_regex(col, _PY_ONLY_SPACE, " ")
    # ASCII text (most answers) splits the same on ASCII whitespace, at half the cost of the UTF-8 split
    ascii_only = pc.all(pc.string_is_ascii(col)).as_py()
    lists = pc.ascii_split_whitespace(col) if ascii_only else pc.utf8_split_whitespace(col)
    flat, rows = pc.list_flatten(lists), pc.list_parent_indices(lists)
    nonempty = pc.not_equal(pc.binary_length(flat), 0)  # Arrow keeps empty pieces at the ends
    return flat.filter(nonempty), rows.filter(nonempty).to_numpy().astype(np.int64)


def _unique_sorted(keys: np.ndarray) -> np.ndarray:
    keys = np.sort(keys)
    if len(keys) < 2:
        return keys
    keep = np.empty(len(keys), dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def _codes(fa: pa.Array, fb: pa.Array) -> np.ndarray:
    """One integer code per token of ``fa`` then ``fb``, equal tokens equal codes. A chunked array is
    encoded with one dictionary for both chunks (no concatenated copy); should a pyarrow ever give each
    chunk its own, the tokens are concatenated and encoded at once."""
    enc = pc.dictionary_encode(pa.chunked_array([fa, fb], type=fa.type))
    chunks = enc.chunks
    if len(chunks) == 2 and chunks[0].dictionary.equals(chunks[1].dictionary):
        return np.concatenate([c.indices.to_numpy() for c in chunks]).astype(np.int64)
    if len(chunks) <= 1:  # one side without tokens
        return np.concatenate([c.indices.to_numpy() for c in chunks] or [np.zeros(0, np.int64)]).astype(np.int64)
    both = pa.concat_arrays([fa.cast(pa.large_string()), fb.cast(pa.large_string())])
    return pc.dictionary_encode(both).indices.to_numpy().astype(np.int64)


def _batch_jaccard(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Token-set Jaccard per row: tokens become integer codes, (row, code) keys are deduplicated by a
    sort, and a key present in both sides is one shared token of that row."""
    n = len(a)
    fa, rows_a = _tokens(a)
    fb, rows_b = _tokens(b)
    codes = _codes(fa, fb)
    k = int(codes.max()) + 1 if len(codes) else 1
    ka = _unique_sorted(rows_a * k + codes[: len(fa)])
    kb = _unique_sorted(rows_b * k + codes[len(fa) :])
    merged = np.sort(np.concatenate([ka, kb]))
    shared = merged[1:][merged[1:] == merged[:-1]]
    na = np.bincount(ka // k, minlength=n)
    nb = np.bincount(kb // k, minlength=n)
    ni = np.bincount(shared // k, minlength=n)
    union = na + nb - ni
    return np.where(union == 0, 1.0, ni / np.maximum(union, 1))
