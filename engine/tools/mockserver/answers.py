"""The CLAIR answer the mock teacher sends: reasoning, then the revision, in one of five layouts.

``build_answer`` wraps ``revise``'s edit and notes in a teacher's reasoning and a revision section
whose header style (``ANSWER_STYLES``) ``answer_style`` picks by a stable hash of the solution;
``no_marker_answer`` is the same revision without CLAIR markers (the ``no_marker`` fault);
``identical_answer`` a well-formed answer whose revision is the student's answer unchanged (the
``identical`` fault: a teacher that copies). Pure.
"""

from __future__ import annotations

import zlib

from engine.tools.mockserver.revision import mock_revision, revise

__all__ = ["ANSWER_STYLES", "answer_style", "build_answer", "identical_answer", "no_marker_answer", "ramble"]

_REASONING_INTROS = (
    "The student's answer addresses the task and is mostly on the right track, but a few small changes "
    "will make it clearer, more correct and more engaging.",
    "Overall, the student has understood the task and the structure of the answer is sound. Only a few "
    "details need attention.",
    "The answer covers the main points the task asks for. My goal is to improve it minimally, keeping "
    "the student's own wording wherever it is already good.",
)
_REASONING_BODY = (
    "Correctness: I checked each statement against the task. The content is broadly accurate, so there "
    "is no need to rewrite whole sections; fixing individual words is enough to remove the errors a "
    "reader would notice first.",
    "Clarity: spelling mistakes and filler phrases distract the reader and make the answer look less "
    "careful than it is. Removing them keeps the meaning intact while making every sentence easier to "
    "read.",
    "Engagement: the tone is friendly and suits the task. A more direct phrasing keeps the reader's "
    "attention without changing the substance or the length of the answer.",
    "Structure: the order of the ideas follows the task well, so I keep the paragraphs, lists and any "
    "code exactly as the student wrote them.",
    "Minimality: every part of the answer that is not corrected is copied verbatim, so that the "
    "revision differs from the original only where an improvement was necessary.",
)
_REASONING_CLOSE = (
    "With these changes the answer stays as close as possible to the original while being cleaner and "
    "more precise.",
    "These edits are small, but together they make the answer noticeably more polished.",
)

#: the answer layouts ``build_answer`` produces (index = style)
ANSWER_STYLES = ("plain", "bold_headers", "bold_identifiers", "markdown_headings", "mention_first")


def answer_style(student_solution: str) -> int:
    """The style the server uses for this solution (a deterministic hash, stable across processes)."""
    return zlib.crc32(student_solution.encode("utf-8", "surrogatepass")) % len(ANSWER_STYLES)


def _reasoning(student_solution: str, notes: tuple[str, ...]) -> str:
    h = zlib.crc32(student_solution.encode("utf-8", "surrogatepass"))
    changes = "\n".join(f"{i}. {note[:1].upper()}{note[1:]}." for i, note in enumerate(notes, 1))
    k = len(_REASONING_BODY)
    body = " ".join(_REASONING_BODY[(h + j) % k] for j in range(3))
    return (f"{_REASONING_INTROS[h % 3]}\n\nThe changes I will make:\n{changes}\n\n{body}\n\n"
            f"{_REASONING_CLOSE[(h >> 3) % 2]}")


def build_answer(student_solution: str, style: int) -> str:
    """The full CLAIR answer text for ``student_solution`` in answer style ``style`` (see ANSWER_STYLES).

    In every style the text after the revision header, stripped, is exactly ``mock_revision(student_solution)``.
    """
    revision, notes = revise(student_solution)
    reasoning = _reasoning(student_solution, notes)
    s = style % len(ANSWER_STYLES)
    if s == 0:
        return f"{{teacher_reasoning}}: {reasoning}\n\n{{corrected_student_solution}}: {revision}"
    if s == 1:
        return f"**Teacher Reasoning:** {reasoning}\n\n**Corrected Student Solution:**\n\n{revision}"
    if s == 2:
        return f"**{{teacher_reasoning}}**: {reasoning}\n\n**{{corrected_student_solution}}**: {revision}"
    if s == 3:
        return f"## {{teacher_reasoning}}\n\n{reasoning}\n\n## {{corrected_student_solution}}\n\n{revision}"
    return (f"{{teacher_reasoning}}: {reasoning} Keeping this in mind, I will now write the "
            f"{{corrected_student_solution}} below.\n\n{{corrected_student_solution}}:\n{revision}")


def no_marker_answer(student_solution: str) -> str:
    return f"Here is an improved version of the answer.\n\n{mock_revision(student_solution)}"


def identical_answer(student_solution: str) -> str:
    """A well-formed CLAIR answer that keeps the student's answer as it is (the text after the revision
    header is the student solution, verbatim)."""
    return ("{teacher_reasoning}: The student's answer is correct and clear as it stands; it needs no change."
            f"\n\n{{corrected_student_solution}}: {student_solution}")


_RAMBLE = (" Moreover, to say it once more in other words, the revised answer above could be extended with further"
           " remarks, examples and restatements of the same points.")


def ramble(answer: str, tokens: int) -> str:
    """``answer`` run on with filler to exactly ``tokens * 4`` characters (the mock's ``tokens`` tokens):
    a model that does not stop until it hits max_tokens."""
    size = tokens * 4
    if len(answer) < size:
        answer += _RAMBLE * ((size - len(answer)) // len(_RAMBLE) + 1)
    return answer[:size]
