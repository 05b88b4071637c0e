"""Synthetic rows in the ``ultrafeedback_clair_32k`` layout, deterministic for a seed and independent of chunking.

``generate_rows(n, seed, start)`` yields rows ``start..start+n-1`` of one endless sequence: rows come
in blocks of ``_BLOCK``, each block from its own RNG seeded by (seed, block). A row is a builder's task
and answer grown to a log-normal length, with one to three flaws in ``rejected`` that ``chosen`` fixes,
and a ``rational`` naming them. Pure (stdlib ``random`` only).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from engine.tools.synthetic.builders import choose_builder
from engine.tools.synthetic.text import lognormal_len, paragraphs, pick
from engine.tools.synthetic.words import CLOSINGS, ENGAGE, FILLER_OPENERS, RAMBLES, TYPOS

__all__ = ["generate_rows", "raw_rows"]

_BLOCK = 1024

_TOPIC_WORD = {"@code": "this function", "@math": "this problem"}

Rng = random.Random


def _make_row(rng: Rng) -> tuple[str, str, str, str]:
    r = rng.random
    builder = choose_builder(r())
    target_task = lognormal_len(r, 470.0, 0.6, 50, 2000)
    target_ans = lognormal_len(r, 1600.0, 0.45, 200, 5000)
    task, rej, cho, issues, key, cap = builder(r, target_task)
    # grow the answer with body paragraphs up to its target length (same text in both versions)
    n = sum(len(s) + 2 for s in rej)
    body = paragraphs(r, key, min(target_ans, cap) - 130 - n, limit=4700 - n)
    rej.extend(body)
    cho.extend(body)
    closing = pick(r, CLOSINGS)
    if closing:
        rej.append(closing)
        cho.append(closing)
    # flaw: a rambling filler sentence (chosen drops it)
    if r() < 0.5 or not issues:
        at = int(r() * len(rej))
        ramble = pick(r, FILLER_OPENERS) + pick(r, RAMBLES).replace("{t}", _TOPIC_WORD.get(key, key))
        if not rej[at].startswith(("```", "**")) and "\n" not in rej[at]:
            rej[at] = rej[at] + " " + ramble
            issues.append("one rambling sentence repeats itself without adding information")
    # flaw: a typo (chosen has the correct spelling)
    if r() < 0.7 or not issues:
        seg = int(r() * len(rej))
        text = rej[seg]
        if not text.startswith("```"):
            for good, bad in (pick(r, TYPOS), TYPOS[0]):
                if good in text:
                    rej[seg] = text.replace(good, bad, 1)
                    issues.append(f"it misspells '{good.strip()}' as '{bad.strip()}'")
                    break
    # improvement: chosen is often a little more engaging (one extra sentence in a prose segment)
    if r() < 0.55 or not issues:
        seg = len(cho) - 1 - int(r() * min(3, len(cho)))
        text = cho[seg]
        if text and not text.startswith(("```", "**")) and "\n" not in text and text[-1] in ".!?":
            cho[seg] = text + " " + pick(r, ENGAGE)
            issues.append("it would be more engaging with one concrete, encouraging takeaway")
    rejected = "\n\n".join(rej)
    chosen = "\n\n".join(cho)
    if rejected == chosen:  # make sure the pair is contrastive (a small clarity edit)
        chosen = chosen + "\n\nIn short: focus on the essentials and build from there."
        issues.append("it ends without a clear takeaway")
    return task, chosen, rejected, _rational(r, issues)


_RATIONAL_OPEN = (
    "The student's answer is mostly correct and well structured.",
    "The student's answer addresses the task and covers the main points.",
    "Overall, the student's answer is helpful and on topic.",
    "The student's answer is a reasonable attempt that follows the instructions.",
)
_RATIONAL_CLOSE = (
    "The corrected answer fixes these issues while keeping the rest of the answer unchanged.",
    "Fixing these points makes the answer more correct, clearer and more engaging without changing its substance.",
    "Only these parts need to change; everything else can be copied as is.",
)


def _rational(r: Callable[[], float], issues: list[str]) -> str:
    if len(issues) == 1:
        found = f"However, {issues[0]}."
    else:
        found = "However, " + ", ".join(issues[:-1]) + f", and {issues[-1]}."
    return f"{pick(r, _RATIONAL_OPEN)} {found} {pick(r, _RATIONAL_CLOSE)}"


def raw_rows(n: int, seed: int, start: int) -> Iterator[tuple[str, str, str, str]]:
    if n < 0 or start < 0:
        raise ValueError("n and start must be >= 0")
    end = start + n
    idx = start
    while idx < end:
        block = idx // _BLOCK
        first = block * _BLOCK
        stop = min(first + _BLOCK, end)
        rng = random.Random(f"clair-sample:{seed}:{block}")
        for i in range(first, stop):
            row = _make_row(rng)
            if i >= idx:
                yield row
        idx = stop


def generate_rows(n: int, seed: int = 0, start: int = 0) -> Iterator[dict]:
    """Yield ``n`` rows (``start``-th onwards) in the ``ultrafeedback_clair_32k`` layout."""
    for task, chosen, rejected, rational in raw_rows(n, seed, start):
        yield {
            "prompt": task,
            "chosen": [{"role": "user", "content": task}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": task}, {"role": "assistant", "content": rejected}],
            "rational": rational,
        }


