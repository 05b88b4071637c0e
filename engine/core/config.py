"""Job configuration: YAML → validated, frozen objects (L1).

Unknown keys are errors; every error is a one-line :class:`ConfigError` naming the key and the fix.
``--set a.b=value`` overrides are applied to the raw mapping before validation (values are YAML scalars,
``endpoints.0.url=...`` indexes a list).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.core.errors import ConfigError

#: ``generation.max_tokens: auto``: each row gets its own output budget (``max_tokens_auto``)
AUTO = "auto"
#: CLAIR's reference sampling (temperature 0.7), with a per-row output budget instead of one max_tokens
#: for every row; user keys add to it, and a key set to null removes it
DEFAULT_GENERATION: dict[str, Any] = {"temperature": 0.7, "max_tokens": AUTO}
VARIANTS = ("distilabel", "contextualai", "length-preserving")
SECRET_KEY_RE = re.compile(r"(^|_)(api_?key|key|secret|password|authorization|token)$")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: only true/false are booleans (``progress: off`` stays the string
    "off", ``stop: [no]`` stays "no"), dates stay strings, and a duplicate key is an error (PyYAML
    silently keeps the last one)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_error_at(e: yaml.YAMLError) -> str:
    """`` at line N`` for a YAML error that knows where it is (1-based), else empty."""
    mark = getattr(e, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def yaml_load(text: str) -> Any:
    """YAML with duplicate keys refused, only true/false as booleans, dates kept as text."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


#: the task column of a config that names none (and has no ``columns.messages``)
DEFAULT_TASK_COLUMN = "prompt"
#: the student-answer column of a revise-only config that names none (UltraFeedback-style ``rejected``)
DEFAULT_STUDENT_SOLUTION_COLUMN = "rejected[1].content"


@dataclass(frozen=True)
class ColumnsConfig:
    """Where a row's task (and, in a revise-only run, its student answer) is read from. A key left out (null)
    takes its default: read the resolved values through :attr:`task_column` and
    :meth:`student_solution_column`, never the fields."""

    task: str | None = None
    student_solution: str | None = None
    #: a column of chat messages (list of {role, content}), optionally sliced: ``chosen[:-1]``
    messages: str | None = None

    def check(self) -> None:
        if self.task is not None and self.messages is not None:
            raise ConfigError("input.columns.task and input.columns.messages are both set; give one of them "
                              "(task: a text column, messages: a chat message list)")

    @property
    def task_column(self) -> str | None:
        """The task's column path; None when the task comes from ``messages``."""
        if self.task is not None:
            return self.task
        return DEFAULT_TASK_COLUMN if self.messages is None else None

    def student_solution_column(self, has_generate: bool) -> str | None:
        """The student answer's column path; None in a run with a generate stage (it writes the answers)."""
        if has_generate:
            return None
        return self.student_solution if self.student_solution is not None else DEFAULT_STUDENT_SOLUTION_COLUMN


@dataclass(frozen=True)
class InputConfig:
    path: str | None = None
    dataset: str | None = None
    name: str | None = None  # dataset configuration name (hub inputs)
    split: str = "train"
    revision: str | None = None  # hub dataset revision (git ref)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    id_column: str | None = None
    limit: int | None = None
    batch_rows: int = 1024
    #: the pre-flight check of the input before the first request (engine/preflight.py); false skips it
    precheck: bool = True

    def check(self) -> None:
        if (self.path is None) == (self.dataset is None):
            raise ConfigError("input: give exactly one of input.path (local files) or input.dataset (hub dataset)")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("input.limit must be >= 0 (or null for all rows)")
        if not 1 <= self.batch_rows <= 1_000_000:
            raise ConfigError("input.batch_rows must be between 1 and 1000000")
        self.columns.check()


@dataclass(frozen=True)
class PromptConfig:
    variant: str = "distilabel"
    template_file: str | None = None

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"prompt.variant {self.variant!r} is unknown; use one of: {', '.join(VARIANTS)}")


#: request body keys the engine sets itself: neither ``generation`` nor ``endpoints[].extra_body`` may set them
ENGINE_BODY_KEYS = ("messages", "model", "stream")


