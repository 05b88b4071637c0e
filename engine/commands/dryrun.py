"""``clair run --dry-run``: what a job would cost and how long it would take, without sending anything (L4).

Reads the input (streamed batch by batch, after ``input.limit``), renders every prompt, counts prompt
tokens, and combines that with the configured limits. It never creates an HTTP session, never touches
the run directory, and counts ALL input rows: rows an existing run directory already holds are not
subtracted (a real run would skip them).

Token counting: ``tiktoken`` when it is installed and its encoding loads within a few seconds (it
downloads its BPE file on first use); otherwise — or with ``CLAIR_TOKENIZER=estimate`` — the engine's own
estimate (~4 characters per token plus ~4 tokens per message, what the TPM limiter charges). Either way
the output says which counter was used.

Assumptions (printed with the figures):

* completion tokens per request = ``min(its max_tokens, 700)`` (CLAIR.md: a revision with its reasoning is
  ~700 tokens, 170-1,000); with ``generation.max_tokens: auto`` each row's max_tokens is the budget the run
  would send (``stages.AutoBudget``, from the engine's token estimate and ``endpoints[].context_length``:
  the dry run asks no /models), and rows whose prompt fills the context are counted as not sent;
* the output budget (the sum of the max_tokens the requests would carry) bounds what the output can cost;
* one call takes ``latency_s`` seconds (default 30 s, a GPT-4-class endpoint);
* per endpoint, requests/s = min(effective concurrency / latency, requests_per_minute / 60,
  tokens_per_minute / 60 / (mean prompt tokens + expected completion tokens, or + mean max_tokens for
  an endpoint with ``tpm_counts_max_tokens``)); endpoints add up
  (dispatch is work-stealing). Retries, 429s and the adaptive controller's slow start only add time.

With a ``budget:`` (``with_budget``), the output also says whether the estimate fits it, and whether the
worst case does (every answer as long as ``generation.max_tokens``: what the run reserves per request).

A run with a ``generate:`` stage (:func:`estimate_run`; one pass over the input for both stages) gets a block
per stage, then the total:

* the generate stage: prompt tokens of the student prompts (``generate.system_prompt`` + the task, or the
  row's conversation with ``input.columns.messages``), completion tokens per request =
  ``generate.expected_output_tokens`` (else ``generate.generation.max_tokens``; at most the latter), its
  throughput from ``generate.endpoints`` (the formula above), its cost at ``generate.pricing``;
* the revise stage of a two-stage run: every student answer is assumed to reach it, that long; its prompt
  tokens are the template's with the task and an empty answer, plus the expected answer length for each
  place the template inserts the answer (the answer is added as tokens, not rendered); its
  ``max_tokens: auto`` budget per row follows the expected length; its completion tokens as above;
* the total: the stages run at the same time, so the duration is ~ max(stage durations) + one call's
  latency (the first student answers arrive after one call; the last revision ends one call after the last
  answer), at most the sequential sum (also printed). Cost: per stage and their sum;
* a budget applies to the run's last stage, as the run applies it (``stages.generate_config``): the
  teacher's spending in a two-stage run, the student's in a generation-only run.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from engine.core.config import EndpointConfig, JobConfig
from engine.core.errors import ConfigError, RunStateError
from engine.core.types import Message
from engine.policy.budget import earlier_spending
from engine.preflight import preflight
from engine.prompts import PromptTemplate, estimate_tokens, render
from engine.source import Source
from engine.stages import (
    GENERATE,
    REVISE,
    AutoBudget,
    auto_budget,
    build_stages,
    generate_config,
    keep_run_max_tokens,
    load_prompt,
    open_source,
    smallest_context,
    text_tokens,
)
from engine.store import read_manifest

__all__ = [
    "DEFAULT_LATENCY_S",
    "TYPICAL_COMPLETION_TOKENS",
    "DryRunEstimate",
    "EndpointEstimate",
    "RunEstimate",
    "TokenCounter",
    "dry_run",
    "endpoint_throughput",
    "estimate",
    "estimate_run",
    "format_estimate",
    "make_counter",
    "with_budget",
]

#: assumed seconds per call (CLAIR.md: ~30 s with a GPT-4-class endpoint)
DEFAULT_LATENCY_S = 30.0
#: assumed completion tokens per call, capped by generation.max_tokens (CLAIR.md: ~700)
TYPICAL_COMPLETION_TOKENS = 700
#: how long loading tiktoken's encoding may take before the estimate is used instead
TOKENIZER_TIMEOUT_S = 10.0
#: tiktoken encoding for models it does not know (CLAIR.md's sizes use the GPT-4 tokenizer)
FALLBACK_ENCODING = "cl100k_base"

ESTIMATE = "estimate (~4 characters per token + 4 per message)"


# ---------------------------------------------------------------------------- token counting


@dataclass(frozen=True)
class TokenCounter:
    """Counts the prompt tokens of a batch of rendered requests."""

    name: str
    count: Callable[[list[list[Message]]], list[int]]
    note: str | None = None  # why the fallback is used, when it is


def _estimate_counter(note: str | None = None) -> TokenCounter:
    return TokenCounter(ESTIMATE, lambda batch: [estimate_tokens(m) for m in batch], note)


def _load_encoding(model: str | None) -> tuple[Any, str]:
    import tiktoken

    if model:
        try:
            return tiktoken.encoding_for_model(model), f"tiktoken, {model}'s encoding"
        except KeyError:
            pass
    enc = tiktoken.get_encoding(FALLBACK_ENCODING)
    return enc, f"tiktoken {FALLBACK_ENCODING} (GPT-4's encoding; approximate for {model or 'this model'})"


def make_counter(model: str | None = None, *, timeout_s: float = TOKENIZER_TIMEOUT_S) -> TokenCounter:
    """tiktoken when it loads within ``timeout_s`` (and CLAIR_TOKENIZER is not ``estimate``), else the estimate."""
    choice = os.environ.get("CLAIR_TOKENIZER", "").strip().lower()
    if choice == "estimate":
        return _estimate_counter("CLAIR_TOKENIZER=estimate")
    if choice not in ("", "tiktoken", "auto"):
        raise ConfigError(f"CLAIR_TOKENIZER={choice!r} is unknown; use estimate or tiktoken (or leave it unset)")
    box: dict[str, Any] = {}

    def load() -> None:  # in a daemon thread: a stuck download never blocks the exit
        try:
            box["enc"] = _load_encoding(model)
        except BaseException as e:  # noqa: BLE001 - any failure means "use the estimate"
            box["error"] = e

    t = threading.Thread(target=load, name="clair-tiktoken", daemon=True)
    t.start()
    t.join(timeout_s)
    if "enc" not in box:
        err = box.get("error")
        if isinstance(err, ImportError):
            why = "tiktoken is not installed (pip install 'clair-engine[tokenizers]')"
        elif err is not None:
            why = f"tiktoken failed to load ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
        else:
            why = f"tiktoken did not load within {timeout_s:g}s (it downloads its encoding on first use)"
        return _estimate_counter(why)
    enc, name = box["enc"]

    def count(batch: list[list[Message]]) -> list[int]:
        texts = [m.get("content") or "" for msgs in batch for m in msgs]
        lens = [len(x) for x in enc.encode_ordinary_batch(texts)] if texts else []
        out, k = [], 0
        for msgs in batch:  # same framing as estimate_tokens: 3 for the reply, 4 per message
            out.append(3 + sum(4 + lens[k + j] for j in range(len(msgs))))
            k += len(msgs)
        return out

    return TokenCounter(name, count)


# ---------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class EndpointEstimate:
    name: str
    model: str
    concurrency: int  # effective in-flight cap (max_concurrency × weight, as dispatch uses it)
    concurrency_rps: float  # concurrency / latency
    rpm_rps: float | None  # requests_per_minute / 60
    tpm_rps: float | None  # tokens_per_minute / 60 / tokens per request
    rps: float  # the smallest of the three
    bound: str  # which one: "max_concurrency" | "requests_per_minute" | "tokens_per_minute"


@dataclass
class DryRunEstimate:
    rows: int  # input rows (after input.limit)
    requests: int  # rows that would be sent (task and student_solution non-empty)
    invalid_rows: int  # recorded as invalid_input without a request
    prompt_tokens: int
    prompt_tokens_min: int | None
    prompt_tokens_max: int | None
    completion_tokens_per_request: int  # an assumption
    completion_tokens: int
    token_counter: str
    token_counter_note: str | None
    latency_s: float  # an assumption
    endpoints: list[EndpointEstimate]
    requests_per_s: float
    duration_s: float
    cost_usd: float | None
    input_cost_usd: float | None
    output_cost_usd: float | None
    max_tokens: int
    prompt: str
    run_dir: str
    rows_in_run_dir: int | None = None  # rows an existing run directory reports done (not subtracted)
    notes: list[str] = field(default_factory=list)
    #: the run's budget (``with_budget``), and the worst case: every answer as long as max_tokens
    budget_max_usd: float | None = None
    budget_max_output_tokens: int | None = None
    worst_cost_usd: float | None = None
    worst_completion_tokens: int | None = None
    #: what the run directory's earlier sessions spent (the budget counts it)
    spent_before_usd: float | None = None
    spent_before_output_tokens: int | None = None
    max_tokens_auto: bool = False  # generation.max_tokens: auto (a budget per row)
    budget_tokens: int = 0  # the sum of the requests' max_tokens: the most their output can be
    budget_tokens_min: int | None = None  # the smallest and largest max_tokens of a request
    budget_tokens_max: int | None = None
    context_length: int | None = None  # the context the auto budget was computed with (config only)
    prompt_too_long: int = 0  # rows whose prompt fills the context: recorded as prompt_too_long, not sent
    max_cost_usd: float | None = None  # prompts + the output budget, at the config's prices
    stage: str = REVISE  # which stage of the run: "generate" (the student) or "revise" (the teacher)
    #: the revise stage of a two-stage run: the student answer length assumed in each prompt (tokens)
    student_answer_tokens: int | None = None
    #: the generate stage: the config key its completion tokens per request come from
    expected_from: str | None = None

    @property
    def budget_tokens_mean(self) -> float:
        return self.budget_tokens / self.requests if self.requests else 0.0

    @property
    def prompt_tokens_mean(self) -> float:
        return self.prompt_tokens / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["prompt_tokens_mean"] = self.prompt_tokens_mean
        d["budget_tokens_mean"] = self.budget_tokens_mean
        return d


def endpoint_throughput(ep: EndpointConfig, *, latency_s: float, tokens_per_request: float,
                        index: int = 0, admission_tokens_per_request: float | None = None) -> EndpointEstimate:
    """Requests/s one endpoint sustains under its limits (the smallest bound wins). An endpoint whose
    tokens/min limit counts max_tokens at admission is charged ``admission_tokens_per_request`` (prompt +
    max_tokens) when given."""
    if ep.tpm_counts_max_tokens and admission_tokens_per_request is not None:
        tokens_per_request = admission_tokens_per_request
    if latency_s <= 0:
        raise ConfigError("the assumed latency must be > 0 seconds")
    conc = max(1, round(ep.max_concurrency * ep.weight)) if ep.weight != 1.0 else ep.max_concurrency
    bounds: dict[str, float] = {"max_concurrency": conc / latency_s}
    rpm = ep.requests_per_minute / 60.0 if ep.requests_per_minute else None
    tpm = ep.tokens_per_minute / 60.0 / tokens_per_request if ep.tokens_per_minute and tokens_per_request > 0 else None
    if rpm is not None:
        bounds["requests_per_minute"] = rpm
    if tpm is not None:
        bounds["tokens_per_minute"] = tpm
    bound = min(bounds, key=lambda k: bounds[k])
    return EndpointEstimate(ep.name or f"endpoint{index}", ep.model, conc, bounds["max_concurrency"], rpm, tpm,
                            bounds[bound], bound)


def _rows_in_run_dir(cfg: JobConfig) -> int | None:
    try:
        m = read_manifest(cfg.run_dir) if cfg.run_dir.is_dir() else None
    except (RunStateError, OSError):
        return None
    counts = (m or {}).get("counts") or {}
    if not counts:
        return None
    return int(counts.get("data", 0)) + int(counts.get("failed", 0))


class _Counting:
    """A stage's token counter; a counter that fails midway is replaced by the estimate (with a note)."""

    def __init__(self, counter: TokenCounter, notes: list[str], what: str = "the estimate") -> None:
        self.counter, self.notes, self.what = counter, notes, what

    def count(self, batch: list[list[Message]], first_row: int) -> list[int]:
        try:
            return self.counter.count(batch)
        except Exception as e:  # noqa: BLE001 - a tokenizer failure must not stop the dry run
            self.notes.append(f"{self.counter.name} failed ({type(e).__name__}); {self.what} counted from row "
                              f"{first_row} on")
            self.counter = _estimate_counter(self.counter.note)
            return self.counter.count(batch)


