"""The plain answer the mock sends as a student (policy) model: deterministic, marker-free, sized.

``StudentAnswers(tokens, seed)`` precomputes a few answer bodies once (sentences in seeded orders, some
with a misspelling or a filler opener the mock teacher then fixes, so a two-stage run revises something
real); ``answer(user_text)`` picks one by a stable hash of the prompt and the seed, opens it with a
sentence re-using a few of the prompt's words, and fills it to about ``tokens * 4`` characters (the
mock's ``tokens`` tokens; it ends at the first sentence end past that size). Per request: one CRC32, a
split of the prompt's first few hundred characters and one bisect. The answer never holds a CLAIR
marker (``{task}``, ``teacher reasoning``, ...): the prompt's words are re-used one by one, alphabetic
only, never as a phrase. Pure.
"""

from __future__ import annotations

import bisect
import random
import zlib

__all__ = ["STUDENT_DEFAULT_TOKENS", "StudentAnswers"]

#: the length of a student answer, in the mock's tokens (4 characters each), when not configured
STUDENT_DEFAULT_TOKENS = 300

_SENTENCES = (
    "The first step is to be clear about what you want to achieve and why it matters to you.",
    "It helps to break the problem into smaller parts and to deal with them one at a time.",
    "A common mistake is to try to change everything at once, which rarely works for long.",
    "Start with what you can control today, and build from there as you learn more.",
    "Keep a simple record of what you try, so you can see what actually makes a difference.",
    "If something does not work, adjust it rather than giving up on the whole plan.",
    "Small, steady improvements usually beat one big effort that is hard to sustain.",
    "It is worth asking someone with more experience, since they can point out things you might miss.",
    "Remember that the right approach depends on your situation, so adapt these ideas to your needs.",
    "Set a realistic timeline and check your progress regularly against it.",
    "Think about the costs and the benefits before you commit to a particular option.",
    "There is no single correct answer here, but a few principles apply in most cases.",
    "Make sure the basics are in place before you move on to the more advanced steps.",
    "Be patient with yourself, because real progress often takes longer than expected.",
    "Look for reliable sources and compare what they say before making a decision.",
    "Finally, review the result and ask whether it really solved the original problem.",
)
#: small flaws the mock teacher's revision removes (see revision.py): a misspelling, a filler, "very"
_FLAWED = (
    "This is very important becuase it affects teh rest of the plan.",
    "Basically, the details matter less than the overall direction.",
    "It is definately worth doing this in a diffrent order if the first attempt fails.",
    "You will recieve better results if you keep thier advice in mind.",
    "To be honest, most people find this part the hardest.",
    "This is a very common situation, and it is not neccessary to solve it alone.",
)
_OPENERS = (
    "Here is how I would think about {words}.",
    "Good question! When it comes to {words}, a few things are worth keeping in mind.",
    "Sure. Let me explain the main points about {words}.",
    "There are several ways to approach {words}, and I will go through the most useful ones.",
)
_NO_WORDS = "this question"
_VARIANTS = 16
_PARAGRAPH = 4  # sentences per paragraph
_SCAN_CHARS = 400  # the prompt's words are taken from its first few hundred characters
_MAX_WORDS = 3
_STRIP = ".,;:!?\"'()[]{}<>*_`#-/\\"
_COMMON = frozenset(
    "about also been could does doing explain from give have help into just know like make many more most much "
    "need please should some tell than that them then there these they this want what when where which while "
    "will with would write your".split()
)


class StudentAnswers:
    """The student answers of one server: about ``tokens`` tokens each, varied by ``seed``."""

    def __init__(self, tokens: int = STUDENT_DEFAULT_TOKENS, seed: int = 0) -> None:
        if tokens < 1:
            raise ValueError("student tokens must be >= 1")
        self.size = tokens * 4
        self.seed = seed & 0xFFFFFFFF
        self.bodies: list[str] = []
        self.ends: list[list[int]] = []  # per body: the offsets just past each sentence
        for v in range(_VARIANTS):
            body, ends = _body(self.size, random.Random(f"student:{seed}:{v}"))
            self.bodies.append(body)
            self.ends.append(ends)

    def answer(self, user_text: str) -> str:
        """The student's answer to a prompt whose last user message is ``user_text``."""
        h = zlib.crc32(user_text.encode("utf-8", "surrogatepass"), self.seed)
        opener = _OPENERS[h % len(_OPENERS)].format(words=_words(user_text))
        v = (h >> 8) % _VARIANTS
        ends = self.ends[v]
        need = self.size - len(opener) - 1
        i = bisect.bisect_left(ends, need)
        cut = ends[min(i, len(ends) - 1)]
        return f"{opener} {self.bodies[v][:cut]}"


def _body(size: int, rng: random.Random) -> tuple[str, list[int]]:
    """Sentences in a seeded order, a flawed one now and then, grouped in paragraphs, until at least
    ``size`` characters; with the offset just past each sentence (the places an answer may end)."""
    parts: list[str] = []
    ends: list[int] = []
    n = 0
    k = 0
    pool = list(_SENTENCES)
    while n < size:
        if not pool:
            pool = list(_SENTENCES)
        s = _FLAWED[rng.randrange(len(_FLAWED))] if rng.random() < 0.2 else pool.pop(rng.randrange(len(pool)))
        sep = "" if k == 0 else ("\n\n" if k % _PARAGRAPH == 0 else " ")
        parts.append(sep + s)
        n += len(sep) + len(s)
        ends.append(n)
        k += 1
    return "".join(parts), ends


def _words(user_text: str) -> str:
    """Up to three distinct, not too common words of the prompt (alphabetic, 4+ letters), as "a, b and c"."""
    seen: list[str] = []
    for raw in user_text[:_SCAN_CHARS].split():
        w = raw.strip(_STRIP).lower()
        if len(w) >= 4 and w.isalpha() and w not in _COMMON and w not in seen:
            seen.append(w)
            if len(seen) == _MAX_WORDS:
                break
    if not seen:
        return _NO_WORDS
    if len(seen) == 1:
        return seen[0]
    return f"{', '.join(seen[:-1])} and {seen[-1]}"
