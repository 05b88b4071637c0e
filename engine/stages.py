"""What a stage of a job is made of, built from the config: its prompt template, its input source and the
fingerprint of its requests (L3; no HTTP, no run directory: the dry run uses it too).

The request fingerprint covers what changes the ANSWER (input identity and column mapping, prompt variant
and template text, model names, generation parameters). URLs, keys, weights, concurrency and rate limits
are deliberately not part of it, and neither is ``input.limit`` (raising it extends a run).
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.core.config import JobConfig
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
    input_fp: dict[str, Any], template_text: str, variant: str, models: list[str], generation: dict[str, Any]
) -> dict[str, Any]:
    return {
        "input": input_fp,
        "prompt": {"variant": variant, "template_sha256": hashlib.sha256(template_text.encode()).hexdigest()[:16]},
        "models": sorted(set(models)),
        "generation": dict(sorted(generation.items())),
    }



def make_fingerprint(cfg: JobConfig, source: Source, template: PromptTemplate) -> dict[str, Any]:
    return request_fingerprint(
        source.fingerprint(),
        template.text,
        cfg.prompt.variant if not cfg.prompt.template_file else "file",
        [ep.model for ep in cfg.endpoints],
        cfg.generation,
    )