@dataclass
class _Tally:
    """One stage's figures, summed over the input's batches."""

    requests: int = 0
    prompt: int = 0
    completion: int = 0
    budget: int = 0  # the sum of the requests' max_tokens
    too_long: int = 0
    lo: int | None = None
    hi: int | None = None
    blo: int | None = None
    bhi: int | None = None

    def add(self, counts: list[int], budgets: list[int], completion: int) -> None:
        if not counts:
            return
        self.requests += len(counts)
        self.prompt += sum(counts)
        self.budget += sum(budgets)
        self.completion += completion
        lo, hi, blo, bhi = min(counts), max(counts), min(budgets), max(budgets)
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        self.blo = blo if self.blo is None else min(self.blo, blo)
        self.bhi = bhi if self.bhi is None else max(self.bhi, bhi)


def _revise_batch(t: _Tally, counts: list[int], estimates: list[int], answers: list[int], budget: AutoBudget | None,
                  max_tokens: int, typical: int) -> None:
    """Adds a batch of revise requests: their prompt tokens (the counter's, and the engine's estimate the
    per-row budget uses) and their student answers' token estimates."""
    if budget is not None:  # the budget each row would be sent with (from the engine's estimate, as a run)
        budgets = [budget(p, a) for p, a in zip(estimates, answers, strict=True)]
        t.too_long += sum(1 for b in budgets if b < 1)
        counts = [c for c, b in zip(counts, budgets, strict=True) if b >= 1]
        budgets = [b for b in budgets if b >= 1]
    else:
        budgets = [max_tokens] * len(counts)
    t.add(counts, budgets, sum(min(b, typical) for b in budgets))


