"""A run's spending budget: one permit shared by every endpoint (L2, stdlib only).

A request may be sent only when its *worst case* fits: what the run has spent (this session and the
run directory's earlier sessions), plus every request in flight at its worst case, plus this one at its
worst case must stay within ``budget.max_usd`` and ``budget.max_output_tokens``. A request's worst case
is its prompt (the engine's estimate times a safety factor, see :attr:`Budget.prompt_factor`) plus its
whole output budget (``max_tokens``) at the output price. So the run never sends a request that could take
spending past the budget, whatever the answers turn out to be.

* :meth:`Budget.try_reserve` takes a reservation (or None: no room now);
* :meth:`Budget.settle` replaces it by the real ``usage`` of the answer (an answer without usage counts
  at its worst case);
* :meth:`Budget.release` returns it when the attempt ended without an answer (an HTTP error, a dropped
  connection: nothing to pay);
* :meth:`Budget.reserve` (async) waits while requests in flight may still free room (their real cost is
  nearly always far below their reservation) and returns None only when nothing is in flight and the
  request still does not fit: the budget is reached.

The accounting is pure (no clock, no I/O): the unit tests drive it directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["INITIAL_PROMPT_FACTOR", "Budget", "Reservation", "earlier_spending"]

#: prompt tokens reserved per estimated prompt token until the first answer reports its real prompt size
INITIAL_PROMPT_FACTOR = 1.25
#: margin over the largest real/estimated prompt ratio seen so far
PROMPT_MARGIN = 1.1
_EPS = 1e-9  # float slack when comparing dollar sums


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one request in flight holds: its worst case."""

    prompt_est: int  # the engine's prompt-token estimate
    prompt_tokens: float  # prompt tokens reserved (estimate x factor)
    output_tokens: int  # its max_tokens
    usd: float  # the worst case in USD (0 without prices)


def earlier_spending(sessions: Iterable[Mapping[str, Any]], stage: str | None = None) -> tuple[int, int, int]:
    """(prompt tokens, output tokens, sessions without a report) of a run directory's earlier sessions,
    from the manifest's session entries. A session killed with ``kill -9`` wrote no report: its spending is
    unknown (the third figure says how many). ``stage``: an earlier stage of a two-stage run (its figures
    are in the report's ``extra.stages``); None: the run's last stage (the report's own figures)."""
    prompt = output = unknown = 0
    for s in sessions:
        rep = s.get("report")
        if not isinstance(rep, Mapping):
            unknown += 1
            continue
        if stage is not None:
            rep = ((rep.get("extra") or {}).get("stages") or {}).get(stage) or {}
        prompt += int(rep.get("prompt_tokens") or 0)
        output += int(rep.get("completion_tokens") or 0)
    return prompt, output, unknown


class _Ledger:
    """What a run has spent and reserved, whichever stage spent it."""

    def __init__(self, max_usd: float | None, max_output_tokens: int | None):
        self.max_usd = max_usd
        self.max_output_tokens = max_output_tokens
        self.usd_before = 0.0
        self.output_before = 0
        #: what this session's answers cost (real usage)
        self.session_usd = 0.0
        self.session_output = 0
        #: the worst cases of the requests in flight
        self.reserved_usd = 0.0
        self.reserved_output = 0
        self.in_flight = 0
        self.changed: asyncio.Event | None = None  # made on first wait (inside the running loop)


