"""Shared fixtures: a mock endpoint process, sample inputs, configs and a `clair` runner."""

from __future__ import annotations

from typing import Any

import pytest

from engine.tools.mockserver_proc import MockProcess


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def mock() -> Any:
    """A healthy mock endpoint (5 ms latency) shared by the session; reset its counters per use."""
    with MockProcess(["--latency-ms", "5"]) as m:
        yield m


