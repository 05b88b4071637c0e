"""What a stage of a job is made of, built from the config: its prompt template, its input source and the
fingerprint of its requests (L3; no HTTP, no run directory: the dry run uses it too).

The request fingerprint covers what changes the ANSWER (input identity and column mapping, prompt variant
and template text, model names, generation parameters, ``max_tokens_auto`` when max_tokens is auto, and
each endpoint's ``extra_body`` and ``system_role: false`` when one sets them). URLs, keys, weights,
concurrency, rate limits and Azure's ``api_version`` are deliberately not part of it, and neither is
``input.limit`` (raising it extends a run) nor an endpoint's context length.

``generation.max_tokens: auto`` gives each row its own output budget (:class:`AutoBudget`):
min(cap, context length - prompt tokens, ceil(k x student-answer tokens) + margin), token counts being the
engine's estimate (~4 characters per token). A row whose prompt leaves no room in the context is not sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from engine.core.config import AUTO, EndpointConfig, JobConfig
from engine.prompts import PromptTemplate, builtin_template, load_template
from engine.source import Source


def load_prompt(cfg: JobConfig) -> PromptTemplate:
    if cfg.prompt.template_file:
        return load_template(cfg.resolve(cfg.prompt.template_file))
    return builtin_template(cfg.prompt.variant)


def open_source(cfg: JobConfig) -> Source:
    """The input of the run's first stage: with ``generate:``, the tasks alone (a text column or a chat message
    list; the generate stage writes the student answers); otherwise the tasks and the student answers."""
    i = cfg.input
    return Source(
        path=str(cfg.resolve(i.path)) if i.path else None,
        dataset=i.dataset,
        name=i.name,
        split=i.split,
        revision=i.revision,
        task=i.columns.task_column,
        student_solution=i.columns.student_solution_column(cfg.has_generate),
        messages=i.columns.messages,
        id_column=i.id_column,
        limit=i.limit,
        batch_rows=i.batch_rows,
        keep_input_columns=cfg.output.keep_input_columns,
        exclude=cfg.run_dir,
    )


def request_fingerprint(
    input_fp: dict[str, Any], template_text: str, variant: str, models: list[str], generation: dict[str, Any],
    shaping: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "input": input_fp,
        "prompt": {"variant": variant, "template_sha256": hashlib.sha256(template_text.encode()).hexdigest()[:16]},
        "models": sorted(set(models)),
        "generation": dict(sorted(generation.items())),
    }
    if shaping:  # only when an endpoint shapes its requests: the fingerprints of other runs stay as they were
        fp["shaping"] = shaping
    return fp


def endpoint_shaping(endpoints: Sequence[EndpointConfig]) -> list[dict[str, Any]] | None:
    """The distinct request shapes of the endpoints (model, ``extra_body``, ``system_role: false``), or None
    when no endpoint sets either. A replica with a shape already listed, the endpoints' order, their URLs and
    Azure's ``api_version`` change nothing."""
    shapes: dict[bytes, dict[str, Any]] = {}
    for e in endpoints:
        shape: dict[str, Any] = {"model": e.model}
        if e.extra_body:
            shape["extra_body"] = e.extra_body
        if not e.system_role:
            shape["system_role"] = False
        shapes[orjson.dumps(shape, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)] = shape
    if all(len(s) == 1 for s in shapes.values()):
        return None
    return [orjson.loads(k) for k in sorted(shapes)]


def make_fingerprint(cfg: JobConfig, source: Source, template: PromptTemplate) -> dict[str, Any]:
    generation = cfg.generation
    if cfg.max_tokens_is_auto:  # the budget's parameters decide where answers are cut: only when used
        generation = {**generation, "max_tokens_auto": dataclasses.asdict(cfg.max_tokens_auto)}
    return request_fingerprint(
        source.fingerprint(),
        template.text,
        cfg.prompt.variant if not cfg.prompt.template_file else "file",
        [ep.model for ep in cfg.endpoints],
        generation,
        endpoint_shaping(cfg.endpoints),
    )


def keep_run_max_tokens(cfg: JobConfig, stored: dict[str, Any] | None) -> tuple[JobConfig, bool]:
    """A run made with a fixed (or no) ``generation.max_tokens`` keeps it when the config now says auto
    (the default since auto exists), so that a run directory made before it resumes. ``stored`` is the run's
    request fingerprint (None: no run yet). Returns the config to run with and whether it was changed."""
    if not cfg.max_tokens_is_auto or not stored:
        return cfg, False
    old = stored.get("generation")
    if not isinstance(old, dict) or old.get("max_tokens") == AUTO:
        return cfg, False
    gen = {k: v for k, v in cfg.generation.items() if k != "max_tokens"}
    if old.get("max_tokens") is not None:
        gen["max_tokens"] = old["max_tokens"]
    return dataclasses.replace(cfg, generation=gen), True


def text_tokens(text: str) -> int:
    """The engine's token estimate of a text (~4 characters per token, as ``prompts.estimate_tokens``)."""
    return (len(text) + 3) // 4


@dataclass(frozen=True, slots=True)
class AutoBudget:
    """The output budget of one row under ``generation.max_tokens: auto``."""

    cap: int
    k: float
    margin: int
    #: the smallest context length of the endpoints (None: unknown, no context term)
    context: int | None = None

    def __call__(self, prompt_tokens: int, answer_tokens: int) -> int:
        """min(cap, context - prompt, ceil(k x answer) + margin). Below 1: the prompt alone fills the
        context (the row is ``prompt_too_long``, never sent)."""
        n = math.ceil(self.k * answer_tokens) + self.margin
        if n > self.cap:
            n = self.cap
        if self.context is not None and self.context - prompt_tokens < n:
            n = self.context - prompt_tokens
        return n


def auto_budget(cfg: JobConfig, context: int | None) -> AutoBudget | None:
    """The per-row budget of this config (None: generation.max_tokens is a number, or not sent)."""
    if not cfg.max_tokens_is_auto:
        return None
    a = cfg.max_tokens_auto
    return AutoBudget(a.cap, a.k, a.margin, context)


def smallest_context(lengths: list[int | None]) -> int | None:
    """The context length every endpoint can serve: the smallest one known (None: none known)."""
    known = [n for n in lengths if n is not None]
    return min(known) if known else None
