"""CLAIR prompt templates: the three published variants and user template files (L3, pure).

A template turns one row (``task``, ``student_solution``) into the chat messages of one request.
Rendering is plain concatenation of pieces compiled once per template string, so it costs next to
nothing per row, and the row's values are inserted verbatim (a ``$task``, ``{task}``, ``$$``,
backslash or brace inside a value is never interpreted).

Built-in variants (the words are the method; see CLAIR.md):

* ``distilabel`` (default): system = the instruction, user = the body (no trailing newline).
* ``contextualai``: an empty system message (``""``), then one user message =
  instruction + ``"\\n\\n"`` + body + ``"\\n\\n"``.
* ``length-preserving``: like ``contextualai``, with one more sentence at the end of the
  instruction asking to keep the revision's length roughly equal to the student's.

Template file format
--------------------
A template file is YAML with these keys (any other key is an error)::

    # my_template.yaml
    system: |-                     # optional; omit the key for no system message at all,
      You are a careful editor.    #   write  system: ""  for an empty system message
    user: |-                       # required
      {task}: $task

      {student_solution}: $student_solution

      Think step by step under {teacher_reasoning}, then write {corrected_student_solution}.
    markers:                       # optional; each list replaces the default for that kind
      reasoning: [teacher_reasoning]
      revision: [corrected_student_solution]
      worsened: [worsened_student_solution]

* Placeholders use Python ``string.Template`` syntax: ``$task`` and ``$student_solution``
  (or ``${task}``, ``${student_solution}`` when a letter, digit or ``_`` follows). ``user`` must
  contain both; ``system`` may contain them too. ``$$`` is a literal ``$``; a ``$`` not followed
  by a name (``$5``, ``$ ``) stays literal; any other ``$name`` is an error (write ``$$name``).
* Braces are plain text: ``{task}`` is shown to the model as-is (the CLAIR prompts use such
  identifiers on purpose).
* YAML tip: use a block scalar (``|-`` keeps no trailing newline, ``|`` keeps one) so that
  colons, quotes and ``#`` in the prompt need no escaping.
* ``markers`` names the section headers the parser looks for in the answer. Matching ignores
  case, braces, bold, markdown ``#`` headings, trailing colons, and treats ``_``, ``-`` and
  spaces alike, so ``corrected_student_solution`` also matches
  ``**Corrected Student Solution:**``. Each value is a list of identifiers (or one string);
  ``revision`` needs at least one. At least one revision or worsened identifier must appear in
  the template's text, otherwise the model would never be asked for it.

``PromptTemplate.text`` is a canonical form of the system and user templates (placeholders
written as ``${name}``, literal ``$`` as ``$$``, as JSON), stable across runs and independent of
YAML formatting, for the run fingerprint. Markers are not part of it: they change how an answer
is parsed (``reparse`` handles that), not the answer itself.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from engine.core.config import yaml_error_at, yaml_load
from engine.core.errors import TemplateError
from engine.core.types import DEFAULT_MARKERS, Markers, Message

__all__ = [
    "VARIANTS",
    "PromptTemplate",
    "builtin_template",
    "estimate_tokens",
    "load_template",
    "render",
]

VARIANTS = ("distilabel", "contextualai", "length-preserving")

FIELDS = ("task", "student_solution")
_FILE_KEYS = ("user", "system", "markers")
_MARKER_KINDS = ("reasoning", "revision", "worsened")


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A prompt template: ``system``/``user`` are ``string.Template`` sources."""

    name: str  # variant name or template file path
    system: str | None  # None => no system message at all; "" => an empty system message
    user: str  # user message template ($task, $student_solution)
    markers: Markers
    text: str  # canonical text, for fingerprinting (stable across runs)


# --------------------------------------------------------------------------- compiling

_Parts = tuple[str, ...]  # (literal, field, literal, field, ..., literal): odd indices are fields


@lru_cache(maxsize=128)
def _compile(source: str) -> _Parts:
    """Split a template source into alternating literals and field names.

    Raises ValueError naming an unknown placeholder. Cached: str hashes are cached by CPython,
    so a lookup per render is one dict probe.
    """
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    for m in string.Template.pattern.finditer(source):
        literal.append(source[pos : m.start()])
        pos = m.end()
        if m.group("escaped") is not None:
            literal.append("$")
            continue
        name = m.group("named") or m.group("braced")
        if name is None:  # invalid: a lone "$" (e.g. "$5", "$ ", "${x") stays literal
            literal.append(m.group(0))
            continue
        if name not in FIELDS:
            raise ValueError(f"unknown placeholder ${name}")
        parts.append("".join(literal))
        parts.append(name)
        literal = []
    literal.append(source[pos:])
    parts.append("".join(literal))
    return tuple(parts)