@dataclass(frozen=True)
class AzureConfig:
    """An Azure OpenAI deployment: the key goes in the ``api-key`` header, every URL gets ``?api-version=``."""

    api_version: str = ""

    def check(self, where: str) -> None:
        if not self.api_version.strip():
            raise ConfigError(f'{where}.api_version is required, e.g. api_version: "2024-10-21"')


@dataclass(frozen=True)
class EndpointConfig:
    url: str = ""
    model: str = ""
    api_key_env: str | None = None
    max_concurrency: int = 64
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    weight: float = 1.0
    adaptive: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    #: merged into every request body of this endpoint, over ``generation`` (a key set to null is not sent)
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: false: the model has no system role; the system text is folded into the first user message
    system_role: bool = True
    azure: AzureConfig | None = None
    #: the model's context length in tokens (prompt + answer); None: from GET /models when it reports one
    context_length: int | None = None
    #: the endpoint's tokens/min limit counts a request's max_tokens when admitting it (OpenAI does)
    tpm_counts_max_tokens: bool = False

    def check(self, where: str) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url must be an http(s) URL ending in /v1, e.g. http://127.0.0.1:8000/v1")
        if not self.model:
            raise ConfigError(f"{where}.model is required (the model name the endpoint serves)")
        if self.max_concurrency < 1:
            raise ConfigError(f"{where}.max_concurrency must be >= 1")
        for k in ("requests_per_minute", "tokens_per_minute"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise ConfigError(f"{where}.{k} must be > 0 (or null for no limit)")
        if self.weight <= 0:
            raise ConfigError(f"{where}.weight must be > 0")
        if self.api_key_env is not None and not _ENV_NAME_RE.fullmatch(self.api_key_env):
            raise ConfigError(f"{where}.api_key_env must be the NAME of an environment variable, not the key itself")
        if self.context_length is not None and self.context_length < 2:
            raise ConfigError(f"{where}.context_length must be an integer >= 2 (tokens), or null to ask GET /models")
        self._check_extra_body(where)
        if self.azure is not None:
            self.azure.check(f"{where}.azure")
            if "?" in self.url or self.url.rstrip("/").endswith("/chat/completions"):
                raise ConfigError(
                    f"{where}.url must be the Azure deployment URL without /chat/completions and without ?api-version, "
                    "e.g. https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT (the version goes in "
                    f"{where}.azure.api_version)")

    def _check_extra_body(self, where: str) -> None:
        keys = set(self.extra_body)
        if any(not isinstance(k, str) for k in keys):
            raise ConfigError(f"{where}.extra_body: every key must be a string (a request body field name)")
        if keys & set(ENGINE_BODY_KEYS):
            raise ConfigError(f"{where}.extra_body: 'messages', 'model' and 'stream' are set by the engine; remove them")
        if keys & {"max_tokens", "max_completion_tokens"}:
            raise ConfigError(f"{where}.extra_body: set the output budget in generation.max_tokens, not per endpoint "
                              "(the engine plans every request with it)")

    @property
    def label(self) -> str:
        return self.name or self.url

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/demo"
    rows_per_shard: int = 10000
    keep_input_columns: bool = True

    def check(self) -> None:
        if not 1 <= self.rows_per_shard <= 10_000_000:
            raise ConfigError("output.rows_per_shard must be between 1 and 10000000")


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_total_s: float = 1800.0

    def check(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("retry.max_attempts must be >= 1 (1 = no retries)")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_total_s < 0:
            raise ConfigError("retry delays must be >= 0")


@dataclass(frozen=True)
class TimeoutsConfig:
    connect_s: float = 10.0
    request_s: float = 600.0  # total per request, sized for long generations

    def check(self) -> None:
        if self.connect_s <= 0 or self.request_s <= 0:
            raise ConfigError("timeouts.connect_s and timeouts.request_s must be > 0")


@dataclass(frozen=True)
class RunConfig:
    grace_period_s: float = 10.0  # on Ctrl-C/SIGTERM, how long in-flight requests may finish
    #: journal group-commit interval: a power loss (not a crash: the OS has every write) loses at most this
    #: window; each fsync costs ~0.3 ms of CPU here, so 100 ms is half the CPU of 50 for a tenth of a second
    fsync_interval_ms: float = 100.0
    allow_mixed_models: bool = False
    breaker_failures: int = 20  # consecutive endpoint failures that open its circuit breaker
    breaker_open_s: float = 10.0
    #: every endpoint failing (breakers open, probes failing) this long stops the run (exit 75, resumable)
    max_pause_s: float = 900.0
    progress: str = "auto"  # auto | rich | plain | off
    progress_interval_s: float = 10.0  # plain progress line period
    #: earlier run directories whose stored answers are taken instead of sending the same request again
    reuse_from: tuple[str, ...] = ()
    #: also reuse the answers of this output dir's archived runs (DIR.old-*, made by --new-run)
    reuse_archived: bool = True
    #: the client of the chat calls: fast (the engine's lean HTTP/1.1 client) | aiohttp
    http_client: str = "fast"

    def check(self) -> None:
        if self.http_client not in ("fast", "aiohttp"):
            raise ConfigError("run.http_client must be one of: fast, aiohttp")
        if self.grace_period_s < 0:
            raise ConfigError("run.grace_period_s must be >= 0")
        if not 1 <= self.fsync_interval_ms <= 100:
            raise ConfigError("run.fsync_interval_ms must be between 1 and 100")
        if not (math.isfinite(self.max_pause_s) and self.max_pause_s > 0):
            raise ConfigError("run.max_pause_s must be a number of seconds > 0 (how long every endpoint may fail "
                              "before the run stops)")
        if self.progress not in ("auto", "rich", "plain", "off"):
            raise ConfigError("run.progress must be one of: auto, rich, plain, off")
        if self.breaker_failures < 1:
            raise ConfigError("run.breaker_failures must be >= 1")
        if not 0 < self.breaker_open_s <= 120:
            raise ConfigError("run.breaker_open_s must be > 0 and <= 120 (the breaker's longest open time)")


@dataclass(frozen=True)
class PricingConfig:
    input_per_million: float | None = None
    output_per_million: float | None = None

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """USD for these tokens, or None when no price is set."""
        if self.input_per_million is None and self.output_per_million is None:
            return None
        return (prompt_tokens * (self.input_per_million or 0) + completion_tokens * (self.output_per_million or 0)) / 1e6


@dataclass(frozen=True)
class BudgetConfig:
    """A run's spending limit (not in the request fingerprint: raising it resumes the same run)."""

    #: USD for the whole run (every session of its run directory), at the ``pricing`` prices
    max_usd: float | None = None
    #: output tokens for the whole run (for endpoints without prices, e.g. self-hosted)
    max_output_tokens: int | None = None

    def check(self, pricing: PricingConfig, generation: dict[str, Any], stage: str = "") -> None:
        """``pricing`` and ``generation`` of one stage; ``stage``: its config prefix ("" for the top level,
        "generate." for the student's)."""
        if self.max_usd is not None and self.max_usd <= 0:
            raise ConfigError("budget.max_usd must be > 0 (or null for no budget)")
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            raise ConfigError("budget.max_output_tokens must be >= 1 (or null for no budget)")
        if self.max_usd is not None:
            if pricing.input_per_million is None or pricing.output_per_million is None:
                raise ConfigError(f"budget.max_usd needs prices: set {stage}pricing.input_per_million and "
                                  f"{stage}pricing.output_per_million (USD per million tokens), or use "
                                  "budget.max_output_tokens for an endpoint without prices")
            if pricing.input_per_million < 0 or pricing.output_per_million < 0:
                raise ConfigError(f"{stage}pricing.input_per_million and {stage}pricing.output_per_million must "
                                  "be >= 0")
        if (self.max_usd is not None or self.max_output_tokens is not None) and generation.get("max_tokens") is None:
            raise ConfigError(f"a budget needs {stage}generation.max_tokens: without it an answer's size (and cost) "
                              "has no bound")


@dataclass(frozen=True)
class GuardConfig:
    """The quality guard: stop a run whose revisions are mostly unusable (not in the request fingerprint).

    Each ``max_*`` is a share of this session's rows (0.2 = 20%); null turns that check off."""

    #: rows this session must have recorded before the guard judges (then it re-checks at every row)
    min_rows: int = 200
    #: rows without a usable revision (the answer could not be parsed, or no answer after the retries)
    max_no_revision: float | None = 0.2
    #: revisions identical to the student's answer (after whitespace normalisation)
    max_identical: float | None = 0.3
    #: rows the teacher marked as worsened
    max_worsened: float | None = 0.3

    def check(self) -> None:
        if self.min_rows < 1:
            raise ConfigError("guard.min_rows must be >= 1")
        for k in ("max_no_revision", "max_identical", "max_worsened"):
            v = getattr(self, k)
            if v is not None and not 0 <= v <= 1:
                raise ConfigError(f"guard.{k} must be a share between 0 and 1 (0.3 = 30%), or null to turn it off")


@dataclass(frozen=True)
class MaxTokensAutoConfig:
    """The per-row output budget of ``generation.max_tokens: auto``:
    min(cap, context length - prompt tokens, ceil(k x student-answer tokens) + margin)."""

    cap: int = 4096
    k: float = 1.5
    margin: int = 512

    def check(self) -> None:
        if self.cap < 1:
            raise ConfigError("max_tokens_auto.cap must be >= 1 (tokens)")
        if not 0 < self.k <= 100:
            raise ConfigError("max_tokens_auto.k must be > 0 and <= 100 (output tokens per student-answer token)")
        if self.margin < 0:
            raise ConfigError("max_tokens_auto.margin must be >= 0 (tokens for the rationale)")


def check_endpoints(endpoints: tuple[EndpointConfig, ...], where: str, allow_mixed_models: bool) -> None:
    """The rules every stage's endpoint list follows; ``where``: its config key (``endpoints``,
    ``generate.endpoints``)."""
    if not endpoints:
        raise ConfigError(f"{where}: at least one endpoint is required (url + model)")
    for i, ep in enumerate(endpoints):
        ep.check(f"{where}[{i}]")
    models = {ep.model for ep in endpoints}
    if len(models) > 1 and not allow_mixed_models:
        raise ConfigError(
            f"{where} serve different models ({', '.join(sorted(models))}); "
            "set run.allow_mixed_models: true if that is intended"
        )
    labels = [ep.label for ep in endpoints]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: two endpoints have the same url/name; give each a distinct name")


def check_generation(gen: dict[str, Any], stage: str, *, auto_ok: bool) -> None:
    """The generation keys of one stage; ``stage``: its config prefix ("" for the top level, "generate." for
    the student's). ``auto_ok``: ``max_tokens`` may be auto or absent (the revise stage); else it must be a
    positive integer (a student answer has no answer to follow)."""
    if "extra_body" in gen:  # the openai client's name for "merge into the body": sent as is, servers ignore it
        raise ConfigError(f"{stage}generation.extra_body would reach the server as one unknown field; write its "
                          f"keys directly under {stage}generation (or under {stage}endpoints[N].extra_body for one "
                          "endpoint)")
    if "messages" in gen or "model" in gen or "stream" in gen:
        raise ConfigError(f"{stage}generation: 'messages', 'model' and 'stream' are set by the engine; remove them")
    mt = gen.get("max_tokens")
    if auto_ok:
        if mt is not None and mt != AUTO and not _positive_int(mt):
            raise ConfigError(f"{stage}generation.max_tokens must be a positive integer or auto (a budget per row)")
    elif mt == AUTO:
        raise ConfigError(f"{stage}generation.max_tokens: auto is for the revise stage (its budget follows the "
                          "student answer); give the student a positive integer, e.g. 2048")
    elif not _positive_int(mt):
        raise ConfigError(f"{stage}generation.max_tokens must be a positive integer (it bounds every student "
                          "answer), e.g. 2048")
    t = gen.get("temperature")
    if t is not None and (not isinstance(t, int | float) or isinstance(t, bool) or t < 0):
        raise ConfigError(f"{stage}generation.temperature must be a number >= 0")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


#: the student's sampling (the generate stage); user keys add to it, and a key set to null removes it
DEFAULT_STUDENT_GENERATION: dict[str, Any] = {"temperature": 0.7, "max_tokens": 2048}


@dataclass(frozen=True)
class GenerateConfig:
    """The generate stage (top-level ``generate:``): a student (policy) model answers each prompt; the revise
    stage (top-level ``endpoints:``) then revises each answer. Without top-level endpoints, a generation-only
    run."""

    #: the student's endpoints (the same schema as the top level's)
    endpoints: tuple[EndpointConfig, ...] = ()
    generation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_STUDENT_GENERATION))
    #: a system message for the student (None: none)
    system_prompt: str | None = None
    #: false: a student answer cut by max_tokens is not revised (a failure row)
    keep_truncated: bool = False
    #: the dry run's estimate of a student answer's length in tokens (None: generation.max_tokens)
    expected_output_tokens: int | None = None
    #: the student's prices (the dry run, the reports, a generation-only run's budget)
    pricing: PricingConfig = field(default_factory=PricingConfig)

    def check(self, allow_mixed_models: bool) -> None:
        check_endpoints(self.endpoints, "generate.endpoints", allow_mixed_models)
        check_generation(self.generation, "generate.", auto_ok=False)
        if self.system_prompt is not None and not self.system_prompt.strip():
            raise ConfigError("generate.system_prompt is empty; give the system message's text, or null for none")
        if self.expected_output_tokens is not None and self.expected_output_tokens < 1:
            raise ConfigError("generate.expected_output_tokens must be >= 1 (tokens), or null to assume "
                              "generate.generation.max_tokens")

    @property
    def max_tokens(self) -> int:
        """The most output tokens a student answer may get."""
        return int(self.generation["max_tokens"])

    @property
    def expected_tokens(self) -> int:
        """The dry run's length of a student answer: expected_output_tokens, else max_tokens."""
        return self.expected_output_tokens if self.expected_output_tokens is not None else self.max_tokens


