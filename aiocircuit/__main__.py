"""The ``aiocircuit`` command (also ``python -m aiocircuit``).

It exists to show the library working without writing any code, and to let an operator
see and steer circuits in a shared store:

- ``aiocircuit demo`` runs a breaker against a simulated flaky downstream (see
  :mod:`aiocircuit._demo`);
- ``status [NAME ...]``, ``open NAME`` (``force_open``), ``close NAME``
  (``force_closed``), ``reset NAME`` (``reset``) and ``create-table`` work on a DynamoDB
  table named by ``--dynamodb-table`` or ``$AIOCIRCUIT_DYNAMODB_TABLE`` (see
  :mod:`aiocircuit._cli_store`, which states their decisions).

Errors are reported in one line on stderr, so a mistyped option does not bury its own
message under a screen of usage text. Exit codes: 0 success, 1 the store failed or was
unreachable, 2 bad command-line input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

import anyio

from ._cli_store import (
    CommandLineError,
    StoreCommandError,
    add_store_commands,
    run_store_command,
)
from ._demo import Scenario, run_demo

PROG = "aiocircuit"

# Bounds that keep the demo meaningful: the breaker needs about 1.5 s after the outage to
# close again, and a single process cannot usefully run unbounded numbers of tasks.
MIN_SECONDS, MAX_SECONDS = 3.0, 120.0
MIN_TASKS, MAX_TASKS = 1, 5000


class _UsageError(Exception):
    """Bad command-line input; the message is the whole one-line explanation."""


class _ParserExit(Exception):
    """argparse finished on its own (``--help``); ``status`` is the exit code."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of exiting, so that :func:`main` returns
    an exit code (callable in-process) and prints usage errors as one line."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)


def _bounded(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text!r}")
        return value

    return parse


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="An async-native circuit breaker whose state a whole fleet shares.",
        epilog="Exit status: 0 success, 1 the store failed or was unreachable, 2 bad "
        "input. '%(prog)s COMMAND --help' describes each command.",
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a breaker against a simulated flaky downstream and print what it does",
        description=(
            "Run hundreds of tasks against a simulated downstream that fails for a while, "
            "then recovers; print each circuit transition as it happens and a summary. "
            "Real time, in-memory store, no network."
        ),
    )
    demo.add_argument(
        "--tasks",
        type=_bounded(int, MIN_TASKS, MAX_TASKS),
        default=300,
        metavar="N",
        help="concurrent tasks calling the downstream (default: %(default)s)",
    )
    demo.add_argument(
        "--seconds",
        type=_bounded(float, MIN_SECONDS, MAX_SECONDS),
        default=6.0,
        metavar="S",
        help="how long the load lasts; the downstream is down from S/6 to S/2 "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop to run on (default: %(default)s)",
    )
    add_store_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``aiocircuit`` command with ``argv`` (``sys.argv[1:]`` when ``None``) and
    return its exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _ParserExit as exc:
        return exc.status
    except _UsageError as exc:
        print(f"{PROG}: error: {exc} (see '{PROG} --help')", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    if args.command != "demo":
        return _run_store_command(args)
    if args.backend not in anyio.get_available_backends():
        print(
            f"{PROG}: error: the {args.backend} backend is not installed "
            f"(pip install {args.backend})",
            file=sys.stderr,
        )
        return 2
    scenario = Scenario.lasting(args.seconds, tasks=int(args.tasks))
    run_demo(scenario, backend=args.backend)
    return 0


def _run_store_command(args: argparse.Namespace) -> int:
    try:
        return run_store_command(args, dict(os.environ))
    except CommandLineError as exc:
        print(f"{PROG}: error: {exc} (see '{PROG} {args.command} --help')", file=sys.stderr)
        return 2
    except StoreCommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