def _stage_estimate(t: _Tally, cfg: JobConfig, *, rows: int, per_default: int, latency_s: float,
                    counter: TokenCounter, notes: list[str], prompt: str, max_tokens: int, auto: bool,
                    context: int | None, stage: str = REVISE, **extra: Any) -> DryRunEstimate:
    """A stage's estimate from its tally: throughput from ``cfg.endpoints``, cost at ``cfg.pricing``."""
    requests = t.requests
    per = round(t.completion / requests) if requests else per_default
    mean_prompt = t.prompt / requests if requests else 0.0
    tokens_per_request = mean_prompt + (t.completion / requests if requests else per)
    admission = mean_prompt + (t.budget / requests if requests else max_tokens)
    eps = [endpoint_throughput(ep, latency_s=latency_s, tokens_per_request=tokens_per_request, index=i,
                               admission_tokens_per_request=admission)
           for i, ep in enumerate(cfg.endpoints)]
    rps = sum(e.rps for e in eps)
    duration = requests / rps if requests and rps > 0 else 0.0
    p = cfg.pricing
    priced = p.input_per_million is not None or p.output_per_million is not None
    return DryRunEstimate(
        rows=rows, requests=requests, invalid_rows=rows - requests - t.too_long,
        prompt_tokens=t.prompt, prompt_tokens_min=t.lo, prompt_tokens_max=t.hi,
        completion_tokens_per_request=per, completion_tokens=t.completion,
        token_counter=counter.name, token_counter_note=counter.note,
        latency_s=latency_s, endpoints=eps, requests_per_s=rps, duration_s=duration,
        cost_usd=p.cost_usd(t.prompt, t.completion),
        input_cost_usd=t.prompt * (p.input_per_million or 0) / 1e6 if priced else None,
        output_cost_usd=t.completion * (p.output_per_million or 0) / 1e6 if priced else None,
        max_tokens=max_tokens, prompt=prompt, run_dir=str(cfg.run_dir), rows_in_run_dir=_rows_in_run_dir(cfg),
        notes=notes, max_tokens_auto=auto, budget_tokens=t.budget, budget_tokens_min=t.blo,
        budget_tokens_max=t.bhi, context_length=context, prompt_too_long=t.too_long,
        max_cost_usd=p.cost_usd(t.prompt, t.budget), stage=stage, **extra,
    )


