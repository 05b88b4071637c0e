"""A virtual-time event loop for tests: no test waits on the wall clock.

``FakeClockLoop`` is a normal selector event loop whose ``time()`` is virtual. Whenever the loop
has nothing ready to run and would block in ``select()`` until its next timer, the virtual clock
jumps straight to that timer instead (like trio's ``MockClock(autojump_threshold=0)``). Real I/O
and ``call_soon_threadsafe`` still work: the selector is always polled (with a zero timeout), and
when no timer is pending at all the loop blocks for real, as asyncio would.

Usage::

    from fakeclock import FakeClockLoop, run     # tests/ is on sys.path, like `helpers`

    def test_something():
        async def main():
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.sleep(3600)              # returns at once in wall time
            assert loop.time() - t0 == pytest.approx(3600)
        run(main())                                # or run(main(), start=1000.0)

Plain (sync) test functions call ``run``; they need no pytest-asyncio marker. For code that reads
``time.monotonic`` directly (asyncio-throttle), monkeypatch it to ``loop.time`` (see
``patch_monotonic``). ``loop.advance(dt)`` moves the clock forward by hand, e.g. to test code
that only reads the clock.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, TypeVar

T = TypeVar("T")


class _AutojumpSelector(selectors.BaseSelector):
    """Wraps a real selector; a blocking select with a timeout advances virtual time instead."""

    def __init__(self, inner: selectors.BaseSelector, loop: FakeClockLoop):
        self._inner = inner
        self._loop = loop

    def register(self, fileobj, events, data=None):  # type: ignore[no-untyped-def]
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj):  # type: ignore[no-untyped-def]
        return self._inner.unregister(fileobj)

    def modify(self, fileobj, events, data=None):  # type: ignore[no-untyped-def]
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout=None):  # type: ignore[no-untyped-def]
        if timeout is None:  # no timer pending at all: block for real (threads, I/O)
            return self._inner.select(None)
        ready = self._inner.select(0)
        if not ready and timeout > 0:
            self._loop.advance(timeout)
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj):  # type: ignore[no-untyped-def]
        return self._inner.get_key(fileobj)

    def get_map(self):  # type: ignore[no-untyped-def]
        return self._inner.get_map()


class FakeClockLoop(asyncio.SelectorEventLoop):
    """Selector event loop on a virtual clock that auto-jumps to the next timer when idle."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        super().__init__(_AutojumpSelector(selectors.DefaultSelector(), self))  # type: ignore[arg-type]
        self.jumps = 0  #: how many times the clock jumped (handy to assert "no polling")

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (timers that became due run on the next loop iteration)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._virtual_now += seconds
        self.jumps += 1


def run(coro: Coroutine[Any, Any, T], *, start: float = 0.0) -> T:
    """Run ``coro`` to completion on a fresh ``FakeClockLoop``; closes the loop afterwards."""
    with asyncio.Runner(loop_factory=lambda: FakeClockLoop(start)) as runner:
        return runner.run(coro)


class ManualClock:
    """A plain callable clock for pure state machines: ``clock()`` returns ``clock.now``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def patch_monotonic(monkeypatch: Any, module: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Make ``module.time.monotonic`` read ``loop.time`` without touching the global ``time`` module."""
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=loop.time))