def _fill(parts: _Parts, values: dict[str, str]) -> str:
    if len(parts) == 1:
        return parts[0]
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        out.append(values[parts[i]])
        out.append(parts[i + 1])
    return "".join(out)


def _canonical(parts: _Parts) -> str:
    return "".join(p.replace("$", "$$") if i % 2 == 0 else "${" + p + "}" for i, p in enumerate(parts))


def _canonical_text(system: _Parts | None, user: _Parts) -> str:
    doc = {"system": None if system is None else _canonical(system), "user": _canonical(user)}
    return json.dumps(doc, sort_keys=True, ensure_ascii=False)


def _make(name: str, system: str | None, user: str, markers: Markers) -> PromptTemplate:
    """Build a template from sources already known to compile."""
    sys_parts = None if system is None else _compile(system)
    return PromptTemplate(name, system, user, markers, _canonical_text(sys_parts, _compile(user)))


# --------------------------------------------------------------------------- built-ins

_INSTRUCTION = (
    "You are a teacher and your task is to minimally improve a student's answer. I will give you a "
    "{task} and a {student_solution}. Your job is to revise the {student_solution} such that it is "
    "clearer, more correct, and more engaging. Copy all non-corrected parts of the student's answer. "
    "Do not allude to the {corrected_student_solution} being a revision or a correction in your final "
    "solution."
)
_LENGTH_SENTENCE = (
    " You must keep the length of the {corrected_student_solution} roughly equal to the length of the "
    "{student_solution}."
)
_BODY = (
    "{task}: $task\n\n{student_solution}: $student_solution\n\n-----------------\n\n"
    "Let's first think step by step with a {teacher_reasoning} to decide how to improve the "
    "{student_solution}, then give the {corrected_student_solution}. Mention the {teacher_reasoning} "
    "and {corrected_student_solution} identifiers to structure your answer."
)

_BUILTINS: dict[str, PromptTemplate] = {
    "distilabel": _make("distilabel", _INSTRUCTION, _BODY, DEFAULT_MARKERS),
    "contextualai": _make("contextualai", "", _INSTRUCTION + "\n\n" + _BODY + "\n\n", DEFAULT_MARKERS),
    "length-preserving": _make(
        "length-preserving", "", _INSTRUCTION + _LENGTH_SENTENCE + "\n\n" + _BODY + "\n\n", DEFAULT_MARKERS
    ),
}
assert tuple(_BUILTINS) == VARIANTS


def builtin_template(variant: str) -> PromptTemplate:
    """One of the published variants (``VARIANTS``); TemplateError for any other name."""
    try:
        return _BUILTINS[variant]
    except (KeyError, TypeError):
        raise TemplateError(
            f"unknown prompt variant {variant!r}; use one of: {', '.join(VARIANTS)} (or a template file)"
        ) from None


# --------------------------------------------------------------------------- rendering


def render(template: PromptTemplate, task: str, student_solution: str) -> list[Message]:
    """The chat messages for one row; values are inserted verbatim."""
    values = {"task": task, "student_solution": student_solution}
    try:
        user = _fill(_compile(template.user), values)
        if template.system is None:
            return [{"role": "user", "content": user}]
        system = _fill(_compile(template.system), values)
    except ValueError as e:  # only for a hand-built PromptTemplate; load_template checks this
        raise TemplateError(f"template {template.name}: {e}; write $$ for a literal $") from None
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def student_messages(task: str, system_prompt: str | None, conversation: list[Message] | None = None) -> list[Message]:
    """The generate stage's chat messages for one row: the optional system prompt, then the row's own
    conversation (``input.columns.messages``) or its task as one user message."""
    turns = conversation if conversation is not None else [{"role": "user", "content": task}]
    if system_prompt is None:
        return turns
    return [{"role": "system", "content": system_prompt}, *(m for m in turns if m.get("role") != "system")]


def estimate_tokens(messages: list[Message]) -> int:
    """A cheap prompt-size estimate: ~4 characters per token plus ~4 tokens per message."""
    total = 3  # reply priming
    for msg in messages:
        total += 4 + (len(msg.get("content") or "") + 3) // 4
    return max(1, total)


# --------------------------------------------------------------------------- template files