def _variant(cfg: JobConfig) -> str:
    return f"file {cfg.prompt.template_file}" if cfg.prompt.template_file else f"variant {cfg.prompt.variant}"


def _open(cfg: JobConfig) -> Source:
    # the dry run needs only the task (and the student answer): do not build the kept-columns dicts
    lean = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, keep_input_columns=False))
    source = open_source(lean)
    if cfg.input.precheck:
        preflight(source)  # a dry run is how a config is tested: the same check as a run
    return source


def estimate(cfg: JobConfig, *, latency_s: float = DEFAULT_LATENCY_S, completion_tokens: int | None = None,
             counter: TokenCounter | None = None) -> DryRunEstimate:
    """The dry-run figures of a revise-only config (no ``generate:``; :func:`estimate_run` takes any config):
    streams the input and renders every prompt; sends nothing.

    Raises the engine's UserErrors (ConfigError, InputError, TemplateError) for a bad config or input.
    """
    if cfg.has_generate:
        raise ValueError("estimate() is the revise-only estimate; use estimate_run() for a config with generate:")
    if latency_s <= 0:
        raise ConfigError("the assumed latency must be > 0 seconds")
    template = load_prompt(cfg)
    source = _open(cfg)
    if counter is None:
        counter = make_counter(cfg.endpoints[0].model if cfg.endpoints else None)
    context = smallest_context([ep.context_length for ep in cfg.endpoints])
    budget = auto_budget(cfg, context)
    typical = completion_tokens if completion_tokens is not None else TYPICAL_COMPLETION_TOKENS
    notes: list[str] = []
    counting = _Counting(counter, notes)
    t = _Tally()
    rows = 0
    for prepared in source.batches():
        rows += len(prepared.row_ids)
        pairs = [(task, s) for task, s in zip(prepared.tasks, prepared.solutions, strict=True) if task and s]
        batch = [render(template, task, s) for task, s in pairs]
        if not batch:
            continue
        counts = counting.count(batch, rows - len(prepared.row_ids))
        if budget is not None:
            estimates, answers = [estimate_tokens(m) for m in batch], [text_tokens(s) for _, s in pairs]
        else:
            estimates = answers = []
        _revise_batch(t, counts, estimates, answers, budget, cfg.max_tokens, typical)
    return _stage_estimate(t, cfg, rows=rows, per_default=min(cfg.max_tokens, typical), latency_s=latency_s,
                           counter=counting.counter, notes=notes, prompt=_variant(cfg), max_tokens=cfg.max_tokens,
                           auto=budget is not None, context=context)


