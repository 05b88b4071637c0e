"""Parsing teacher answers: every pitfall listed in CLAIR.md is its own case."""

from __future__ import annotations

import pytest

from engine.core.types import DEFAULT_MARKERS, Markers, ParseResult
from engine.parse import PARSER_VERSION, parse_answer, strip_thinking


def ok(revision: str, rational: str, status: str = "ok") -> ParseResult:
    return ParseResult(ok=True, revision=revision, rational=rational, status=status)


def assert_failure(result: ParseResult, kind: str) -> None:
    assert result.ok is False
    assert result.error_kind == kind
    assert result.revision is None
    assert result.message and "\n" not in result.message and len(result.message) < 120


def test_parser_version_is_a_string():
    assert isinstance(PARSER_VERSION, str) and PARSER_VERSION


# --------------------------------------------------------------------------- the plain format


def test_plain_identifiers_with_colons():
    answer = (
        "{teacher_reasoning}: The student says 2+2=5, which is wrong.\n\n"
        "{corrected_student_solution}: It is 4.\n\nBecause 2+2=4."
    )
    assert parse_answer(answer) == ok("It is 4.\n\nBecause 2+2=4.", "The student says 2+2=5, which is wrong.")


def test_headers_on_their_own_lines():
    answer = "{teacher_reasoning}:\n\nFix the sum.\n\n{corrected_student_solution}:\n\nIt is 4.\n"
    assert parse_answer(answer) == ok("It is 4.", "Fix the sum.")


# --------------------------------------------------------------------------- CLAIR.md pitfalls


def test_in_sentence_mention_before_the_real_header():
    answer = (
        "{teacher_reasoning}: The answer lacks units. I will now write the {corrected_student_solution} below.\n"
        "It keeps the structure of the {student_solution}.\n\n"
        "{corrected_student_solution}: The distance is 384,400 km."
    )
    assert parse_answer(answer) == ok(
        "The distance is 384,400 km.",
        "The answer lacks units. I will now write the {corrected_student_solution} below.\n"
        "It keeps the structure of the {student_solution}.",
    )


def test_in_sentence_mention_only_is_no_marker():
    result = parse_answer("Here is the {corrected_student_solution}: It is 4.")
    assert_failure(result, "no_marker")


@pytest.mark.parametrize(
    "answer",
    [
        "**{teacher_reasoning}**: Wrong sum.\n\n**{corrected_student_solution}**: It is 4.",
        "**{teacher_reasoning}:** Wrong sum.\n\n**{corrected_student_solution}:** It is 4.",
        "**{teacher_reasoning}**:\nWrong sum.\n\n**{corrected_student_solution}**:\nIt is 4.",
        "**{teacher_reasoning}** Wrong sum.\n\n**{corrected_student_solution}** It is 4.",
        "*{teacher_reasoning}*: Wrong sum.\n\n*{corrected_student_solution}*: It is 4.",
        "__{teacher_reasoning}__: Wrong sum.\n\n__{corrected_student_solution}__: It is 4.",
    ],
)
def test_bolded_identifiers_leave_no_leftover(answer):
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


@pytest.mark.parametrize(
    "answer",
    [
        "**Teacher Reasoning:** Wrong sum.\n\n**Corrected Student Solution:** It is 4.",
        "**Teacher Reasoning**: Wrong sum.\n\n**Corrected Student Solution**: It is 4.",
        "**Teacher Reasoning:**\n\nWrong sum.\n\n**Corrected Student Solution:**\n\nIt is 4.",
        "**TEACHER REASONING:** Wrong sum.\n**CORRECTED STUDENT SOLUTION:** It is 4.",
        "**Teacher_Reasoning:** Wrong sum.\n**Corrected_Student_Solution:** It is 4.",
        "**Teacher-Reasoning:** Wrong sum.\n**Corrected-Student-Solution:** It is 4.",
    ],
)
def test_bold_header_style_does_not_leak_into_rational(answer):
    result = parse_answer(answer)
    assert result == ok("It is 4.", "Wrong sum.")
    assert "Teacher" not in result.rational and "**" not in result.rational


@pytest.mark.parametrize(
    "answer",
    [
        "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}:",
        "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}:   \n\n  \n",
        "**Teacher Reasoning:** Wrong sum.\n\n**Corrected Student Solution:**",
        "**Teacher Reasoning:** Wrong sum.\n\n**Corrected Student Solution:**\n**\n",
        "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}:\n---\n",
    ],
)
def test_empty_revision_is_a_failure(answer):
    assert_failure(parse_answer(answer), "empty_revision")


