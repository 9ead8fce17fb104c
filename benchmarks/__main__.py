"""``python -m benchmarks``: run every benchmark scenario in turn, or one of them.

    python -m benchmarks [--quick] [...]            every scenario (what ``nox -s bench`` runs)
    python -m benchmarks closed-path [options]      per-call overhead of a closed circuit
    python -m benchmarks store-traffic [options]    DynamoDB requests per 100,000 healthy calls

One entry point, so that ``nox -s bench`` and CI need not know which modules hold the
benchmarks. Run with no scenario, it accepts the closed-path options it always accepted
(they go to that scenario) and ``--quick`` goes to every scenario. The exit status is 0 when
every scenario ran, whatever it measured: a missed target is printed, never raised.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from . import closed_path, store_traffic

SCENARIOS: dict[str, Callable[[list[str] | None], int]] = {
    "closed-path": closed_path.main,
    "store-traffic": store_traffic.main,
}


def _parse_all_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        usage="python -m benchmarks [{all,closed-path,store-traffic}] [options]",
        description="Run every benchmark scenario in turn (or one: name it first; "
        "`python -m benchmarks SCENARIO --help` lists its options).",
        epilog="scenarios: closed-path: per-call overhead of a closed, cached circuit, as "
        "ratios to hand-written floors, on the in-memory and the DynamoDB store; "
        "store-traffic: DynamoDB requests per 100,000 healthy calls paced over real time, "
        "with one task and with 1,000 tasks sharing one breaker.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the short mode of every scenario (under 60 s)"
    )
    parser.add_argument("--no-peers", action="store_true", help="closed-path: skip the peers")
    parser.add_argument(
        "--no-dynamodb",
        action="store_true",
        help="skip what needs DynamoDB (moto): closed-path's DynamoDB variants, store-traffic",
    )
    parser.add_argument("--seed", type=int, default=None, help="closed-path: round order seed")
    parser.add_argument("--output", type=Path, default=None, help="closed-path: its JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario named first in ``argv``, or all of them."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SCENARIOS:
        return SCENARIOS[argv[0]](argv[1:])
    if argv and argv[0] == "all":
        argv = argv[1:]
    args = _parse_all_args(argv)
    quick = ["--quick"] if args.quick else []
    closed_path_args = list(quick)
    if args.no_peers:
        closed_path_args.append("--no-peers")
    if args.no_dynamodb:
        closed_path_args.append("--no-dynamodb")
    if args.seed is not None:
        closed_path_args += ["--seed", str(args.seed)]
    if args.output is not None:
        closed_path_args += ["--output", str(args.output)]
    runs: list[tuple[str, list[str]]] = [("closed-path", closed_path_args)]
    if not args.no_dynamodb:
        runs.append(("store-traffic", list(quick)))

    statuses = {}
    for number, (name, scenario_args) in enumerate(runs):
        if number:
            print()
        print(f"=== {name} ===", flush=True)
        statuses[name] = SCENARIOS[name](scenario_args)
    failed = [name for name, status in statuses.items() if status]
    if failed:
        print(f"\nnot run to the end: {', '.join(failed)}", file=sys.stderr)
    return max(statuses.values())


if __name__ == "__main__":
    raise SystemExit(main())
