"""How contrastive a (revision, original) pair is: the CLAIR paper's minimality heuristics (L2).

* ``jaccard``: whitespace-token Jaccard similarity (|A ∩ B| / |A ∪ B| of token sets; higher = more
  contrastive, 1.0 = same token set);
* ``levenshtein``: character Levenshtein distance (lower = more contrastive), computed by rapidfuzz;
* ``length_ratio``: len(revision) / len(original) in characters.
"""

from __future__ import annotations

from typing import Any

from rapidfuzz.distance import Levenshtein


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