def test_empty_revision_followed_by_worsened_section_is_not_a_correction():
    # the corrected header is empty; the worsened text after it must not be passed as the revision
    result = parse_answer("{corrected_student_solution}:\n{worsened_student_solution}: It is 6.")
    assert_failure(result, "empty_revision")


@pytest.mark.parametrize(
    "answer",
    [
        "The student's answer is fine. It is 4.",
        "Teacher reasoning first, then the revision: It is 4.",
        "I will write the {corrected_student_solution} now. It is 4.",
        "{teacher_reasoning}: The answer is wrong but I ran out of ideas.",
    ],
)
def test_no_marker_is_a_failure(answer):
    result = parse_answer(answer)
    assert_failure(result, "no_marker")
    assert "corrected_student_solution" in result.message


@pytest.mark.parametrize(
    "answer",
    [
        "{teacher_reasoning}: Make it worse.\n\n{worsened_student_solution}: It is 6.",
        "**Teacher Reasoning:** Make it worse.\n\n**Worsened Student Solution:** It is 6.",
        "{teacher_reasoning}: Make it worse.\n\n### Worsened Student Solution\nIt is 6.",
    ],
)
def test_worsened_only_is_flagged(answer):
    assert parse_answer(answer) == ok("It is 6.", "Make it worse.", status="worsened")


@pytest.mark.parametrize(
    "answer",
    [
        "{teacher_reasoning}: R.\n\n{corrected_student_solution}: It is 4.\n\n{worsened_student_solution}: It is 6.",
        "{teacher_reasoning}: R.\n\n{worsened_student_solution}: It is 6.\n\n{corrected_student_solution}: It is 4.",
        "**Teacher Reasoning:** R.\n\n**Corrected Student Solution:** It is 4.\n\n---\n\n"
        "**Worsened Student Solution:** It is 6.",
    ],
)
def test_corrected_and_worsened_keeps_the_corrected_only(answer):
    assert parse_answer(answer) == ok("It is 4.", "R.")


def test_truncated_with_revision_is_flagged():
    answer = "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}: It is 4 because two plus"
    assert parse_answer(answer, truncated=True) == ok(
        "It is 4 because two plus", "Wrong sum.", status="truncated"
    )


@pytest.mark.parametrize(
    "answer",
    [
        "{teacher_reasoning}: Wrong sum, I will need to explain that",
        "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}:",
        "",
        None,
        "<think>Let me think about {corrected_student_solution}: It is 4",
    ],
)
def test_truncated_without_revision_is_a_failure(answer):
    assert_failure(parse_answer(answer, truncated=True), "truncated_no_revision")


def test_truncated_worsened_stays_worsened():
    # never let a worsened text pass as a (truncated) correction
    result = parse_answer("{worsened_student_solution}: It is", truncated=True)
    assert result == ok("It is", "", status="worsened")


@pytest.mark.parametrize("content", [None, "", "   \n\t "])
def test_empty_output_is_a_failure(content):
    assert_failure(parse_answer(content), "empty_output")


# --------------------------------------------------------------------------- thinking


def test_markers_inside_think_block_are_ignored():
    answer = (
        "<think>\nThe {corrected_student_solution}: should say 5? No.\n"
        "{teacher_reasoning}: draft\n</think>\n\n"
        "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}: It is 4."
    )
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


def test_think_block_with_markers_only_and_no_final_answer_markers():
    answer = "<think>{teacher_reasoning}: x\n{corrected_student_solution}: It is 4.</think>\nIt is 4."
    assert_failure(parse_answer(answer), "no_marker")


def test_unclosed_think_is_all_thinking():
    answer = "<think>\n{teacher_reasoning}: hmm\n{corrected_student_solution}: It is 4."
    result = parse_answer(answer)
    assert_failure(result, "empty_output")


def test_missing_opening_think_tag_deepseek_style():
    answer = (
        "Okay, the {corrected_student_solution}: must be 4.\n</think>\n\n"
        "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}: It is 4."
    )
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