@dataclass
class RunEstimate:
    """The dry-run figures of a whole run: one estimate per stage, in the run's order, and the run's totals."""

    stages: list[DryRunEstimate]
    #: the run's expected duration: with two stages, max(stage durations) + one call's latency (the stages
    #: overlap), at most the sequential sum
    overlapped_s: float
    #: the stage durations added (one stage after the other), for comparison
    sequential_s: float
    cost_usd: float | None  # the priced stages' costs added (None: no stage has prices)
    max_cost_usd: float | None  # the same with every answer at its whole max_tokens
    unpriced: list[str] = field(default_factory=list)  # stages without prices: not in the costs

    @property
    def latency_s(self) -> float:
        return self.stages[0].latency_s

    def stage(self, name: str) -> DryRunEstimate:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [s.to_dict() for s in self.stages], "overlapped_s": self.overlapped_s,
                "sequential_s": self.sequential_s, "cost_usd": self.cost_usd, "max_cost_usd": self.max_cost_usd,
                "unpriced": list(self.unpriced)}


def _answer_slots(template: PromptTemplate) -> int:
    """How many times the template inserts the student answer (a template file may do it more than once)."""
    mark = "\x00clair-dry-run-answer\x00"
    return sum((m.get("content") or "").count(mark) for m in render(template, "", mark))


def _total(stages: list[DryRunEstimate]) -> RunEstimate:
    durations = [s.duration_s for s in stages]
    sequential = sum(durations)
    overlapped = sequential
    if len(stages) > 1 and all(s.requests for s in stages):
        # the first student answers arrive after one call; the last revision ends one call after the last answer
        overlapped = min(max(durations) + stages[0].latency_s, sequential)
    priced = [s for s in stages if s.cost_usd is not None]
    return RunEstimate(
        stages, overlapped, sequential,
        cost_usd=sum(s.cost_usd or 0.0 for s in priced) if priced else None,
        max_cost_usd=sum(s.max_cost_usd or 0.0 for s in priced) if priced else None,
        unpriced=[s.stage for s in stages if s.cost_usd is None],
    )


