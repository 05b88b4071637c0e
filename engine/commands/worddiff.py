"""A word-level diff of an original answer and its revision (pure; ``clair show`` renders it).

The texts are split into whitespace-separated words and compared with :mod:`difflib` on the words alone,
so a change of whitespace only (a re-wrapped line, a doubled space) is not a change; the whitespace kept
in the output is the revision's for unchanged and inserted words and the original's for deleted ones.

:func:`word_diff` returns :class:`Run` s, each a maximal stretch of ``equal``, ``delete`` (only in the
original) or ``insert`` (only in the revision) words; a replaced stretch is a ``delete`` run followed by an
``insert`` run. :func:`render_plain` writes them with git's ``--word-diff=plain`` markers::

    The capital of France is [-Lyon.-]{+Paris.+} It is [-very-] big.

and can cut long unchanged stretches down to a few words of context on each side
(``[... 120 unchanged words ...]``, see :func:`elide`). A text that holds the markers itself is shown as
it is (the notation is for eyes, not for parsing back).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["DELETE", "EQUAL", "INSERT", "SKIP", "Run", "changed", "elide", "render_plain", "separator", "skipped",
           "word_diff"]

EQUAL: Literal["equal"] = "equal"
DELETE: Literal["delete"] = "delete"
INSERT: Literal["insert"] = "insert"
SKIP: Literal["skip"] = "skip"
Kind = Literal["equal", "delete", "insert", "skip"]

#: a word and the whitespace before it
_TOKEN = re.compile(r"(\s*)(\S+)")
#: above this many word comparisons, difflib's "popular word" heuristic is switched on (speed over the
#: nicest alignment; ~1,500 words on each side, an answer of ~9 KB)
_EXACT_LIMIT = 2_250_000


@dataclass(frozen=True, slots=True)
class Run:
    """A stretch of words of one kind. ``text`` is the words with the whitespace between them (none at
    either end); ``before`` is the whitespace in front of the first word (in the text the words are from).
    A ``skip`` run (made by :func:`elide` only) stands for unchanged words left out; its ``text`` is their
    count."""

    kind: Kind
    text: str
    before: str = ""


def _tokens(text: str) -> tuple[list[str], list[str]]:
    words, spaces = [], []
    for m in _TOKEN.finditer(text):
        spaces.append(m.group(1))
        words.append(m.group(2))
    return words, spaces


def _run(kind: Kind, words: list[str], spaces: list[str], i: int, j: int) -> Run:
    text = words[i]
    for k in range(i + 1, j):
        text += spaces[k] + words[k]
    return Run(kind, text, spaces[i])


def word_diff(original: str, revision: str) -> list[Run]:
    """The runs that turn ``original`` into ``revision``, in reading order (empty when both have no words)."""
    a, a_sp = _tokens(original)
    b, b_sp = _tokens(revision)
    sm = difflib.SequenceMatcher(None, a, b, autojunk=len(a) * len(b) > _EXACT_LIMIT)
    out: list[Run] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            out.append(_run(EQUAL, b, b_sp, j1, j2))
            continue
        if i2 > i1:  # "delete" or the first half of "replace"
            out.append(_run(DELETE, a, a_sp, i1, i2))
        if j2 > j1:  # "insert" or the second half of "replace"
            out.append(_run(INSERT, b, b_sp, j1, j2))
    return out


def changed(runs: list[Run]) -> bool:
    """Whether any word was deleted or inserted."""
    return any(r.kind != EQUAL for r in runs)


#: an unchanged stretch is cut only when it leaves out at least this many words
MIN_CUT = 4


def elide(runs: list[Run], context: int) -> list[Run]:
    """``runs`` with long unchanged stretches cut to ``context`` words next to each change; the words left
    out become a run of kind ``skip`` whose ``text`` is their count. ``context < 0`` keeps everything, and a
    diff without a change is kept whole."""
    if context < 0 or not changed(runs):
        return runs
    out: list[Run] = []
    last = len(runs) - 1
    for i, r in enumerate(runs):
        if r.kind != EQUAL:
            out.append(r)
            continue
        words, spaces = _tokens(r.text)
        spaces[0] = r.before
        keep_head = 0 if i == 0 else context
        keep_tail = 0 if i == last else context
        if len(words) - keep_head - keep_tail < MIN_CUT:
            out.append(r)
            continue
        if keep_head:
            out.append(_run(EQUAL, words, spaces, 0, keep_head))
        out.append(Run(SKIP, str(len(words) - keep_head - keep_tail), " " if keep_head else r.before))
        if keep_tail:
            out.append(Run(EQUAL, _run(EQUAL, words, spaces, len(words) - keep_tail, len(words)).text, " "))
    return out


def render_plain(runs: list[Run], context: int = -1) -> str:
    """The diff as text: ``[-deleted words-]``, ``{+inserted words+}``, unchanged words as they are.

    With ``context >= 0``, unchanged stretches keep that many words next to each change and the words
    between are shown as ``[... N unchanged words ...]`` (see :func:`elide`); ``-1`` shows everything."""
    parts: list[str] = []
    runs = elide(runs, context)
    for i, r in enumerate(runs):
        parts.append(separator(runs, i))
        if r.kind == DELETE:
            parts.append(f"[-{r.text}-]")
        elif r.kind == INSERT:
            parts.append(f"{{+{r.text}+}}")
        elif r.kind == SKIP:
            parts.append(skipped(r))
        else:
            parts.append(r.text)
    return "".join(parts)


def separator(runs: list[Run], i: int) -> str:
    """The whitespace to write before run ``i``: none before the first run and between the two halves of a
    replacement (``[-old-]{+new+}``), else the run's own (a space when it has none: the words after a
    deletion at the start of the text)."""
    r = runs[i]
    if i == 0 or (r.kind == INSERT and runs[i - 1].kind == DELETE):
        return ""
    return r.before or " "


def skipped(r: Run) -> str:
    return f"[... {r.text} unchanged words ...]"