@pytest.mark.parametrize(
    ("content", "final", "thinking"),
    [
        ("no tags here", "no tags here", None),
        ("  keep  spacing \n", "  keep  spacing \n", None),
        ("<think>plan</think>\n\nanswer", "answer", "plan"),
        ("<THINK>plan</Think>answer", "answer", "plan"),
        ("<think>\n\n</think>\n\nanswer", "answer", None),
        ("<think>a</think>x<think>b</think>y", "xy", "a\n\nb"),
        ("<think>still thinking", "", "still thinking"),
        ("<think>a</think>\n<think>cut off", "", "a\n\ncut off"),
        ("reasoning here</think>answer", "answer", "reasoning here"),
        ("r1</think>answer <think>t2</think> end", "answer  end", "r1\n\nt2"),
        ("answer that mentions a <think> tag", "answer that mentions a <think> tag", None),
    ],
)
def test_strip_thinking(content, final, thinking):
    assert strip_thinking(content) == (final, thinking)


# --------------------------------------------------------------------------- header styles


@pytest.mark.parametrize(
    "answer",
    [
        "### Teacher Reasoning\nWrong sum.\n\n### Corrected Student Solution\nIt is 4.",
        "## Teacher Reasoning:\nWrong sum.\n\n## Corrected Student Solution:\nIt is 4.",
        "# {teacher_reasoning}\nWrong sum.\n\n# {corrected_student_solution}\nIt is 4.",
        "### **Teacher Reasoning**\nWrong sum.\n\n### **Corrected Student Solution**\nIt is 4.",
        "###Teacher Reasoning\nWrong sum.\n\n###Corrected Student Solution\n\nIt is 4.",
    ],
)
def test_markdown_heading_style(answer):
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


@pytest.mark.parametrize(
    "answer",
    [
        "{teacher_reasoning}\nWrong sum.\n\n{corrected_student_solution}\nIt is 4.",
        "teacher_reasoning\nWrong sum.\n\ncorrected_student_solution\nIt is 4.",
        "Teacher Reasoning\nWrong sum.\n\nCorrected Student Solution\nIt is 4.",
        "{ teacher_reasoning }\nWrong sum.\n\n{ corrected_student_solution }  \nIt is 4.",
        "  {teacher_reasoning}\n  Wrong sum.\n\n  {corrected_student_solution}\r\nIt is 4.",
        "Teacher reasoning: Wrong sum.\nCorrected student solution: It is 4.",
        "TeacherReasoning: Wrong sum.\nCorrectedStudentSolution: It is 4.",
    ],
)
def test_colon_less_and_plain_identifiers(answer):
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


@pytest.mark.parametrize(
    "line",
    [
        "{corrected_student_solution} should keep the structure of the original.",
        "Corrected student solution is what follows after my analysis.",
        "**{corrected_student_solution} will be shorter than the original**",
        "The {corrected_student_solution}: see below.",
        "{corrected_student_solutions}: plural is another word",
    ],
)
def test_sentence_starting_with_identifier_is_not_a_header(line):
    answer = f"{{teacher_reasoning}}: Wrong sum.\n{line}\n\n{{corrected_student_solution}}: It is 4."
    assert parse_answer(answer) == ok("It is 4.", f"Wrong sum.\n{line}")


def test_last_nonempty_revision_header_wins():
    # a header-like planning line inside the reasoning, then the real header
    answer = (
        "{teacher_reasoning}: Wrong sum.\n"
        "{corrected_student_solution}: (plan) state 4 and explain\n\n"
        "{corrected_student_solution}: It is 4."
    )
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


def test_restated_empty_header_at_the_end_is_ignored():
    answer = "{teacher_reasoning}: Wrong sum.\n\n{corrected_student_solution}: It is 4.\n\n{corrected_student_solution}:\n"
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


def test_text_before_revision_is_rational_without_reasoning_header():
    answer = "The student added wrongly.\n\n**Corrected Student Solution:** It is 4."
    assert parse_answer(answer) == ok("It is 4.", "The student added wrongly.")


def test_revision_only_gives_empty_rational():
    assert parse_answer("{corrected_student_solution}: It is 4.") == ok("It is 4.", "")


def test_reasoning_after_revision():
    answer = "{corrected_student_solution}: It is 4.\n\n{teacher_reasoning}: I fixed the sum."
    assert parse_answer(answer) == ok("It is 4.", "I fixed the sum.")


