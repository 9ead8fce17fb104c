"""``python -m benchmarks``: run every benchmark scenario in turn, or one of them.

    python -m benchmarks [--quick] [--only A,B] [--docs]   every scenario (``nox -s bench``)
    python -m benchmarks SCENARIO [options]                one scenario, with its own options

Each scenario prints its table, writes ``benchmarks/results/<scenario>.json`` and a chart
``<scenario>.png`` beside it. Run together, the scenarios' headline numbers (each JSON's
``headline`` list) are gathered into one summary table and ``results/summary.json``;
``--docs`` also copies the charts to ``docs/assets/benchmarks/``, where the documentation
and the README show them. The exit status is 0 when every scenario ran to the end,
whatever it measured: a missed target is printed, never raised.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import _report

# Scenario name -> module, in the order they run. Imported only when run, so that one
# scenario's missing optional dependency cannot stop the others.
SCENARIOS: dict[str, str] = {
    "closed-path": "closed_path",  # 1. overhead of a closed circuit per call
    "http-load": "http_load",  # 2. throughput against a real HTTP server
    "stampede": "stampede",  # 3. calls reaching the downstream at recovery, 50 envs
    "store-traffic": "store_traffic",  # 4. store requests per 100,000 healthy calls
    "outage": "outage",  # 5. calls per second reaching a failing downstream
    "scaling": "scaling",  # 6. overhead against circuits and tasks
}
DOCS_ASSETS = Path(__file__).resolve().parent.parent / "docs" / "assets" / "benchmarks"


def _scenario_main(name: str) -> Callable[[list[str] | None], int]:
    module = importlib.import_module(f"{__package__}.{SCENARIOS[name]}")
    entry: Callable[[list[str] | None], int] = module.main
    return entry


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; expected some of {', '.join(SCENARIOS)}"
        )
    return names


def _parse_all_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        usage="python -m benchmarks [SCENARIO [options] | [--quick] [--only A,B] [--docs]]",
        description="Run every benchmark scenario in turn (or one: name it first; "
        "`python -m benchmarks SCENARIO --help` lists its options).",
        epilog=f"scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every scenario's short mode (CI's smoke test; under 2 minutes in all)",
    )
    parser.add_argument(
        "--only", type=_names, default=list(SCENARIOS), help="comma-separated scenarios to run"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help=f"copy the charts to {DOCS_ASSETS.relative_to(DOCS_ASSETS.parents[2])}/",
    )
    return parser.parse_args(argv)


def _summary(names: list[str]) -> tuple[str, list[dict[str, object]]]:
    """The headlines of ``names``, one line each under its scenario (a table would be as
    wide as the longest value), and the same as JSON."""
    lines, document = [], []
    for name in names:
        headlines = _report.read_headlines(name)
        lines.append(name if headlines else f"{name}: no results")
        for headline in headlines:
            target = f" (target {headline.target})" if headline.target else ""
            met = _report.verdict(headline.met)
            lines.append(f"  {met:<6}  {headline.what}: {headline.value}{target}")
            document.append({"scenario": name, **headline.as_json()})
    return "\n".join(lines), document


def main(argv: list[str] | None = None) -> int:
    """Run the scenario named first in ``argv``, or all of them."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SCENARIOS:
        return _scenario_main(argv[0])(argv[1:])
    if argv and argv[0] == "all":
        argv = argv[1:]
    args = _parse_all_args(argv)
    options = ["--quick"] if args.quick else []

    started = time.monotonic()
    statuses: dict[str, int] = {}
    for number, name in enumerate(args.only):
        if number:
            print()
        print(f"=== {name} ({number + 1}/{len(args.only)}) ===", flush=True)
        # A scenario that fails must not leave an older run's headlines in the summary.
        (_report.RESULTS_DIR / f"{name}.json").unlink(missing_ok=True)
        try:
            statuses[name] = _scenario_main(name)(list(options))
        except Exception as exc:  # one broken scenario must not hide the others
            print(f"{name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            statuses[name] = 1

    table, document = _summary(args.only)
    elapsed = time.monotonic() - started
    print(f"\n=== summary ({'quick' if args.quick else 'full'} mode, {elapsed:.0f} s) ===")
    print(table)
    _report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    summary = {
        "mode": "quick" if args.quick else "full",
        "elapsed_seconds": round(elapsed, 1),
        "environment": _report.environment(),
        "statuses": statuses,
        "headline": document,
    }
    (_report.RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.docs:
        DOCS_ASSETS.mkdir(parents=True, exist_ok=True)
        for name in args.only:
            chart = _report.RESULTS_DIR / f"{name}.png"
            if chart.exists():
                shutil.copy2(chart, DOCS_ASSETS / chart.name)
                print(f"copied {chart.name} to {DOCS_ASSETS}")
    failed = [name for name, status in statuses.items() if status]
    if failed:
        print(f"\nnot run to the end: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
