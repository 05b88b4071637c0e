"""Synthetic UltraFeedback-shaped rows for demos, tests and benchmarks (no external data).

Rows follow the layout of ``ContextualAI/ultrafeedback_clair_32k``::

    prompt    str                          the instruction (the CLAIR ``task``)
    chosen    [{role: user}, {role: assistant}]   a slightly improved answer
    rejected  [{role: user}, {role: assistant}]   the student answer (``student_solution``)
    rational  str                          why ``chosen`` is better (sic, the dataset's spelling)

Instructions are composed from template parts and word lists (coding, math word problems, writing,
advice, factual Q&A, explanations, comparisons, summaries). Lengths follow log-normal targets:
task ~420 chars median (50..2000), student answer ~1,600 chars median (200..5000). Each student
answer carries one to three realistic flaws (a typo from a list of common misspellings, a rambling
filler sentence, a wrong fact / arithmetic slip / wrong complexity claim) which ``chosen`` fixes.

Generation is deterministic for a given ``seed`` and independent of chunking: rows are produced in
blocks of ``_BLOCK`` rows, each block from its own RNG seeded by (seed, block), so
``generate_rows(n, seed, start=k)`` yields exactly the rows ``k..k+n-1`` of the full sequence.
Generation uses only ``random`` (stdlib); writing uses ``pyarrow`` (and ``orjson`` for JSON).

Modules, one job each: ``words`` and ``domains`` (the word lists), ``text`` (picks, walks, paragraphs),
``builders`` (one per kind of row), ``rows`` (``generate_rows``) and ``files`` (``write_sample``,
``DEMO_SAMPLE``). This package re-exports their public names.
"""

from engine.tools.synthetic.files import DEMO_SAMPLE, FORMATS, write_sample
from engine.tools.synthetic.rows import generate_rows

__all__ = ["DEMO_SAMPLE", "FORMATS", "generate_rows", "write_sample"]
