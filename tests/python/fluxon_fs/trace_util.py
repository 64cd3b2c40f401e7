"""Trace of a file-semantics scenario: every step's result or exception (type, errno), with
the base directory replaced by ``<base>`` so a local run and a mount run compare equal."""

from __future__ import annotations

import os
import stat as _stat
from typing import Any, Callable


class Trace:
    def __init__(self, base: str) -> None:
        self.base = base
        self.events: list = []

    def _norm(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(self.base, "<base>")
        if isinstance(value, os.stat_result):
            return ("stat", _stat.S_IFMT(value.st_mode), value.st_size)
        if isinstance(value, (list, tuple)):
            return type(value)(self._norm(v) for v in value)
        if isinstance(value, dict):
            return {self._norm(k): self._norm(v) for k, v in value.items()}
        return value

    def do(self, label: str, fn: Callable[[], Any]) -> Any:
        label = self._norm(label)
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - the exception is the result
            self.events.append((label, "raise", type(e).__name__,
                                getattr(e, "errno", None)))
            return e
        self.events.append((label, "ok", self._norm(value)))
        return value

    def note(self, label: str, value: Any) -> None:
        label = self._norm(label)
        self.events.append((label, "ok", self._norm(value)))

    def result(self, label: str):
        for ev in self.events:
            if ev[0] == label:
                return ev
        raise KeyError(label)

    def diff(self, other: "Trace") -> str:
        lines = []
        for a, b in zip(self.events, other.events):
            if a != b:
                lines.append(f"mount={a!r}\nlocal={b!r}")
        if len(self.events) != len(other.events):
            lines.append(f"lengths differ: mount={len(self.events)} local={len(other.events)}")
        return "\n".join(lines[:10])
