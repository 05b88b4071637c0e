"""Parse a teacher's CLAIR answer into ``revision`` and ``rational`` (L3, pure, stdlib only).

What counts as a section header
-------------------------------
A header is a marker identifier (``Markers``: reasoning / revision / worsened) standing at the
start of a line, optionally indented, after a markdown heading (``### ``), wrapped in braces
(``{corrected_student_solution}``) and/or bold or italic (``**...**``, ``__...__``), with the
colon inside or outside the bold, case-insensitive, with ``_``, ``-`` and spaces (or nothing)
between words. After the identifier there must be a colon, the closing bold, or the end of the
line; text after the header on the same line belongs to the section. So these are headers::

    {corrected_student_solution}: Text...      **Corrected Student Solution:** Text...
    **{corrected_student_solution}**: Text...  ### Corrected Student Solution
    corrected_student_solution                 **Corrected student solution** Text...

and these are not (a mention, not a header)::

    I will now write the {corrected_student_solution} below.
    {corrected_student_solution} should keep the student's structure.

In-sentence mentions are never used as a fallback: no header means a ``no_marker`` failure.

Which section is the revision
-----------------------------
A section runs from its header to the next header of any kind, or to the end. The revision is
the LAST revision-header section whose text is non-empty. Models emit the real header once, at
the end of their reasoning; a header-like line that comes earlier is a quote or a plan inside
the reasoning, and a header with nothing under it (a restated header at the very end) is not an
answer. Taking the first header (what the public parsers do) returns the plan instead of the
revision in the first case. A worsened section is never the revision when a revision section
exists (it is excluded, status ``ok``; an empty revision section is ``empty_revision`` even
when a worsened section has text); with only worsened headers, the last non-empty worsened section
is returned with status ``worsened``.

``rational`` is the text of the reasoning section preceding the chosen header (from the last
reasoning header before it up to the next header); without one, the reasoning section after
it; without any reasoning header, the text before the first header. It may be ``""``.

Both fields are stripped of surrounding whitespace, of stray leading ``:``/``**`` left over by
odd header styling and of markdown rules (``---``) at their ends; everything inside (blank
lines, indentation, code blocks) is kept exactly.

Status: ``truncated`` when the answer was cut (``finish_reason == "length"``) but has a revision,
``worsened`` for a worsened-only answer (also when truncated: it must never pass as a
correction), else ``ok``. Failures (``ok=False``): ``empty_output``, ``no_marker``,
``empty_revision``, ``truncated_no_revision`` (a truncated answer without a usable revision,
whatever else is missing).

Thinking (``<think>...</think>``) is removed before parsing; markers inside it are ignored.
Bump ``PARSER_VERSION`` whenever any of this changes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from engine.core.types import DEFAULT_MARKERS, Markers, ParseResult

__all__ = ["PARSER_VERSION", "parse_answer", "strip_thinking"]

PARSER_VERSION = "1"

# --------------------------------------------------------------------------- thinking

_ANY_THINK = re.compile(r"</?think>", re.IGNORECASE)
_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_BLOCK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
_LEADING_OPEN = re.compile(r"\s*<think>", re.IGNORECASE)


def strip_thinking(content: str) -> tuple[str, str | None]:
    """Split ``content`` into (final answer, thinking text or None).

    * every ``<think>...</think>`` block is removed (its inside becomes thinking);
    * a ``</think>`` with no ``<think>`` before it (DeepSeek-R1 style, the opening tag was in the
      prompt): everything before it is thinking;
    * an unclosed ``<think>`` at the start (after the above): everything after it is thinking,
      the final answer is ``""`` (typically a ``length`` finish while thinking).

    Without think tags the content is returned unchanged; otherwise the final answer is stripped.
    An unclosed ``<think>`` after some answer text is left as text. Tags are case-insensitive.
    """
    if not _ANY_THINK.search(content):
        return content, None
    thoughts: list[str] = []
    close = _CLOSE.search(content)
    opening = _OPEN.search(content)
    if close is not None and (opening is None or opening.start() > close.start()):
        thoughts.append(content[: close.start()])
        content = content[close.end() :]

    def take(m: re.Match[str]) -> str:
        thoughts.append(m.group(1))
        return ""

    content = _BLOCK.sub(take, content)
    lead = _LEADING_OPEN.match(content)
    if lead is not None:
        thoughts.append(content[lead.end() :])
        content = ""
    thinking = "\n\n".join(t.strip() for t in thoughts if t.strip())
    return content.strip(), thinking or None


# --------------------------------------------------------------------------- headers

_BOLD = r"(?:\*{1,3}|_{1,3})"


def _norm(identifier: str) -> str:
    """Key under which a matched identifier is looked up (case, braces, separators ignored)."""
    return re.sub(r"[\s_\-{}]+", "", identifier).lower()


def _id_pattern(identifier: str) -> str:
    words = [w for w in re.split(r"[\s_\-{}]+", identifier) if w]
    return r"[ \t_\-]*".join(re.escape(w) for w in words)


class _Grammar(NamedTuple):
    header: re.Pattern[str]  # matched at line starts only
    kinds: dict[str, str]  # normalized identifier -> "reasoning" | "revision" | "worsened"
    first_words: tuple[str, ...]  # lower-cased first word of every identifier (a cheap pre-filter)


@lru_cache(maxsize=32)
def _grammar(markers: Markers) -> _Grammar:
    kinds: dict[str, str] = {}
    for kind in ("reasoning", "worsened", "revision"):  # later kinds win a (misconfigured) clash
        for ident in getattr(markers, kind):
            if _norm(ident):
                kinds[_norm(ident)] = kind
    idents = sorted(
        {i for kind in ("reasoning", "revision", "worsened") for i in getattr(markers, kind) if _norm(i)},
        key=lambda i: (-len(_norm(i)), i),
    )
    if not idents:
        raise ValueError("Markers has no usable identifier")
    alternation = "|".join(_id_pattern(i) for i in idents)
    header = re.compile(
        rf"""
        ^[ \t]*(?:\#{{1,6}}[ \t]*)?             # indentation, markdown heading
        (?P<open>{_BOLD})?[ \t]*                # opening bold / italic
        \{{?[ \t]*(?P<id>{alternation})(?![^\W_])[ \t]*\}}?
        (?P<close>[ \t]*{_BOLD})?               # closing bold before the colon: **{{x}}**:
        (?P<colon>[ \t]*:)?
        (?:[ \t]*{_BOLD}(?=[ \t]|$))?           # closing bold after the colon: **X:**
        [ \t]*(?P<eol>\r?$)?
        """,
        re.IGNORECASE | re.MULTILINE | re.VERBOSE,
    )
    first = {re.split(r"[\s_\-{}]+", i.strip(" \t\n_-{}"))[0].lower() for i in idents}
    return _Grammar(header, kinds, tuple(sorted(first)))


class _Header(NamedTuple):
    kind: str
    start: int  # start of the header line
    end: int  # where the section's text begins


def _candidate_lines(text: str, grammar: _Grammar) -> list[int]:
    """Starts of the lines where an identifier's first word follows only header decoration.

    A case-insensitive regex scan over the whole answer is slow in ``re``; ``str.find`` on the
    lower-cased text is ~10x faster, and the full header pattern then runs once per candidate.
    """
    low = text.lower()
    if len(low) != len(text):  # a few code points change length when lower-cased: scan every line
        return [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    starts = set()
    for word in grammar.first_words:
        pos = low.find(word)
        while pos != -1:
            line = low.rfind("\n", 0, pos) + 1
            if not low[line:pos].strip(" \t#*_{"):
                starts.add(line)
            # a later hit on the same line has this one in its prefix: go to the next line
            eol = low.find("\n", pos)
            pos = -1 if eol == -1 else low.find(word, eol)
    return sorted(starts)


def _headers(text: str, grammar: _Grammar) -> list[_Header]:
    found = []
    for line in _candidate_lines(text, grammar):
        m = grammar.header.match(text, line)
        if m is None:
            continue
        if m.group("colon") is None and m.group("eol") is None and not (m.group("open") and m.group("close")):
            continue  # identifier followed by more words: a sentence, not a header
        found.append(_Header(grammar.kinds[_norm(m.group("id"))], m.start(), m.end()))
    return found


_RULE = re.compile(r"[ \t]*(?:-{3,}|\*{3,}|_{3,}|={3,})[ \t]*")  # a markdown rule / separator line
_LEADING_JUNK = re.compile(r"\A(?:\s*(?::|\*\*(?=\s|\Z)|[ \t]*(?:-{3,}|\*{3,}|_{3,}|={3,})[ \t]*(?=\n)))+")


def _clean(text: str) -> str:
    """Strip whitespace, stray leading ':' / '**' and separator lines at either end."""
    text = _LEADING_JUNK.sub("", text.strip()).strip()
    while True:
        cut = text.rfind("\n")
        if cut == -1:
            return "" if _RULE.fullmatch(text) else text
        if _RULE.fullmatch(text, cut + 1) is None:
            return text
        text = text[:cut].rstrip()


# --------------------------------------------------------------------------- parsing


def _fail(kind: str, message: str) -> ParseResult:
    return ParseResult(ok=False, error_kind=kind, message=message)


def _section(text: str, headers: list[_Header], i: int) -> str:
    end = headers[i + 1].start if i + 1 < len(headers) else len(text)
    return _clean(text[headers[i].end : end])


def _rational(text: str, headers: list[_Header], chosen: int) -> str:
    before = [i for i in range(chosen) if headers[i].kind == "reasoning"]
    if before:
        return _section(text, headers, before[-1])
    after = [i for i in range(chosen + 1, len(headers)) if headers[i].kind == "reasoning"]
    if after:
        return _section(text, headers, after[0])
    return _clean(text[: headers[0].start])


def parse_answer(
    content: str | None, *, truncated: bool = False, markers: Markers = DEFAULT_MARKERS
) -> ParseResult:
    """Parse one answer (thinking is removed first); see the module docstring for the rules."""
    name = markers.revision[0] if markers.revision else "revision"
    text = strip_thinking(content)[0] if content else ""
    if not text.strip():
        if truncated:
            return _fail("truncated_no_revision", "answer cut at max_tokens before any final text")
        what = "answer has only thinking, no final text" if content and content.strip() else "empty answer"
        return _fail("empty_output", what)

    try:
        grammar = _grammar(markers)
    except TypeError:  # Markers built with lists (unhashable): use an equal one made of tuples
        grammar = _grammar(
            Markers(tuple(markers.reasoning), tuple(markers.revision), tuple(markers.worsened))
        )
    headers = _headers(text, grammar)
    # revision sections if there is any revision header, else worsened ones; the last non-empty wins
    kind = "revision" if any(h.kind == "revision" for h in headers) else "worsened"
    chosen: int | None = None
    revision = ""
    empty_header = False
    for i in range(len(headers) - 1, -1, -1):
        if headers[i].kind == kind:
            revision = _section(text, headers, i)
            if revision:
                chosen = i
                break
            empty_header = True
    status = "ok" if kind == "revision" else "worsened"

    if chosen is None:
        if truncated:
            return _fail("truncated_no_revision", f"answer cut at max_tokens before a non-empty {{{name}}}")
        if empty_header:
            if kind == "worsened" and markers.worsened:
                name = markers.worsened[0]
            return _fail("empty_revision", f"the {{{name}}} section is empty")
        return _fail("no_marker", f"no {{{name}}} header at the start of a line")
    if truncated and status == "ok":
        status = "truncated"
    return ParseResult(ok=True, revision=revision, rational=_rational(text, headers, chosen), status=status)
