"""The dataset card (the hub's README.md) of an export: YAML metadata and markdown, a pure function (L4).

:func:`dataset_card` turns a run's manifest and an export's counts into the text pushed beside the
data: what the pairs are, how they were selected and made (teacher models, prompt variant, generation
settings, input name; only from the manifest's already-redacted config, never endpoint URLs, headers
or local directories), their minimality figures, how to train on them and the citation. What depends
on the export format (the layout paragraph and the "Training with APO" recipe) comes from one function
each, :func:`layout_text` and :func:`training_recipe`, so a per-format change is one edit there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.commands.rundata import num

if TYPE_CHECKING:
    from engine.commands.export import ExportResult

__all__ = ["card_metadata", "dataset_card", "layout_text", "training_recipe"]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def card_metadata(res: ExportResult) -> dict[str, Any]:
    return {
        "tags": ["clair", "preference", "dpo", "apo", "synthetic", "clair-engine"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(res.rows_exported)],
    }


def layout_text(fmt: str) -> str:
    """The card's description of an export format's columns."""
    if fmt == "trl":
        return (
            "TRL's conversational explicit-prompt preference format: `prompt` = `[{role: user, content: TASK}]`, "
            "`chosen` = `[{role: assistant, content: REVISION}]`, `rejected` = `[{role: assistant, content: "
            "ORIGINAL}]`, plus `rational` (the teacher's reasoning) and `row_id`."
        )
    return (
        "the layout of `ContextualAI/ultrafeedback_clair_32k`: `prompt` (str), `chosen` and `rejected` as "
        "full conversations `[user turn, assistant turn]` (chosen = revision, rejected = original), "
        "and `rational` (the teacher's reasoning)."
    )


def training_recipe(fmt: str, repo_id: str | None) -> str:
    """The card's "Training with APO" section for an export in format ``fmt``: the TRL recipe that works for
    that layout. ``trl`` is TRL's conversational explicit-prompt form, taken as it is. ``ultrafeedback`` keeps
    the whole conversation in ``chosen``/``rejected`` beside a string ``prompt``: TRL's DPOTrainer (1.x) then
    needs the ``prompt`` column removed (it takes the prompt from the shared turns: implicit-prompt form).
    """
    name = repo_id or "ORG/NAME"
    load = f'train = load_dataset("{name}", split="train")'
    if fmt == "ultrafeedback":
        load += '\ntrain = train.remove_columns(["prompt"])  # chosen/rejected hold the whole conversation'
    return f"""## Training with APO

CLAIR pairs are meant for Anchored Preference Optimization (`apo_zero`: the revisions are better than
the model's own answers). With TRL:

```python
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer

{load}
args = DPOConfig(output_dir="clair-apo", loss_type="apo_zero", beta=0.1, learning_rate=2e-7)
trainer = DPOTrainer(model="YOUR/BASE-MODEL", args=args, train_dataset=train)
trainer.train()
```"""


def dataset_card(manifest: dict[str, Any], res: ExportResult, repo_id: str | None = None) -> str:
    """The README.md of a pushed export (YAML metadata + markdown): a pure function of its inputs.

    Uses only the manifest's (already redacted) config: models, prompt, generation settings and the
    input's name — never endpoint URLs, headers or local directories.
    """
    import yaml

    cfg = manifest.get("config") or {}
    fp = manifest.get("fingerprint") or {}
    inp = cfg.get("input") or {}
    models = sorted({e.get("model") for e in cfg.get("endpoints") or [] if e.get("model")}) or fp.get("models") or []
    prompt = cfg.get("prompt") or {}
    variant = "custom template file" if prompt.get("template_file") else prompt.get("variant", "distilabel")
    if inp.get("dataset"):
        source = f"`{inp['dataset']}` (split `{inp.get('split', 'train')}`)"
    elif inp.get("path"):
        source = f"local file(s) `{Path(str(inp['path'])).name}`"
    else:
        source = "unknown"
    cols = inp.get("columns") or {}
    gen = cfg.get("generation") or {}
    name = repo_id or "CLAIR preference pairs"
    o = res.options
    filters = [
        "status `ok` only" if not o.get("include_flagged") else "status `ok`, `truncated` and `worsened` (flagged rows kept)",
        "identical revisions removed" if not o.get("keep_identical") else "identical revisions kept",
    ]
    if o.get("max_distance") is not None:
        filters.append(f"Levenshtein distance <= {o['max_distance']}")
    if o.get("min_jaccard") is not None:
        filters.append(f"token Jaccard >= {o['min_jaccard']}")
    left = ", ".join(f"{k} {v}" for k, v in res.left_out.items() if v) or "none"

    def row(m: str) -> str:
        d = res.metrics.get(m) or {}
        return f"| {m} | " + " | ".join(num(d.get(k), m == "levenshtein") for k in ("mean", "p10", "p50", "p90")) + " |"

    meta = yaml.safe_dump(card_metadata(res), sort_keys=False).strip()
    return f"""---
{meta}
---

# {name}

CLAIR preference pairs (Contrastive Learning from AI Revisions; D'Oosterlinck et al., 2024,
[arXiv:2408.06266](https://arxiv.org/abs/2408.06266)) made with clair-engine: a teacher model
minimally revised each answer, and each pair is (chosen = revision, rejected = original answer).

## Contents

- Pairs: **{res.rows_exported}** ({res.format} layout)
- Selection: {"; ".join(filters)}
- Left out: {left}; failed requests (never exported): {res.failed}
- Layout: {layout_text(res.format)}

## How it was made

- Teacher model(s): {", ".join(f"`{m}`" for m in models) or "unknown"}
- Prompt: CLAIR `{variant}` variant
- Generation: {", ".join(f"{k}={v}" for k, v in sorted(gen.items())) or "defaults"}
- Input: {source}; task column `{cols.get("task", "prompt")}`, answer column `{cols.get("student_solution", "rejected[1].content")}`

## Minimality of the pairs

| metric | mean | p10 | p50 | p90 |
|---|---|---|---|---|
{row("jaccard")}
{row("levenshtein")}
{row("length_ratio")}

`jaccard`: whitespace-token set similarity of revision and original; `levenshtein`: character edit
distance; `length_ratio`: revision length / original length. The paper reports median Jaccard ~0.27 and
length ratio ~1.04 for GPT-4-turbo revisions of UltraFeedback answers.

{training_recipe(res.format, repo_id)}

## Citation

```bibtex
@article{{doosterlinck2024anchored,
  title={{Anchored Preference Optimization and Contrastive Revisions: Addressing Underspecification in Alignment}},
  author={{D'Oosterlinck, Karel and Xu, Winnie and Develder, Chris and Demeester, Thomas and Singh, Amanpreet and Potts, Christopher and Kiela, Douwe and Mehri, Shikib}},
  journal={{arXiv preprint arXiv:2408.06266}},
  year={{2024}}
}}
```
"""