def estimate_run(cfg: JobConfig, *, latency_s: float = DEFAULT_LATENCY_S, completion_tokens: int | None = None,
                 counter: TokenCounter | None = None) -> RunEstimate:
    """The dry-run figures of any config: a revise-only run (:func:`estimate`), a generation-only run, or a
    two-stage run (both stages from one pass over the input). Sends nothing.

    The revise stage of a two-stage run cannot render a student answer that does not exist yet: its prompt
    tokens are the template's with the task and an empty answer, plus the expected answer length
    (``generate.expected_output_tokens``, else ``generate.generation.max_tokens``) for each place the template
    inserts the answer; its per-row ``max_tokens: auto`` budget follows that length too. ``completion_tokens``
    is the revise stage's typical completion (the generate stage's is the expected answer length)."""
    if cfg.generate is None:
        e = estimate(cfg, latency_s=latency_s, completion_tokens=completion_tokens, counter=counter)
        return _total([e])
    if latency_s <= 0:
        raise ConfigError("the assumed latency must be > 0 seconds")
    g = cfg.generate
    template = load_prompt(cfg)
    source = _open(cfg)
    stages = build_stages(cfg, source, template)
    gen, rev = stages[0], (stages[1] if len(stages) > 1 else None)
    gcfg = gen.cfg
    expected = min(g.expected_tokens, g.max_tokens)
    expected_from = (f"generate.expected_output_tokens {g.expected_output_tokens:,}"
                     if g.expected_output_tokens is not None else
                     f"generate.generation.max_tokens {g.max_tokens:,}: every answer as long as it may be; set "
                     "generate.expected_output_tokens for a typical length")
    if g.expected_output_tokens is not None and g.expected_output_tokens > g.max_tokens:
        expected_from += f", capped at generate.generation.max_tokens {g.max_tokens:,}"
    gnotes: list[str] = []
    gcount = _Counting(counter or make_counter(g.endpoints[0].model if g.endpoints else None), gnotes,
                       "the generate stage's estimate")
    gt = _Tally()
    rnotes: list[str] = []
    rt = _Tally()
    rcount: _Counting | None = None
    context: int | None = None
    budget: AutoBudget | None = None
    slots = 0
    typical = completion_tokens if completion_tokens is not None else TYPICAL_COMPLETION_TOKENS
    if rev is not None:
        rcount = _Counting(counter or make_counter(cfg.endpoints[0].model), rnotes, "the revise stage's estimate")
        context = smallest_context([ep.context_length for ep in cfg.endpoints])
        budget = auto_budget(cfg, context)
        slots = _answer_slots(template)
    rows = 0
    for prepared in source.batches():  # one pass over the input for both stages
        n = len(prepared.row_ids)
        first, rows = rows, rows + n
        convs = prepared.messages if prepared.messages is not None else [None] * n
        valid = [(t, c) for t, c in zip(prepared.tasks, convs, strict=True) if t]
        if not valid:
            continue
        counts = gcount.count([gen.prompt(t, None, c) for t, c in valid], first)
        gt.add(counts, [gcfg.max_tokens] * len(counts), expected * len(counts))
        if rev is not None:  # every student answer assumed to reach the revise stage, `expected` tokens long
            assert rcount is not None
            batch = [rev.prompt(t, "", None) for t, _ in valid]
            counts = [c + slots * expected for c in rcount.count(batch, first)]
            if budget is not None:
                estimates = [estimate_tokens(m) + slots * expected for m in batch]
                answers = [expected] * len(batch)
            else:
                estimates = answers = []
            _revise_batch(rt, counts, estimates, answers, budget, cfg.max_tokens, typical)
    gen_prompt = "the row's conversation (input.columns.messages)" if cfg.input.columns.messages else \
        "the row's task as a user message"
    if g.system_prompt is not None:
        gen_prompt = f"generate.system_prompt + {gen_prompt}"
    out = [_stage_estimate(gt, gcfg, rows=rows, per_default=expected, latency_s=latency_s,
                           counter=gcount.counter, notes=gnotes, prompt=gen_prompt, max_tokens=gcfg.max_tokens,
                           auto=False, context=None, stage=GENERATE, expected_from=expected_from)]
    if rev is not None:
        assert rcount is not None
        out.append(_stage_estimate(
            rt, cfg, rows=gt.requests, per_default=min(cfg.max_tokens, typical), latency_s=latency_s,
            counter=rcount.counter, notes=rnotes, prompt=_variant(cfg), max_tokens=cfg.max_tokens,
            auto=budget is not None, context=context, stage=REVISE, student_answer_tokens=expected))
    return _total(out)


@overload
def with_budget(e: DryRunEstimate, cfg: JobConfig) -> DryRunEstimate: ...
@overload
def with_budget(e: RunEstimate, cfg: JobConfig) -> RunEstimate: ...


def with_budget(e: DryRunEstimate | RunEstimate, cfg: JobConfig) -> DryRunEstimate | RunEstimate:
    """``e`` with the run's budget figures (no change without a budget). A :class:`RunEstimate`: the budget
    applies to the last stage, as the run applies it (``stages.generate_config``): the teacher's spending in
    a two-stage run, the student's (at ``generate.pricing``) in a generation-only run."""
    if isinstance(e, RunEstimate):
        last = e.stages[-1]
        scfg = generate_config(cfg) if last.stage == GENERATE else cfg
        return dataclasses.replace(e, stages=[*e.stages[:-1], _with_budget(last, scfg)])
    return _with_budget(e, cfg)


def _with_budget(e: DryRunEstimate, cfg: JobConfig) -> DryRunEstimate:
    b = cfg.budget
    if b.max_usd is None and b.max_output_tokens is None:
        return e
    worst_out = e.budget_tokens if e.budget_tokens else e.requests * e.max_tokens  # every answer at its max_tokens
    before_prompt = before_out = 0
    try:
        m = read_manifest(cfg.run_dir) if cfg.run_dir.is_dir() else None
    except (RunStateError, OSError):
        m = None
    if m:
        before_prompt, before_out, _ = earlier_spending(m.get("runs") or [])
    return dataclasses.replace(
        e, budget_max_usd=b.max_usd, budget_max_output_tokens=b.max_output_tokens,
        worst_completion_tokens=worst_out, worst_cost_usd=cfg.pricing.cost_usd(e.prompt_tokens, worst_out),
        spent_before_usd=cfg.pricing.cost_usd(before_prompt, before_out) if b.max_usd is not None else None,
        spent_before_output_tokens=before_out,
    )


