"""Prompt templates: the three published variants, template files, safe substitution."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import TemplateError, UserError
from engine.core.types import DEFAULT_MARKERS, Markers
from engine.parse import parse_answer
from engine.prompts import VARIANTS, PromptTemplate, builtin_template, estimate_tokens, load_template, render

TASK = "What is 2+2?"
SOLUTION = "It is 5.\n\nBecause 2+2=5."

# The expected messages are written out in full, independently of engine/prompts.py.
DISTILABEL = [
    {
        "role": "system",
        "content": (
            "You are a teacher and your task is to minimally improve a student's answer. I will give you a "
            "{task} and a {student_solution}. Your job is to revise the {student_solution} such that it is "
            "clearer, more correct, and more engaging. Copy all non-corrected parts of the student's answer. "
            "Do not allude to the {corrected_student_solution} being a revision or a correction in your "
            "final solution."
        ),
    },
    {
        "role": "user",
        "content": (
            "{task}: What is 2+2?\n"
            "\n"
            "{student_solution}: It is 5.\n"
            "\n"
            "Because 2+2=5.\n"
            "\n"
            "-----------------\n"
            "\n"
            "Let's first think step by step with a {teacher_reasoning} to decide how to improve the "
            "{student_solution}, then give the {corrected_student_solution}. Mention the {teacher_reasoning} "
            "and {corrected_student_solution} identifiers to structure your answer."
        ),
    },
]

CONTEXTUALAI = [
    {"role": "system", "content": ""},
    {
        "role": "user",
        "content": (
            "You are a teacher and your task is to minimally improve a student's answer. I will give you a "
            "{task} and a {student_solution}. Your job is to revise the {student_solution} such that it is "
            "clearer, more correct, and more engaging. Copy all non-corrected parts of the student's answer. "
            "Do not allude to the {corrected_student_solution} being a revision or a correction in your "
            "final solution.\n"
            "\n"
            "{task}: What is 2+2?\n"
            "\n"
            "{student_solution}: It is 5.\n"
            "\n"
            "Because 2+2=5.\n"
            "\n"
            "-----------------\n"
            "\n"
            "Let's first think step by step with a {teacher_reasoning} to decide how to improve the "
            "{student_solution}, then give the {corrected_student_solution}. Mention the {teacher_reasoning} "
            "and {corrected_student_solution} identifiers to structure your answer.\n"
            "\n"
        ),
    },
]

LENGTH_PRESERVING = [
    {"role": "system", "content": ""},
    {
        "role": "user",
        "content": (
            "You are a teacher and your task is to minimally improve a student's answer. I will give you a "
            "{task} and a {student_solution}. Your job is to revise the {student_solution} such that it is "
            "clearer, more correct, and more engaging. Copy all non-corrected parts of the student's answer. "
            "Do not allude to the {corrected_student_solution} being a revision or a correction in your "
            "final solution. You must keep the length of the {corrected_student_solution} roughly equal to "
            "the length of the {student_solution}.\n"
            "\n"
            "{task}: What is 2+2?\n"
            "\n"
            "{student_solution}: It is 5.\n"
            "\n"
            "Because 2+2=5.\n"
            "\n"
            "-----------------\n"
            "\n"
            "Let's first think step by step with a {teacher_reasoning} to decide how to improve the "
            "{student_solution}, then give the {corrected_student_solution}. Mention the {teacher_reasoning} "
            "and {corrected_student_solution} identifiers to structure your answer.\n"
            "\n"
        ),
    },
]


# --------------------------------------------------------------------------- built-in variants


def test_variants_are_the_three_published_ones():
    assert VARIANTS == ("distilabel", "contextualai", "length-preserving")


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("distilabel", DISTILABEL), ("contextualai", CONTEXTUALAI), ("length-preserving", LENGTH_PRESERVING)],
)
def test_builtin_variant_renders_exact_messages(variant, expected):
    template = builtin_template(variant)
    assert template.name == variant
    assert template.markers == DEFAULT_MARKERS
    assert render(template, TASK, SOLUTION) == expected


def test_distilabel_user_message_has_no_trailing_newline():
    user = render(builtin_template("distilabel"), "T", "S")[1]["content"]
    assert user.endswith("identifiers to structure your answer.")


def test_contextualai_sends_an_empty_system_message():
    template = builtin_template("contextualai")
    assert template.system == ""
    assert render(template, "T", "S")[0] == {"role": "system", "content": ""}


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(TemplateError) as info:
        builtin_template("distillabel")
    message = str(info.value)
    assert "'distillabel'" in message
    for variant in VARIANTS:
        assert variant in message
    assert "\n" not in message
    assert isinstance(info.value, UserError)


def test_template_text_is_stable_and_distinct_per_variant():
    texts = {v: builtin_template(v).text for v in VARIANTS}
    assert len(set(texts.values())) == 3
    # stable across calls (and, being pure data, across runs)
    assert all(builtin_template(v).text == texts[v] for v in VARIANTS)
    assert all("{corrected_student_solution}" in t for t in texts.values())


# --------------------------------------------------------------------------- safe substitution

NASTY = [
    "$task",
    "${student_solution}",
    "{task}",
    "{student_solution} and {0} and {}",
    "$$ costs $5 and $$$",
    "back\\slash \\1 \\g<0> \\n \\\\",
    "%s %(task)s %%",
    "{{double}} }{ {",
    "",
    "line1\r\nline2\n\n\tindented",
]


@pytest.mark.parametrize("value", NASTY)
def test_values_are_inserted_verbatim(value):
    messages = render(builtin_template("distilabel"), value, value)
    assert messages[0] == DISTILABEL[0]
    assert messages[1]["content"] == (
        "{task}: " + value + "\n\n{student_solution}: " + value + "\n\n-----------------\n\n"
        "Let's first think step by step with a {teacher_reasoning} to decide how to improve the "
        "{student_solution}, then give the {corrected_student_solution}. Mention the {teacher_reasoning} "
        "and {corrected_student_solution} identifiers to structure your answer."
    )


@pytest.mark.parametrize("value", NASTY)
def test_file_template_inserts_values_verbatim(tmp_path, value):
    path = write(
        tmp_path,
        "t.yaml",
        "system: 'sys $task'\nuser: '<$task|${student_solution}> {corrected_student_solution}'\n",
    )
    messages = render(load_template(path), value, value + "!")
    assert messages == [
        {"role": "system", "content": "sys " + value},
        {"role": "user", "content": "<" + value + "|" + value + "!> {corrected_student_solution}"},
    ]


def test_render_returns_fresh_lists():
    template = builtin_template("distilabel")
    first = render(template, "a", "b")
    first[1]["content"] = "changed"
    assert render(template, "a", "b")[1]["content"] != "changed"


# --------------------------------------------------------------------------- estimate_tokens


def test_estimate_tokens_is_about_chars_over_four():
    messages = render(builtin_template("contextualai"), "x" * 400, "y" * 1600)
    chars = sum(len(m["content"]) for m in messages)
    estimate = estimate_tokens(messages)
    assert chars / 4 <= estimate <= chars / 4 + 20


def test_estimate_tokens_is_at_least_one():
    assert estimate_tokens([]) >= 1
    assert estimate_tokens([{"role": "user", "content": ""}]) >= 1
    assert estimate_tokens([{"role": "user", "content": "x" * 100}]) < estimate_tokens(
        [{"role": "user", "content": "x" * 200}]
    )


# --------------------------------------------------------------------------- template files


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


FULL_TEMPLATE = """\
system: |-
  You are a strict editor.
