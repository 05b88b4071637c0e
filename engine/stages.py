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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from engine import records
from engine.core.config import AUTO, BudgetConfig, EndpointConfig, JobConfig
from engine.core.types import Completion, Markers, Message, WorkItem
from engine.prompts import PromptTemplate, builtin_template, load_template, render, student_messages
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
        reserve_student=cfg.has_generate,
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
    """The run's request fingerprint. A run with a generate stage: the revise stage's keys (none in a
    generation-only run) plus ``generate``, the generate stage's own fingerprint (so a changed student
    model or parameter is refused on resume like any other change)."""
    if cfg.generate is not None and not cfg.endpoints:
        return {"input": source.fingerprint(), "generate": generate_fingerprint(cfg)}
    generation = cfg.generation
    if cfg.max_tokens_is_auto:  # the budget's parameters decide where answers are cut: only when used
        generation = {**generation, "max_tokens_auto": dataclasses.asdict(cfg.max_tokens_auto)}
    fp = request_fingerprint(
        source.fingerprint(),
        template.text,
        cfg.prompt.variant if not cfg.prompt.template_file else "file",
        [ep.model for ep in cfg.endpoints],
        generation,
        endpoint_shaping(cfg.endpoints),
    )
    if cfg.generate is not None:
        fp["generate"] = generate_fingerprint(cfg)
    return fp


def generate_fingerprint(cfg: JobConfig) -> dict[str, Any]:
    """What changes a student answer: the models, generation parameters, system prompt, request shaping,
    and whether truncated answers are kept (the input is the run's)."""
    g = cfg.generate
    assert g is not None
    fp = request_fingerprint({}, g.system_prompt or "", "generate", [ep.model for ep in g.endpoints], g.generation,
                             endpoint_shaping(g.endpoints))
    del fp["input"]
    fp["keep_truncated"] = g.keep_truncated
    return fp


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


# ---------------------------------------------------------------- stage definitions

GENERATE, REVISE = "generate", "revise"


class StageRecords:
    """How a stage's finished rows become records (``engine.records`` builds them)."""

    def completion(self, item: WorkItem, comp: Completion, *, model: str, endpoint: str,
                   reused_from: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def failure(self, item: WorkItem, kind: str, message: str, raw: str | None, *, model: str | None,
                endpoint: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def invalid(self, item: WorkItem) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ReviseRecords(StageRecords):
    markers: Markers
    max_tokens: int

    def completion(self, item: WorkItem, comp: Completion, *, model: str, endpoint: str,
                   reused_from: str | None = None) -> dict[str, Any]:
        return records.completion_record(item, comp, model=model, endpoint=endpoint, markers=self.markers,
                                         max_tokens=self.max_tokens, reused_from=reused_from)

    def failure(self, item: WorkItem, kind: str, message: str, raw: str | None, *, model: str | None,
                endpoint: str | None) -> dict[str, Any]:
        return records.failure_record(item, kind, message, raw, model=model, endpoint=endpoint,
                                      max_tokens=self.max_tokens)

    def invalid(self, item: WorkItem) -> dict[str, Any]:
        return records.invalid_input_record(item)


@dataclass(frozen=True, slots=True)
class GenerateRecords(StageRecords):
    max_tokens: int
    keep_truncated: bool

    def completion(self, item: WorkItem, comp: Completion, *, model: str, endpoint: str,
                   reused_from: str | None = None) -> dict[str, Any]:
        return records.student_record(item, comp, model=model, endpoint=endpoint, max_tokens=self.max_tokens,
                                      keep_truncated=self.keep_truncated)

    def failure(self, item: WorkItem, kind: str, message: str, raw: str | None, *, model: str | None,
                endpoint: str | None) -> dict[str, Any]:
        return records.student_failure_record(item, kind, message, raw, model=model, endpoint=endpoint,
                                              max_tokens=self.max_tokens)

    def invalid(self, item: WorkItem) -> dict[str, Any]:
        return records.student_invalid_record(item)


#: a stage's prompt builder: (task, student answer or None, the row's conversation or None) -> messages
PromptBuilder = Callable[[str, "str | None", "list[Message] | None"], list[Message]]


@dataclass(frozen=True)
class StageDef:
    """One stage of a run, as data: the runner runs one or two of them (``engine.runner``).

    ``cfg`` is the job config as the stage sees it (its endpoints, generation parameters, prices and
    budget); ``prompt`` builds a row's messages; ``records`` turns answers into rows; ``needs_solution``:
    a row without a student answer is invalid input; ``upstream``: the stage whose answers are this
    stage's input (None: the run's input); ``sub_store``: the stage keeps its rows in a sub-store of the
    run directory (its answers feed the next stage), else in the run's own data/ and failures/."""

    name: str
    cfg: JobConfig
    prompt: PromptBuilder
    records: StageRecords
    needs_solution: bool
    data_schema: pa.Schema
    failure_schema: pa.Schema
    upstream: str | None = None
    sub_store: bool = False
    #: the answers of earlier runs may be reused (by request key)
    reuse: bool = False
    #: per-row output budgets (``generation.max_tokens: auto``) and the quality guard apply
    revises: bool = False


def generate_config(cfg: JobConfig) -> JobConfig:
    """The job config as the generate stage sees it: the ``generate:`` endpoints, generation and prices
    (and the run's budget only when it is the run's one stage)."""
    g = cfg.generate
    assert g is not None
    return dataclasses.replace(cfg, endpoints=g.endpoints, generation=dict(g.generation), pricing=g.pricing,
                               budget=cfg.budget if not cfg.endpoints else BudgetConfig())


def build_stages(cfg: JobConfig, source: Source, template: PromptTemplate) -> list[StageDef]:
    """The run's stages, in order: [revise], [generate] or [generate, revise]."""
    rid, kept = source.row_id_type, source.kept
    stages: list[StageDef] = []
    two = cfg.generate is not None and bool(cfg.endpoints)
    if cfg.generate is not None:
        g = cfg.generate
        system = g.system_prompt
        gcfg = generate_config(cfg)
        data, failures = records.generate_schemas(rid, kept)
        stages.append(StageDef(
            GENERATE, gcfg, lambda task, _sol, conv: student_messages(task, system, conv),
            GenerateRecords(gcfg.max_tokens, g.keep_truncated), needs_solution=False,
            data_schema=data, failure_schema=failures, sub_store=two,
        ))
    if cfg.endpoints:
        stages.append(StageDef(
            REVISE, cfg, lambda task, sol, _conv: render(template, task, sol or ""),
            ReviseRecords(template.markers, cfg.max_tokens), needs_solution=True,
            data_schema=records.data_schema(rid, kept, student=two),
            failure_schema=records.failure_schema(rid, kept, student=two),
            upstream=GENERATE if two else None, reuse=True, revises=True,
        ))
    return stages
