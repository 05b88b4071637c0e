"""What a stage of a job is made of, built from the config: its prompt template, its input source and the
fingerprint of its requests (L3; no HTTP, no run directory: the dry run uses it too).

The request fingerprint covers what changes the ANSWER (input identity and column mapping, prompt variant
and template text, model names, generation parameters, and each endpoint's ``extra_body`` and
``system_role: false`` when one sets them). URLs, keys, weights, concurrency, rate limits and Azure's
``api_version`` are deliberately not part of it, and neither is ``input.limit`` (raising it extends a run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from engine.core.config import EndpointConfig, JobConfig
from engine.prompts import PromptTemplate, builtin_template, load_template
from engine.source import Source


def load_prompt(cfg: JobConfig) -> PromptTemplate:
    if cfg.prompt.template_file:
        return load_template(cfg.resolve(cfg.prompt.template_file))
    return builtin_template(cfg.prompt.variant)


def open_source(cfg: JobConfig) -> Source:
    i = cfg.input
    return Source(
        path=str(cfg.resolve(i.path)) if i.path else None,
        dataset=i.dataset,
        name=i.name,
        split=i.split,
        revision=i.revision,
        task=i.columns.task,
        student_solution=i.columns.student_solution,
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
    return request_fingerprint(
        source.fingerprint(),
        template.text,
        cfg.prompt.variant if not cfg.prompt.template_file else "file",
        [ep.model for ep in cfg.endpoints],
        cfg.generation,
        endpoint_shaping(cfg.endpoints),
    )