def _budget_line(key: str, limit: float, expected: float, worst: float, fmt: Callable[[float], str],
                 before: float | None) -> str:
    spent = f" (the run directory's earlier sessions already spent {fmt(before)}: the budget counts it)" if before else ""
    head = f"budget: {key} {fmt(limit)}"
    if expected > limit:
        share = limit / expected if expected > 0 else 0.0
        return (f"{head}: the estimate ({fmt(expected)}) does NOT fit: the run would stop (exit 3, resumable) after "
                f"about {share:.0%} of the requests; raise {key} to at least {fmt(expected)}{spent}")
    if worst > limit:
        return (f"{head}: the estimate ({fmt(expected)}) fits; the worst case (every answer at max_tokens: "
                f"{fmt(worst)}) does not: if answers run long, the run stops at the budget (exit 3, resumable){spent}")
    return f"{head}: the estimate ({fmt(expected)}) fits, and so does the worst case ({fmt(worst)}){spent}"


def budget_lines(e: DryRunEstimate) -> list[str]:
    lines = []
    if e.budget_max_usd is not None and e.cost_usd is not None and e.worst_cost_usd is not None:
        lines.append(_budget_line("budget.max_usd", e.budget_max_usd, e.cost_usd, e.worst_cost_usd,
                                  lambda x: f"${x:,.2f}", e.spent_before_usd))
    if e.budget_max_output_tokens is not None and e.worst_completion_tokens is not None:
        lines.append(_budget_line("budget.max_output_tokens", e.budget_max_output_tokens, e.completion_tokens,
                                  e.worst_completion_tokens, lambda x: f"{x:,.0f} output tokens",
                                  e.spent_before_output_tokens))
    return lines


# ---------------------------------------------------------------------------- output


def format_duration(s: float) -> str:
    s = round(s)
    if s < 60:
        return f"{s}s"
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {sec}s"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}/s"


def _header(e: DryRunEstimate) -> list[str]:
    lines = ["dry run: nothing was sent (no HTTP session was opened; the run directory was not touched)"]
    lines.append(f"input: {e.rows:,} rows (all input rows after input.limit; rows already done are not subtracted)")
    if e.rows_in_run_dir:
        lines.append(f"  note: {e.run_dir} already holds {e.rows_in_run_dir:,} finished rows; a real run skips them")
    return lines


def _stage_lines(e: DryRunEstimate) -> list[str]:
    """A stage's figures, from its requests to its duration and budget."""
    lines = []
    if e.stage == GENERATE:
        inv = f" ({e.invalid_rows:,} with an empty task: recorded as invalid_input, not sent)" if e.invalid_rows else ""
    elif e.student_answer_tokens is not None:
        inv = " (assumption: every student answer reaches the revise stage: none fails or is cut by max_tokens)"
    else:
        inv = f" ({e.invalid_rows:,} with an empty task or student_solution: recorded as invalid_input, not sent)" \
            if e.invalid_rows else ""
    lines.append(f"requests: {e.requests:,}{inv}")
    rng = f", mean {e.prompt_tokens_mean:,.0f}, min {e.prompt_tokens_min:,}, max {e.prompt_tokens_max:,}" \
        if e.requests else ""
    what = e.prompt if e.student_answer_tokens is None else \
        f"{e.prompt} + a student answer assumed {e.student_answer_tokens:,} tokens long, added to its count"
    lines.append(f"prompt tokens: {e.prompt_tokens:,}{rng} ({what}; counter: {e.token_counter})")
    if e.token_counter_note:
        lines.append(f"  counter note: {e.token_counter_note}")
    lines.extend(f"  note: {n}" for n in e.notes)
    if e.stage == GENERATE:
        lines.append(f"completion tokens: {e.completion_tokens:,} expected = {e.requests:,} x "
                     f"{e.completion_tokens_per_request:,} (assumption: {e.expected_from})")
    elif e.max_tokens_auto:
        ctx = f"context {e.context_length:,}" if e.context_length else \
            "no context length known: set endpoints[].context_length (a run also asks GET /models)"
        follows = "" if e.student_answer_tokens is None else \
            f", from the assumed student answer of {e.student_answer_tokens:,} tokens"
        lines.append(f"max_tokens: auto, per row: mean {e.budget_tokens_mean:,.0f}, min {e.budget_tokens_min or 0:,}, "
                     f"max {e.budget_tokens_max or 0:,} (cap {e.max_tokens:,}; {ctx}{follows})")
        if e.prompt_too_long:
            lines.append(f"  {e.prompt_too_long:,} rows whose prompt fills the context: recorded as prompt_too_long, "
                         "not sent")
        lines.append(
            f"completion tokens: {e.completion_tokens:,} expected = {e.requests:,} x {e.completion_tokens_per_request:,} "
            f"on average (assumption: min(the row's max_tokens, {TYPICAL_COMPLETION_TOKENS}); a CLAIR answer is ~700 "
            "tokens)"
        )
    else:
        lines.append(
            f"completion tokens: {e.completion_tokens:,} expected = {e.requests:,} x {e.completion_tokens_per_request:,} "
            f"(assumption: min(max_tokens {e.max_tokens:,}, {TYPICAL_COMPLETION_TOKENS}); a CLAIR answer is ~700 tokens)"
        )
    lines.append(f"output budget: {e.budget_tokens:,} tokens at most (the sum of the requests' max_tokens)")
    prices = "generate.pricing" if e.stage == GENERATE else "pricing"
    if e.cost_usd is None:
        lines.append(f"cost: not estimated (set {prices}.input_per_million and {prices}.output_per_million)")
    else:
        lines.append(f"cost: ${e.cost_usd:,.2f} = ${e.input_cost_usd:,.2f} input + ${e.output_cost_usd:,.2f} output "
                     f"(config {prices}; completion tokens assumed as above); at most ${e.max_cost_usd or 0:,.2f} "
                     "if every answer used its whole max_tokens")
    lines.append(f"throughput: {e.requests_per_s:,.2f} requests/s (assumption: {e.latency_s:g}s per call)")
    for ep in e.endpoints:
        lines.append(f"  {ep.name} ({ep.model}): {ep.rps:,.2f}/s, bound by {ep.bound} "
                     f"[concurrency {ep.concurrency}/{e.latency_s:g}s = {_rate(ep.concurrency_rps)}, "
                     f"rpm {_rate(ep.rpm_rps)}, tpm {_rate(ep.tpm_rps)}]")
    lines.append(f"expected duration: {format_duration(e.duration_s)} "
                 "(a lower bound: retries, 429s and the adaptive slow start add time)")
    lines.extend(budget_lines(e))
    return lines


