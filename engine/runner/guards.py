"""The quality guard: stop a run whose teacher answers are mostly unusable, before the night is paid for (L4).

It watches the records as the recorder builds them and counts, among this session's rows that asked the
teacher (rows reused from earlier runs and rows refused for their input are not counted):

* ``no_revision``: failure rows, an answer that could not be parsed (``no_marker``, ``empty_revision``, ...)
  or no answer after the retries (``timeout``, ``server_error``, ...). Input failures (``invalid_input``,
  ``prompt_too_long``, ``context_too_long``) are the input's fault, not the teacher's: not counted; nor are
  a two-stage run's rows whose student answer failed (``generate_failed``, ``student_truncated``, ...).
* ``identical``: revisions equal to the student's answer after whitespace normalisation.
* ``worsened``: rows the teacher marked as worsened.

Once ``guard.min_rows`` rows are counted, every new row re-checks the three shares against their
thresholds (``guard.max_*``; null turns one off); the first one past its threshold trips the guard:
``on_trip`` gets a :class:`QualityGuardTripped` whose one-line message names the rate, the threshold and
three example row ids. The cost per row is a few integer operations plus the identical test (skipped when
``guard.max_identical`` is null): ~5 us for a 1.8 KB answer, under 1% of the engine's CPU per row.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.core.config import GuardConfig
from engine.core.errors import QualityGuardTripped
from engine.records import WORSENED

__all__ = ["INPUT_KINDS", "QualityGuard", "is_identical"]

#: failure kinds caused by the input row itself (or, in a two-stage run, by its student answer: the teacher
#: was never asked), not by the teacher: the guard does not count them
INPUT_KINDS = frozenset({"invalid_input", "prompt_too_long", "context_too_long",
                         "generate_failed", "student_truncated", "student_empty"})
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
_EXAMPLES = 3


def is_identical(revision: str, original: str) -> bool:
    """Is the revision the original, up to whitespace (runs of whitespace collapsed, ends stripped)?

    Lengths that differ by more than ~12% mean "not identical" (whitespace alone rarely accounts for that);
    for ASCII texts, the texts without their whitespace are compared in C first (~5 us for two 1.8 KB
    texts); only when those match (or for non-ASCII text) are the word sequences compared."""
    la, lb = len(revision), len(original)
    if la == lb and revision == original:
        return True
    if abs(la - lb) > max(8, max(la, lb) >> 3):
        return False
    if revision.isascii() and original.isascii():  # O(1) in CPython
        a = revision.encode("ascii").translate(None, _ASCII_SPACE)
        if a != original.encode("ascii").translate(None, _ASCII_SPACE):
            return False
    return revision.split() == original.split()


class _Check:
    """One share and its threshold: how many rows, and the first example row ids."""

    __slots__ = ("key", "what", "threshold", "count", "examples")

    def __init__(self, key: str, what: str, threshold: float | None):
        self.key, self.what, self.threshold = key, what, threshold
        self.count = 0
        self.examples: list[Any] = []

    def add(self, row_id: Any) -> None:
        self.count += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(row_id)


class QualityGuard:
    """Counts this session's rows as they are recorded; trips once a share passes its threshold."""

    def __init__(self, cfg: GuardConfig, *, run_dir: str,
                 on_trip: Callable[[QualityGuardTripped], None] | None = None):
        self.min_rows = cfg.min_rows
        self.run_dir = run_dir
        self.on_trip = on_trip
        self.rows = 0
        self.no_revision = _Check("max_no_revision", "have no usable revision", cfg.max_no_revision)
        self.identical = _Check("max_identical", "got a revision identical to the student's answer",
                                cfg.max_identical)
        self.worsened = _Check("max_worsened", "were marked worsened by the teacher", cfg.max_worsened)
        self.checks = [c for c in (self.no_revision, self.identical, self.worsened) if c.threshold is not None]
        self._identical = cfg.max_identical is not None
        self.failure_kinds: Counter[str] = Counter()
        self.tripped: QualityGuardTripped | None = None

    @property
    def active(self) -> bool:
        return bool(self.checks)

    def observe(self, rec: dict[str, Any]) -> None:
        """One recorded row (a data or failure record, as ``engine.records`` builds it)."""
        if self.tripped is not None or rec.get("reused_from") is not None:
            return
        kind = rec.get("error_kind")
        if kind is not None:
            if kind in INPUT_KINDS:
                return
            self.no_revision.add(rec["row_id"])
            self.failure_kinds[kind] += 1
        else:
            if rec.get("status") == WORSENED:
                self.worsened.add(rec["row_id"])
            if self._identical and is_identical(rec["revision"], rec["student_solution"]):
                self.identical.add(rec["row_id"])
        self.rows += 1
        if self.rows >= self.min_rows:
            self._check()

    def _check(self) -> None:
        for c in self.checks:
            assert c.threshold is not None
            if c.count > c.threshold * self.rows:
                self.tripped = QualityGuardTripped(self.message(c))
                if self.on_trip is not None:
                    self.on_trip(self.tripped)
                return

    def message(self, c: _Check) -> str:
        assert c.threshold is not None
        ids = ", ".join(str(i) for i in c.examples)
        if c is self.no_revision:
            kinds = ", ".join(f"{k} {n}" for k, n in self.failure_kinds.most_common(3))
            what = f"{c.what} ({kinds})"
            look = f"--status {self.failure_kinds.most_common(1)[0][0]}"
        elif c is self.worsened:
            what, look = c.what, "--status worsened"
        else:
            what, look = c.what, f"--row-id {c.examples[0]}"
        return (f"quality guard: {c.count / self.rows:.0%} of this session's {self.rows} rows ({c.count}) {what}, "
                f"above guard.{c.key} {c.threshold:.0%} (e.g. rows {ids}); look at them with "
                f"`clair show {shlex.quote(self.run_dir)} {look}`, fix the prompt, the model or the endpoint, or relax it with "
                f"--set guard.{c.key}=... (null turns it off) and run the same command to resume")