def _norm_id(identifier: str) -> str:
    return "".join(ch for ch in identifier.lower() if ch.isalnum())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _load_markers(where: str, raw: Any) -> Markers:
    if not isinstance(raw, dict):
        raise TemplateError(
            f"{where}: 'markers' must be a mapping with keys {', '.join(_MARKER_KINDS)}; "
            "e.g. markers: {revision: [my_revision]}"
        )
    unknown = sorted(str(k) for k in raw if k not in _MARKER_KINDS)
    if unknown:
        raise TemplateError(
            f"{where}: unknown key(s) under 'markers': {', '.join(unknown)}; "
            f"allowed: {', '.join(_MARKER_KINDS)}"
        )
    kinds: dict[str, tuple[str, ...]] = {k: getattr(DEFAULT_MARKERS, k) for k in _MARKER_KINDS}
    for kind, value in raw.items():
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise TemplateError(
                f"{where}: markers.{kind} must be a list of strings; e.g. {kind}: [my_identifier]"
            )
        ids = tuple(i.strip().strip("{}").strip() for i in items)
        if any(not _norm_id(i) for i in ids):
            raise TemplateError(
                f"{where}: markers.{kind} has an empty identifier; give words like my_identifier"
            )
        if kind == "revision" and not ids:
            raise TemplateError(
                f"{where}: markers.revision needs at least one identifier; e.g. revision: [corrected_student_solution]"
            )
        kinds[kind] = ids
    owner: dict[str, str] = {}
    for kind in _MARKER_KINDS:
        for ident in kinds[kind]:
            other = owner.setdefault(_norm_id(ident), kind)
            if other != kind:
                raise TemplateError(
                    f"{where}: marker {ident!r} is listed under both {other} and {kind}; keep it in one"
                )
    return Markers(**kinds)


def _compile_field(where: str, key: str, value: Any) -> _Parts:
    if not isinstance(value, str):
        hint = (
            '; write system: "" for an empty system message, or omit the key for none'
            if key == "system"
            else f"; write the text as a string, e.g. a '{key}: |' block"
        )
        got = "nothing (null)" if value is None else type(value).__name__
        raise TemplateError(f"{where}: '{key}' must be a string, got {got}{hint}")
    try:
        return _compile(value)
    except ValueError as e:
        raise TemplateError(
            f"{where}: {e} in '{key}'; use $task and $student_solution, and write $$ for a literal $"
        ) from None


def load_template(path: str | os.PathLike[str]) -> PromptTemplate:
    """Load a YAML template file (format in the module docstring); TemplateError if unusable."""
    where = f"template file {os.fspath(path)}"
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _one_line(str(e))
        raise TemplateError(f"cannot read {where}: {reason}; check the path (a UTF-8 YAML file)") from None
    try:
        doc = yaml_load(source)
    except yaml.YAMLError as e:
        at = yaml_error_at(e)
        problem = _one_line(str(getattr(e, "problem", None) or e))
        raise TemplateError(
            f"{where}: invalid YAML{at}: {problem}; fix the syntax (a 'user: |' block needs no quoting)"
        ) from None
    if not isinstance(doc, dict):
        raise TemplateError(
            f"{where}: expected a YAML mapping with a 'user:' key (and optional system, markers)"
        )
    unknown = sorted(str(k) for k in doc if k not in _FILE_KEYS)
    if unknown:
        raise TemplateError(
            f"{where}: unknown key(s): {', '.join(unknown)}; allowed: {', '.join(_FILE_KEYS)}"
        )
    if "user" not in doc:
        raise TemplateError(
            f"{where}: missing required key 'user' (the user message with $task and $student_solution)"
        )
    user_parts = _compile_field(where, "user", doc["user"])
    missing = [f"${name}" for name in FIELDS if name not in user_parts[1::2]]
    if missing:
        raise TemplateError(
            f"{where}: 'user' lacks {' and '.join(missing)}; put each placeholder where the value goes"
        )
    system_parts = _compile_field(where, "system", doc["system"]) if "system" in doc else None
    markers = _load_markers(where, doc["markers"]) if "markers" in doc else DEFAULT_MARKERS

    shown = _norm_id("".join(user_parts[0::2]) + "".join(system_parts[0::2] if system_parts else ()))
    wanted = markers.revision + markers.worsened
    if not any(_norm_id(i) in shown for i in wanted):
        raise TemplateError(
            f"{where}: the prompt never names a revision marker ({', '.join(wanted)}); "
            "mention it in the prompt or set markers.revision to the header you ask for"
        )
    system = doc.get("system")
    return PromptTemplate(
        os.fspath(path), system, doc["user"], markers, _canonical_text(system_parts, user_parts)
    )