class Budget:
    """The run's spending limits and what is spent and reserved against them (a two-stage run: one view
    per stage, :meth:`for_stage`, each with its own prices)."""

    def __init__(
        self,
        *,
        default_max_tokens: int,
        max_usd: float | None = None,
        max_output_tokens: int | None = None,
        input_per_million: float = 0.0,
        output_per_million: float = 0.0,
        prompt_tokens_before: int = 0,
        output_tokens_before: int = 0,
        shared: Budget | None = None,
    ):
        """``shared``: another stage's budget of the same run; this one then spends from its totals (one
        ``max_usd`` for the whole run) at this stage's own prices and output budget (:meth:`for_stage`)."""
        self.default_max_tokens = default_max_tokens
        self.in_price = input_per_million / 1e6
        self.out_price = output_per_million / 1e6
        if shared is not None:
            self._ledger = shared._ledger
        else:
            self._ledger = _Ledger(max_usd, max_output_tokens)
        led = self._ledger
        led.usd_before += prompt_tokens_before * self.in_price + output_tokens_before * self.out_price
        led.output_before += output_tokens_before
        #: prompt tokens reserved per estimated one: starts cautious, then follows the answers' real sizes
        self.prompt_factor = INITIAL_PROMPT_FACTOR
        self._max_ratio: float | None = None

    def for_stage(self, *, default_max_tokens: int, input_per_million: float = 0.0, output_per_million: float = 0.0,
                  prompt_tokens_before: int = 0, output_tokens_before: int = 0) -> Budget:
        """The same run's budget as another stage spends it (its prices and max_tokens; shared totals)."""
        return Budget(default_max_tokens=default_max_tokens, input_per_million=input_per_million,
                      output_per_million=output_per_million, prompt_tokens_before=prompt_tokens_before,
                      output_tokens_before=output_tokens_before, shared=self)

    # the run's totals (shared by every stage's view)
    max_usd = property(lambda self: self._ledger.max_usd)
    max_output_tokens = property(lambda self: self._ledger.max_output_tokens)
    usd_before = property(lambda self: self._ledger.usd_before)
    output_before = property(lambda self: self._ledger.output_before)
    session_usd = property(lambda self: self._ledger.session_usd)
    session_output = property(lambda self: self._ledger.session_output)
    reserved_usd = property(lambda self: self._ledger.reserved_usd)
    reserved_output = property(lambda self: self._ledger.reserved_output)
    in_flight = property(lambda self: self._ledger.in_flight)

    @property
    def spent_usd(self) -> float:
        return self.usd_before + self.session_usd

    @property
    def spent_output(self) -> int:
        return self.output_before + self.session_output

    # ------------------------------------------------------------ the permit

    def worst_case(self, prompt_est: int, max_tokens: int | None) -> Reservation:
        out = max_tokens or self.default_max_tokens
        prompt = prompt_est * self.prompt_factor
        return Reservation(prompt_est, prompt, out, prompt * self.in_price + out * self.out_price)

    def fits(self, r: Reservation) -> bool:
        if self.max_usd is not None and self.spent_usd + self.reserved_usd + r.usd > self.max_usd + _EPS:
            return False
        return self.max_output_tokens is None or (
            self.spent_output + self.reserved_output + r.output_tokens <= self.max_output_tokens)

    def try_reserve(self, prompt_est: int, max_tokens: int | None) -> Reservation | None:
        """Reserve this request's worst case, or None when it does not fit now."""
        r = self.worst_case(prompt_est, max_tokens)
        if not self.fits(r):
            return None
        led = self._ledger
        led.reserved_usd += r.usd
        led.reserved_output += r.output_tokens
        led.in_flight += 1
        return r

    async def reserve(self, prompt_est: int, max_tokens: int | None) -> Reservation | None:
        """Reserve, waiting while requests in flight may free room; None when the budget is reached (the
        request does not fit although nothing is in flight)."""
        while True:
            r = self.try_reserve(prompt_est, max_tokens)
            if r is not None or self.in_flight == 0:
                return r
            led = self._ledger
            if led.changed is None:
                led.changed = asyncio.Event()
            led.changed.clear()
            await led.changed.wait()

    def settle(self, r: Reservation, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """The answer came: its real usage replaces the reservation (missing usage counts at the worst case)."""
        self._unreserve(r)
        prompt = r.prompt_tokens if prompt_tokens is None else prompt_tokens
        output = r.output_tokens if completion_tokens is None else completion_tokens
        self._ledger.session_usd += prompt * self.in_price + output * self.out_price
        self._ledger.session_output += output
        if prompt_tokens and r.prompt_est > 0:
            ratio = prompt_tokens / r.prompt_est
            self._max_ratio = ratio if self._max_ratio is None else max(self._max_ratio, ratio)
            self.prompt_factor = max(1.0, PROMPT_MARGIN * self._max_ratio)
        self._wake()

    def release(self, r: Reservation) -> None:
        """The attempt ended without an answer: nothing was spent."""
        self._unreserve(r)
        self._wake()

    def _unreserve(self, r: Reservation) -> None:
        led = self._ledger
        led.in_flight -= 1
        if led.in_flight <= 0:  # exact zero again (no float drift carried over)
            led.in_flight, led.reserved_usd, led.reserved_output = 0, 0.0, 0
        else:
            led.reserved_usd -= r.usd
            led.reserved_output -= r.output_tokens

    def _wake(self) -> None:
        if self._ledger.changed is not None:
            self._ledger.changed.set()

    # ------------------------------------------------------------ the message

    def _usd(self, x: float) -> str:
        digits = 2 if (self.max_usd or 0) >= 10 else 4
        return f"${x:,.{digits}f}"

    def reached_message(self, prompt_est: int, max_tokens: int | None) -> str:
        """One line: which limit, the figures, and how to go on."""
        r = self.worst_case(prompt_est, max_tokens)
        if self.max_usd is not None and self.spent_usd + self.reserved_usd + r.usd > self.max_usd + _EPS:
            key = "budget.max_usd"
            spent = f"{self._usd(self.spent_usd)} spent of {key} {self.max_usd:g}"
            before = f"{self._usd(self.usd_before)} of it in earlier sessions of this run; " if self.usd_before else ""
            need = f"the next request could cost up to {self._usd(r.usd)}"
        else:
            key = "budget.max_output_tokens"
            spent = f"{self.spent_output:,} output tokens spent of {key} {self.max_output_tokens}"
            before = f"{self.output_before:,} of them in earlier sessions of this run; " if self.output_before else ""
            need = f"the next request could take up to {r.output_tokens:,}"
        # reached only with nothing in flight: every request sent was within the budget and has ended
        return f"budget reached: {spent} ({before}{need}); raise it with --set {key}=... and run the same command to resume"
