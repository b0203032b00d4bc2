"""Figures with their targets: one table for the terminal, one markdown section for results.md."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# `make bench` names the file every script appends its section to.
RESULTS_ENV = "BENCH_RESULTS"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""  # e.g. "<= 1.10"; empty for context figures
    passed: bool | None = None  # None: no target

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "MISS")

    def shown(self) -> str:
        digits = 0 if abs(self.value) >= 100 else 2 if abs(self.value) >= 1 else 3
        return f"{self.value:.{digits}f}"


def at_most(name: str, value: float, unit: str, limit: float) -> Figure:
    return Figure(name, value, unit, f"<= {limit:g}", value <= limit)


def below(name: str, value: float, unit: str, limit: float) -> Figure:
    return Figure(name, value, unit, f"< {limit:g}", value < limit)


def at_least(name: str, value: float, unit: str, limit: float) -> Figure:
    return Figure(name, value, unit, f">= {limit:g}", value >= limit)


def context(name: str, value: float, unit: str) -> Figure:
    return Figure(name, value, unit)


def host() -> str:
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, {memory_kib / 1024**2:.0f} GiB, load average {load:.2f}"


def print_table(figures: Sequence[Figure]) -> None:
    width = max(len(f.name) for f in figures) + 2
    print(f"{'figure':<{width}}{'value':>12}  {'unit':<8}{'target':>10}  verdict")
    for f in figures:
        print(f"{f.name:<{width}}{f.shown():>12}  {f.unit:<8}{f.target:>10}  {f.verdict}")


def markdown(title: str, notes: Sequence[str], figures: Sequence[Figure]) -> str:
    lines = [f"## {title}", "", *(f"- {note}" for note in notes), ""]
    lines += ["| figure | value | unit | target | verdict |", "| --- | ---: | --- | --- | --- |"]
    lines += [f"| {f.name} | {f.shown()} | {f.unit} | {f.target} | {f.verdict} |" for f in figures]
    return "\n".join(lines) + "\n\n"


def report(title: str, notes: Sequence[str], figures: Sequence[Figure], results: str | None) -> None:
    """Print the table; append the markdown section to `results` (default: $BENCH_RESULTS)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes = [*notes, f"host: {host()}; {stamp}"]
    print()
    print(title)
    for note in notes:
        print(f"  {note}")
    print()
    print_table(figures)
    target = results or os.environ.get(RESULTS_ENV)
    if target:
        with open(target, "a") as out:
            out.write(markdown(title, notes, figures))