def _money(v: float | None) -> str:
    return "not estimated" if v is None else f"${v:,.2f}"


def _models(e: DryRunEstimate) -> str:
    return ", ".join(sorted({ep.model for ep in e.endpoints}))


def _run_lines(r: RunEstimate) -> list[str]:
    lines = _header(r.stages[0])
    if len(r.stages) == 1:
        e = r.stages[0]
        lines.append(f"generate stage only (no top-level endpoints: a generation-only run; model "
                     f"{_models(e)}):")
        lines.extend("  " + x for x in _stage_lines(e))
        return lines
    names = {GENERATE: "the student", REVISE: "the teacher"}
    for e in r.stages:
        lines.append(f"{e.stage} stage ({names.get(e.stage, 'model')}: {_models(e)}):")
        lines.extend("  " + x for x in _stage_lines(e))
        if e.stage == REVISE and (e.budget_max_usd is not None or e.budget_max_output_tokens is not None):
            lines.append("  (the budget counts the revise stage's spending, as the run does; the generate stage's "
                         "is not counted)")
    lines.append("total (the stages run at the same time: a row is revised as soon as its student answer is "
                 "journaled):")
    lines.append(f"  expected duration: {format_duration(r.overlapped_s)} overlapped (assumption: max(stage "
                 f"durations) + one call's latency ({r.latency_s:g}s): the first student answers arrive after one "
                 "call, the last revision ends one call after the last answer; at most the sequential sum)")
    lines.append(f"  sequential, for comparison (one stage after the other): {format_duration(r.sequential_s)} = "
                 + " + ".join(f"{format_duration(e.duration_s)} {e.stage}" for e in r.stages))
    if r.cost_usd is None:
        lines.append("  cost: not estimated (set generate.pricing and pricing)")
    else:
        parts = " + ".join(f"{_money(e.cost_usd)} {e.stage}" for e in r.stages if e.cost_usd is not None)
        missing = f" (not counted: the {' and '.join(r.unpriced)} stage without prices)" if r.unpriced else ""
        lines.append(f"  cost: {_money(r.cost_usd)} = {parts}{missing}; at most {_money(r.max_cost_usd)} if every "
                     f"answer used its whole max_tokens")
    return lines


def format_estimate(e: DryRunEstimate | RunEstimate) -> str:
    """The printed figures: a revise-only run as one block; a run with a generate stage as a short block per
    stage, then the total."""
    if isinstance(e, RunEstimate):
        if len(e.stages) == 1 and e.stages[0].stage == REVISE:
            e = e.stages[0]
        else:
            return "\n".join(_run_lines(e))
    return "\n".join(_header(e) + _stage_lines(e))


def dry_run(cfg: JobConfig, *, latency_s: float = DEFAULT_LATENCY_S) -> int:
    """Print the dry-run figures for ``cfg`` as a run would send it (a resumed run keeps the max_tokens it
    was made with); returns the exit code (0)."""
    try:
        m = read_manifest(cfg.run_dir) if cfg.run_dir.is_dir() else None
    except (RunStateError, OSError):
        m = None
    cfg, _ = keep_run_max_tokens(cfg, (m or {}).get("fingerprint"))
    print(format_estimate(with_budget(estimate_run(cfg, latency_s=latency_s), cfg)))
    return 0