def test_separator_lines_are_not_part_of_the_fields():
    answer = (
        "{teacher_reasoning}: Wrong sum.\n\n---\n\n{corrected_student_solution}:\n---\nIt is 4.\n\n-----\n"
    )
    assert parse_answer(answer) == ok("It is 4.", "Wrong sum.")


def test_revision_may_start_with_bold_text():
    answer = "**Corrected Student Solution:** **Answer:** It is 4."
    assert parse_answer(answer).revision == "**Answer:** It is 4."


# --------------------------------------------------------------------------- content preserved


def test_multi_paragraph_revision_is_preserved_exactly():
    revision = (
        "The sum is **4**:\n"
        "\n"
        "1. Take two.\n"
        "   - then add two more\n"
        "\n"
        "```python\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "\n"
        "\n"
        "print(add(2, 2))  # {task}: $task\n"
        "```\n"
        "\n"
        "\tTabbed line with trailing spaces   \n"
        "> quote: Teacher Reasoning is a phrase\n"
        "| a | b |\n"
        "|---|---|\n"
        "Done."
    )
    answer = "{teacher_reasoning}:\nWrong sum.\n\n{corrected_student_solution}:\n\n" + revision + "\n\n"
    assert parse_answer(answer) == ok(revision, "Wrong sum.")


def test_crlf_answer():
    answer = (
        "{teacher_reasoning}:\r\nWrong sum.\r\n\r\n{corrected_student_solution}:\r\nIt is 4.\r\nReally.\r\n"
    )
    assert parse_answer(answer) == ok("It is 4.\r\nReally.", "Wrong sum.")


def test_unicode_is_preserved():
    answer = "{teacher_reasoning}: Ünïcödé İstanbul ß.\n{corrected_student_solution}: 答案是四。 İ"
    assert parse_answer(answer) == ok("答案是四。 İ", "Ünïcödé İstanbul ß.")


# --------------------------------------------------------------------------- custom markers


CUSTOM = Markers(reasoning=("analysis",), revision=("improved_answer", "better answer"), worsened=())


@pytest.mark.parametrize(
    "answer",
    [
        "{analysis}: Wrong sum.\n{improved_answer}: It is 4.",
        "**Analysis:** Wrong sum.\n\n**Improved Answer:** It is 4.",
        "## Analysis\nWrong sum.\n## Better Answer\nIt is 4.",
    ],
)
def test_custom_markers(answer):
    assert parse_answer(answer, markers=CUSTOM) == ok("It is 4.", "Wrong sum.")


def test_custom_markers_ignore_the_defaults():
    answer = "{teacher_reasoning}: Wrong sum.\n{corrected_student_solution}: It is 4."
    result = parse_answer(answer, markers=CUSTOM)
    assert_failure(result, "no_marker")
    assert "improved_answer" in result.message


def test_markers_built_with_lists_work():
    markers = Markers(reasoning=["analysis"], revision=["improved_answer"], worsened=[])  # type: ignore[arg-type]
    assert parse_answer("{analysis}: R\n{improved_answer}: S", markers=markers) == ok("S", "R")


def test_empty_worsened_only_is_empty_revision():
    result = parse_answer("{teacher_reasoning}: R\n{worsened_student_solution}:\n")
    assert_failure(result, "empty_revision")
    assert "worsened_student_solution" in result.message


def test_default_markers_are_the_default():
    answer = "{teacher_reasoning}: R\n{corrected_student_solution}: S"
    assert parse_answer(answer) == parse_answer(answer, markers=DEFAULT_MARKERS) == ok("S", "R")


def test_realistic_answer():
    answer = (
        "{teacher_reasoning}: The student's answer is mostly correct but contains a factual error: the Moon's "
        "average distance is about 384,400 km, not 238,900 km (that is the figure in miles). I will keep the "
        "structure and tone, fix the unit, and make the last sentence more engaging. The "
        "{corrected_student_solution} should not allude to being a revision.\n\n"
        "{corrected_student_solution}: There are no gaps between the Earth and the Moon. The Moon orbits the "
        "Earth at an average distance of about 384,400 kilometers (238,900 miles).\n\n"
        "Its orbit is elliptical, so this distance changes slightly over a month."
    )
    result = parse_answer(answer)
    assert result.ok and result.status == "ok"
    assert result.revision.startswith("There are no gaps") and result.revision.endswith("over a month.")
    assert result.rational.startswith("The student's answer") and result.rational.endswith("a revision.")