user: |-
  Task: $task
  Answer: ${student_solution}
  Price: $$10 or $5. Write {analysis} then {better_answer}.
markers:
  reasoning: [analysis]
  revision: ["{better_answer}", improved answer]
"""


def test_load_template_file(tmp_path):
    path = write(tmp_path, "mine.yaml", FULL_TEMPLATE)
    template = load_template(path)
    assert isinstance(template, PromptTemplate)
    assert template.name == str(path)
    assert template.markers == Markers(
        reasoning=("analysis",),
        revision=("better_answer", "improved answer"),
        worsened=("worsened_student_solution",),
    )
    assert render(template, "T", "S") == [
        {"role": "system", "content": "You are a strict editor."},
        {
            "role": "user",
            "content": "Task: T\nAnswer: S\nPrice: $10 or $5. Write {analysis} then {better_answer}.",
        },
    ]


def test_load_template_accepts_str_path(tmp_path):
    path = write(tmp_path, "mine.yaml", FULL_TEMPLATE)
    assert load_template(str(path)) == load_template(path)


def test_template_without_system_sends_no_system_message(tmp_path):
    path = write(
        tmp_path, "t.yaml", "user: 'Fix: $task / $student_solution -> {corrected_student_solution}'\n"
    )
    template = load_template(path)
    assert template.system is None
    assert template.markers == DEFAULT_MARKERS
    assert render(template, "A", "B") == [
        {"role": "user", "content": "Fix: A / B -> {corrected_student_solution}"}
    ]


def test_template_with_empty_system_sends_empty_system_message(tmp_path):
    path = write(
        tmp_path, "t.yaml", 'system: ""\nuser: "$task $student_solution {corrected_student_solution}"\n'
    )
    assert render(load_template(path), "A", "B") == [
        {"role": "system", "content": ""},
        {"role": "user", "content": "A B {corrected_student_solution}"},
    ]


def test_file_reproducing_a_builtin_has_the_same_text(tmp_path):
    # same words, different spelling of the placeholders and different markers: same fingerprint text
    path = write(
        tmp_path,
        "d.yaml",
        "system: \"You are a teacher and your task is to minimally improve a student's answer. I will give you "
        "a {task} and a {student_solution}. Your job is to revise the {student_solution} such that it is "
        "clearer, more correct, and more engaging. Copy all non-corrected parts of the student's answer. Do "
        'not allude to the {corrected_student_solution} being a revision or a correction in your final solution."\n'
        "user: \"{task}: ${task}\\n\\n{student_solution}: $student_solution\\n\\n-----------------\\n\\nLet's "
        "first think step by step with a {teacher_reasoning} to decide how to improve the {student_solution}, "
        "then give the {corrected_student_solution}. Mention the {teacher_reasoning} and "
        '{corrected_student_solution} identifiers to structure your answer."\n'
        "markers: {worsened: []}\n",
    )
    template = load_template(path)
    assert render(template, TASK, SOLUTION) == DISTILABEL
    assert template.text == builtin_template("distilabel").text


def test_template_text_changes_with_the_words(tmp_path):
    a = load_template(
        write(tmp_path, "a.yaml", "user: '$task $student_solution {corrected_student_solution}'")
    )
    b = load_template(
        write(tmp_path, "b.yaml", "user: '$task  $student_solution {corrected_student_solution}'")
    )
    c = load_template(
        write(tmp_path, "c.yaml", "system: ''\nuser: '$task $student_solution {corrected_student_solution}'")
    )
    assert len({a.text, b.text, c.text}) == 3


def test_custom_markers_reach_the_parser(tmp_path):
    template = load_template(write(tmp_path, "mine.yaml", FULL_TEMPLATE))
    result = parse_answer("**Analysis:** too short\n\n**Better Answer:** 2+2=4.", markers=template.markers)
    assert (result.ok, result.revision, result.rational) == (True, "2+2=4.", "too short")


BAD_TEMPLATES = [
    ("unknown_key.yaml", "user: '$task $student_solution {corrected_student_solution}'\nsytem: x\n", "sytem"),
    ("no_user.yaml", "system: hello\n", "'user'"),
    ("user_int.yaml", "user: 42\n", "must be a string"),
    ("user_list.yaml", "user: [a, b]\n", "must be a string"),
    (
        "system_null.yaml",
        "system:\nuser: '$task $student_solution {corrected_student_solution}'\n",
        'system: ""',
    ),
    ("no_solution.yaml", "user: 'only $task {corrected_student_solution}'\n", "$student_solution"),
    ("no_task.yaml", "user: 'only $student_solution {corrected_student_solution}'\n", "$task"),
    ("no_placeholders.yaml", "user: '{task} {student_solution} {corrected_student_solution}'\n", "$task"),
    ("unknown_ph.yaml", "user: '$task $student_solution $answer {corrected_student_solution}'\n", "$answer"),
    (
        "unknown_sys_ph.yaml",
        "system: 'hi $name'\nuser: '$task $student_solution {corrected_student_solution}'\n",
        "$name",
    ),
    ("bad_yaml.yaml", "user: 'unterminated\n", "invalid YAML"),
    ("bad_yaml2.yaml", "user: a: b: c\n", "invalid YAML"),
    ("list.yaml", "- user\n- system\n", "mapping"),
    ("empty.yaml", "", "mapping"),
    ("scalar.yaml", "just a string\n", "mapping"),
    ("dup.yaml", "user: '$task $student_solution'\nuser: 'again'\n", "duplicate key"),
    (
        "markers_list.yaml",
        "user: '$task $student_solution {corrected_student_solution}'\nmarkers: [a]\n",
        "markers",
    ),
    (
        "markers_key.yaml",
        "user: '$task $student_solution {x}'\nmarkers: {revision: [x], other: [y]}\n",
        "other",
    ),
    (
        "markers_int.yaml",
        "user: '$task $student_solution {x}'\nmarkers: {revision: [x, 3]}\n",
        "markers.revision",
    ),
    (
        "markers_blank.yaml",
        "user: '$task $student_solution {x}'\nmarkers: {revision: [x, '{}']}\n",
        "empty identifier",
    ),
    (
        "markers_none.yaml",
        "user: '$task $student_solution {x}'\nmarkers: {revision: []}\n",
        "markers.revision",
    ),
    (
        "markers_clash.yaml",
        "user: '$task $student_solution {x}'\nmarkers: {revision: [x], reasoning: [X]}\n",
        "both",
    ),
    ("unnamed.yaml", "user: 'Improve $task / $student_solution'\n", "revision marker"),
]


@pytest.mark.parametrize(("name", "text", "needle"), BAD_TEMPLATES, ids=[b[0] for b in BAD_TEMPLATES])
def test_bad_template_file_is_a_one_line_error_naming_the_file(tmp_path, name, text, needle):
    path = write(tmp_path, name, text)
    with pytest.raises(TemplateError) as info:
        load_template(path)
    message = str(info.value)
    assert str(path) in message
    assert needle in message
    assert "\n" not in message
    assert "; " in message or "(" in message  # says how to fix it


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(TemplateError) as info:
        load_template(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(TemplateError) as info:
        load_template(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_non_utf8_file(tmp_path):
    path = write(tmp_path, "latin1.yaml", "user: 'caf\xe9 $task $student_solution'\n".encode("latin-1"))
    with pytest.raises(TemplateError) as info:
        load_template(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_dollar_escapes_in_file(tmp_path):
    path = write(
        tmp_path,
        "d.yaml",
        "user: |-\n  $$task is literal, $$$task is a dollar then the task, $5 and $ stay, ${task}s\n"
        "  $student_solution {corrected_student_solution}\n",
    )
    assert render(load_template(path), "T", "S")[0]["content"] == (
        "$task is literal, $T is a dollar then the task, $5 and $ stay, Ts\nS {corrected_student_solution}"
    )


def test_marker_may_be_a_single_string(tmp_path):
    path = write(tmp_path, "m.yaml", "user: '$task $student_solution {fixed}'\nmarkers:\n  revision: fixed\n")
    assert load_template(path).markers.revision == ("fixed",)


def test_worsened_only_template_is_accepted(tmp_path):
    path = write(
        tmp_path,
        "w.yaml",
        "user: 'Make it worse: $task $student_solution under {worsened_student_solution}'\n",
    )
    assert load_template(path).markers == DEFAULT_MARKERS
