"""What every scenario reports through: progress bar, terminal table, JSON and charts.

Each scenario module has ``main(argv) -> int`` and writes, under ``benchmarks/results/``,
``<scenario>.json`` (made by :func:`write_json`: the scenario's own payload, plus the
environment it ran in and a ``headline`` list that ``python -m benchmarks`` gathers into
its summary) and ``<scenario>.png`` (through :func:`save_chart`), and prints a table
(:func:`table`). A peer that cannot run a scenario stays in the table and the JSON as
``n/a`` with its reason (:data:`NA`, :func:`na`); it is never dropped.

matplotlib is imported only when a chart is drawn, so that a run without it still
produces the tables and the JSON and says why the charts are missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NA = "n/a"

# Every breaker the benchmarks compare, by its PyPI distribution, in report order.
PEERS = ("aws-lambda-powertools", "purgatory", "aiobreaker", "pybreaker", "circuitbreaker")
# One colour per breaker across every chart, so a reader learns them once.
COLOURS = {
    "aiocircuit": "#1f77b4",
    "aws-lambda-powertools": "#ff7f0e",
    "purgatory": "#2ca02c",
    "aiobreaker": "#d62728",
    "pybreaker": "#9467bd",
    "circuitbreaker": "#8c564b",
    "no breaker": "#7f7f7f",
}


def na(reason: str) -> dict[str, str]:
    """A JSON cell for a measurement a peer cannot make: ``{"n/a": reason}``."""
    return {NA: reason}


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(*distributions: str) -> str | None:
    """Why a measurement needing ``distributions`` cannot run: ``None`` if all are
    installed, else ``"needs X (pip install X)"``."""
    absent = [name for name in distributions if version(name) is None]
    if not absent:
        return None
    return f"needs {', '.join(absent)} (pip install {' '.join(absent)})"


def environment() -> dict[str, Any]:
    """Where and with what a result was measured: enough to tell two runs apart."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {
            name: version(name)
            for name in ("aiocircuit", *PEERS, "anyio", "httpx", "aiohttp", "aioboto3", "moto")
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@dataclass(frozen=True, slots=True)
class Headline:
    """One line of the summary: what was measured, its value, its target, whether met
    (``None``: no target, or not measured)."""

    what: str
    value: str
    target: str = ""
    met: bool | None = None

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "value": self.value, "target": self.target, "met": self.met}


def verdict(met: bool | None) -> str:
    """``met`` / ``MISSED`` / ``-`` for a headline's last column."""
    return "-" if met is None else ("met" if met else "MISSED")


def write_json(
    scenario: str,
    payload: dict[str, Any],
    headlines: Iterable[Headline],
    path: Path | None = None,
) -> Path:
    """Write ``payload`` with the environment and headlines to ``<scenario>.json``."""
    path = path or RESULTS_DIR / f"{scenario}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "scenario": scenario,
        "environment": environment(),
        "headline": [h.as_json() for h in headlines],
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_headlines(scenario: str) -> list[Headline]:
    """The headlines a scenario wrote in its JSON (none if it wrote no JSON)."""
    path = RESULTS_DIR / f"{scenario}.json"
    if not path.exists():
        return []
    document = json.loads(path.read_text())
    return [Headline(**h) for h in document.get("headline", [])]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others
    right-aligned; cells are ``str()``-ed, ``None`` shows as ``n/a``."""
    cells = [[NA if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} headers")
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])


class Progress:
    """A progress bar on stderr while a scenario runs: redrawn in place on a terminal,
    a line per quarter elsewhere (CI logs). Use as a context manager; ``advance()`` after
    each step."""

    WIDTH = 30

    def __init__(self, title: str, total: int, stream: TextIO | None = None) -> None:
        if total < 1:
            raise ValueError(f"total must be at least 1, got {total}")
        self.title = title
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._started = time.monotonic()
        self._last_quarter = -1

    def __enter__(self) -> Progress:
        self._draw("")
        return self

    def advance(self, steps: int = 1, detail: str = "") -> None:
        self.done = min(self.total, self.done + steps)
        self._draw(detail)

    def _draw(self, detail: str) -> None:
        elapsed = time.monotonic() - self._started
        fraction = self.done / self.total
        if self._tty:
            filled = round(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            columns = shutil.get_terminal_size((100, 20)).columns
            text = f"{self.title} [{bar}] {self.done}/{self.total} {elapsed:4.0f}s {detail}"
            self._stream.write("\r" + text[: columns - 1].ljust(columns - 1))
        else:
            quarter = int(fraction * 4)
            if quarter == self._last_quarter:
                return
            self._last_quarter = quarter
            self._stream.write(
                f"{self.title}: {self.done}/{self.total} ({elapsed:.0f} s) {detail}\n"
            )
        self._stream.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tty:
            self._stream.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1))
            self._stream.write("\r")
            self._stream.flush()


def charts_unavailable() -> str | None:
    """Why charts cannot be drawn, or ``None`` when matplotlib is installed."""
    if importlib.util.find_spec("matplotlib") is None:
        return "needs matplotlib (pip install matplotlib)"
    return None


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9})
    return plt


def save_chart(figure: Any, scenario: str, suffix: str = "") -> Path:
    """Save ``figure`` as ``<scenario><suffix>.png`` under the results folder and close it."""
    path = RESULTS_DIR / f"{scenario}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    pyplot().close(figure)
    return path


def colour(breaker: str) -> str:
    """The chart colour of ``breaker`` (a peer's distribution name, ``aiocircuit`` or
    ``no breaker``); a neutral one for anything else."""
    for name, value in COLOURS.items():
        if breaker.startswith(name):
            return value
    return "#17becf"