@dataclass(frozen=True)
class JobConfig:
    input: InputConfig = field(default_factory=InputConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    endpoints: tuple[EndpointConfig, ...] = ()
    generation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GENERATION))
    output: OutputConfig = field(default_factory=OutputConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    #: the per-row budget's parameters (used when generation.max_tokens is auto)
    max_tokens_auto: MaxTokensAutoConfig = field(default_factory=MaxTokensAutoConfig)
    #: the generate stage (a student model answers each prompt first); None: a revise-only run
    generate: GenerateConfig | None = None
    #: directory the config file lives in; relative paths in the config are resolved against it
    base_dir: str = "."

    def check(self) -> None:
        self.input.check()
        self.prompt.check()
        cols = self.input.columns
        if self.generate is not None:
            if cols.student_solution is not None:
                raise ConfigError("input.columns.student_solution cannot be used with generate: the generate stage "
                                  "writes the student answers; remove input.columns.student_solution or the "
                                  "generate: section")
            self.generate.check(self.run.allow_mixed_models)
        elif cols.messages is not None:
            raise ConfigError("input.columns.messages needs a generate: section (the student answers the "
                              "conversation); without one, set input.columns.task to the prompt's text column")
        if self.endpoints or self.generate is None:  # no top-level endpoints: a generation-only run
            check_endpoints(self.endpoints, "endpoints", self.run.allow_mixed_models)
        gen = self.generation
        check_generation(gen, "", auto_ok=True)
        self.output.check()
        self.retry.check()
        self.timeouts.check()
        self.run.check()
        self.check_budget()
        self.guard.check()
        self.max_tokens_auto.check()

    def check_budget(self) -> None:
        """``budget`` against the prices and max_tokens of every stage the run has: the teacher's (top-level
        ``pricing``, ``generation``) and the student's (``generate.pricing``, ``generate.generation``)."""
        if self.has_revise:
            self.budget.check(self.pricing, self.generation)
        if self.generate is not None:  # the budget counts the student's spending too, at its prices
            self.budget.check(self.generate.pricing, self.generate.generation, "generate.")

    @property
    def has_generate(self) -> bool:
        """The run has a generate stage (a student model answers each prompt)."""
        return self.generate is not None

    @property
    def has_revise(self) -> bool:
        """The run has a revise stage (top-level endpoints: the teacher)."""
        return bool(self.endpoints)

    @property
    def max_tokens_is_auto(self) -> bool:
        return self.generation.get("max_tokens") == AUTO

    @property
    def max_tokens(self) -> int:
        """The most output tokens a row may get: generation.max_tokens, or max_tokens_auto.cap when auto."""
        mt = self.generation.get("max_tokens")
        return self.max_tokens_auto.cap if mt == AUTO else int(mt or 4096)

    @property
    def request_generation(self) -> dict[str, Any]:
        """The generation parameters every request body carries (max_tokens: auto is each row's own)."""
        if not self.max_tokens_is_auto:
            return self.generation
        return {k: v for k, v in self.generation.items() if k != "max_tokens"}

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else Path(self.base_dir) / path

    @property
    def run_dir(self) -> Path:
        return self.resolve(self.output.dir)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        d = _lists(dataclasses.asdict(self))
        d.pop("base_dir", None)
        return redact_secrets(d) if redact else d


def _lists(obj: Any) -> Any:
    """Tuples as lists, all the way down (the YAML / JSON shape a config is read from)."""
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_lists(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:  # tuple[X, ...]
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping (key: value)")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: Any, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping (key: value), got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; known keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def parse_set(item: str) -> tuple[list[str], Any]:
    """``a.b.0.c=value`` → (["a","b","0","c"], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set output.dir=runs/x")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ConfigError(f"--set {item!r}: empty part in key {key!r}; use dots between names, e.g. input.limit")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_set(item)
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            nxt_is_index = parts[i + 1].isdigit()
            if isinstance(node, list):
                if not part.isdigit() or int(part) > len(node):
                    raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not an existing list index")
                if int(part) == len(node):  # one past the end: a new item (e.g. endpoints.1.url=...)
                    node.append([] if nxt_is_index else {})
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i])} is not a mapping")
            if node.get(part) is None:
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) > len(node):
                raise ConfigError(f"--set {item!r}: {last} is not a valid list index")
            if int(last) == len(node):
                node.append(value)
            else:
                node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item!r}: cannot set a key inside a {type(node).__name__}")
    return raw


def from_dict(raw: dict[str, Any], base_dir: str = ".") -> JobConfig:
    cfg = _build(JobConfig, raw, "")
    # generation keys add to CLAIR's reference sampling; a key set to null is not sent at all
    gen = _merged(DEFAULT_GENERATION, cfg.generation)
    generate = cfg.generate
    if generate is not None:  # the student's keys add to its own defaults, the same way
        generate = dataclasses.replace(generate, generation=_merged(DEFAULT_STUDENT_GENERATION, generate.generation))
    cfg = dataclasses.replace(cfg, base_dir=str(base_dir), generation=gen, generate=generate)
    cfg.check()
    return cfg


def _merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**defaults, **given}.items() if v is not None}


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist; pass the path of a YAML job config") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read ({e.strerror}); check its permissions") from None
    try:
        raw = yaml_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML{yaml_error_at(e)}; fix the syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level (input:, endpoints:, ...)")
    return raw


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> JobConfig:
    """Read a YAML job config, apply ``--set`` overrides, validate. Relative paths in it are taken
    relative to the current directory (like the CLI user expects)."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return from_dict(raw, base_dir=".")


def is_secret_override(override: str) -> bool:
    """Does a ``--set KEY.PATH=VALUE`` carry a secret (a header, a key, a token), by its key path?"""
    parts = [p.lower() for p in override.split("=", 1)[0].split(".")]
    return "headers" in parts or bool(SECRET_KEY_RE.search(parts[-1]))


def redact_secrets(obj: Any, key: str = "") -> Any:
    """Replace values of secret-looking keys and of every header with "***"."""
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            lk = str(k).lower()
            if lk == "headers" and isinstance(v, dict):
                out[k] = {hk: "***" for hk in v}
            elif SECRET_KEY_RE.search(lk) and v is not None:
                out[k] = "***"
            else:
                out[k] = redact_secrets(v, lk)
        return out
    if isinstance(obj, list | tuple):
        return [redact_secrets(v, key) for v in obj]
    return obj
