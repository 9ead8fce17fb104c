"""The store commands of the ``aiocircuit`` CLI: look at and steer circuits in a shared store.

::

    aiocircuit status [NAME ...]   read circuits from the store (all of them: a Scan)
    aiocircuit open NAME           force_open(): every call rejected, fleet-wide, until reset
    aiocircuit close NAME          force_closed(): every call admitted, never trips, until reset
    aiocircuit reset NAME          reset(): an ordinary CLOSED circuit with no history
    aiocircuit create-table        a table for circuit state (on-demand billing, TTL)

Why they exist: an operator in an incident wants to see what the fleet sees, and to hold a
circuit open (or closed) without a deploy. Every command goes through the public
:class:`~aiocircuit.CircuitBreaker` API (``info()``, ``force_open()``, ``force_closed()``,
``reset()``), so the CLI cannot disagree with the library about what a record means.

Decisions, each also stated in the ``--help`` text:

- The store is DynamoDB, named by ``--dynamodb-table`` (default: the
  ``AIOCIRCUIT_DYNAMODB_TABLE`` environment variable). There is no default store: the
  in-memory store lives inside one process, so another process has nothing to look at.
  ``--endpoint-url`` and ``--region`` default to botocore's own configuration
  (``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_DEFAULT_REGION``, ``~/.aws/config``).
- The CLI reads and writes the default item layout (partition key ``id`` holding the
  circuit name; Powertools' attribute names), which is also what ``create-table`` makes.
- Reads are strongly consistent: an operator wants what is stored now.
- ``status NAME ...`` reads each named circuit (``GetItem``); a circuit with no record is
  CLOSED. ``status`` without names lists every circuit with a paginated ``Scan`` filtered
  to items whose ``state`` is a circuit state, then reads each of those as above. A Scan
  reads (and is billed for) the whole table, and needs ``dynamodb:Scan``.
- ``create-table`` on a table that exists fails (exit 1) unless ``--exist-ok`` is given,
  which accepts it as it is (exit 0) without checking its schema.
- Exit codes: 0 success; 1 the store failed, was unreachable or answered with an error;
  2 bad command-line input, found before the store is contacted; 130 interrupted.
  Every error is one line on stderr.
- ``--timeout`` bounds each store operation (default 10 s; 120 s for the whole of
  ``create-table``, which waits for the table to become active).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio

from ._breaker import CircuitBreaker
from ._circuit import CircuitInfo, CircuitState
from ._config import CircuitBreakerConfig

if TYPE_CHECKING:
    from .persistence.dynamodb import DynamoDBPersistence

__all__ = [
    "COMMANDS",
    "TABLE_ENV_VAR",
    "CommandLineError",
    "StoreCommandError",
    "add_store_commands",
    "run_store_command",
]

TABLE_ENV_VAR = "AIOCIRCUIT_DYNAMODB_TABLE"
COMMANDS = ("status", "open", "close", "reset", "create-table")

STORE_TIMEOUT = 10.0
CREATE_TABLE_TIMEOUT = 120.0
MAX_TIMEOUT = 3600.0
# Reads of many circuits run this many at a time: fast on a big table, gentle on its
# provisioned (or on-demand) read capacity.
READ_CONCURRENCY = 8

# The item layout the CLI reads: DynamoDBPersistence's defaults, which are Powertools'.
KEY_ATTR = "id"
STATE_ATTR = "state"
EXPIRY_ATTR = "expiration"

# DynamoDB's own rules, checked here so a typo is a usage error (exit 2), not a store one.
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
_REGION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_MAX_KEY_BYTES = 2048

JSON_KEYS = (
    "name",
    "state",
    "failure_count",
    "opened_at",
    "opened_at_iso",
    "open_for_seconds",
)
"""The keys of every circuit object ``--json`` prints, in this order."""

COLUMNS = ("NAME", "STATE", "FAILURE_COUNT", "OPENED_AT", "OPENED_AT_UNIX", "OPEN_FOR")
"""The columns of the human table, in this order."""

T = TypeVar("T")


class CommandLineError(Exception):
    """Bad command-line input found after parsing (exit 2); the message is one line."""


class StoreCommandError(Exception):
    """The store failed or refused (exit 1); the message is one line."""


@dataclass(frozen=True)
class StoreOptions:
    """Where the store is and how long to wait for it."""

    table: str
    endpoint_url: str | None
    region: str | None
    timeout: float

    @property
    def where(self) -> str:
        """The store, as error messages name it."""
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"DynamoDB table {self.table!r}{at}"


# -- the parser ------------------------------------------------------------------------


def _timeout_option(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and <= {MAX_TIMEOUT:g}, got {text!r}"
        )
    return value


def _store_options(*, timeout: float, timeout_help: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("store")
    group.add_argument(
        "--dynamodb-table",
        metavar="TABLE",
        help=f"the DynamoDB table holding circuit state (default: ${TABLE_ENV_VAR}); "
        "required: the in-memory store lives inside one process, so there is nothing "
        "to look at without a shared store",
    )
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="DynamoDB endpoint, e.g. http://localhost:8000 for DynamoDB Local "
        "(default: botocore's, e.g. $AWS_ENDPOINT_URL_DYNAMODB)",
    )
    group.add_argument(
        "--region",
        metavar="REGION",
        help="AWS region (default: botocore's, e.g. $AWS_DEFAULT_REGION)",
    )
    group.add_argument(
        "--timeout",
        type=_timeout_option,
        default=timeout,
        metavar="S",
        help=f"{timeout_help} (default: %(default)g)",
    )
    output = common.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print JSON (stable keys) instead of text"
    )
    return common


_CIRCUIT_OUTPUT = (
    "Prints the circuit as a table (NAME STATE FAILURE_COUNT OPENED_AT OPENED_AT_UNIX "
    "OPEN_FOR) or, with --json, as one JSON object with the keys "
    + ", ".join(JSON_KEYS)
    + "; states are their string values. Exit 1 with one line if the store fails."
)


def add_store_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``status``, ``open``, ``close``, ``reset`` and ``create-table`` to ``commands``
    (the subparsers of the ``aiocircuit`` parser)."""
    per_operation = _store_options(
        timeout=STORE_TIMEOUT, timeout_help="seconds to wait for each store operation"
    )
    status = commands.add_parser(
        "status",
        parents=[per_operation],
        help="show circuits as the store holds them",
        description=(
            "Read circuits from the store now (strongly consistent) and print them. "
            "With names, reads each (dynamodb:GetItem); a circuit with no record is "
            "CLOSED. Without names, lists every circuit in the table: a paginated Scan, "
            "filtered to items whose state is a circuit state, then a read of each. A "
            "Scan reads, and is billed for, the whole table, and needs dynamodb:Scan as "
            "well as dynamodb:GetItem. Prints a table, or with --json a JSON array of "
            "objects with the keys " + ", ".join(JSON_KEYS) + "."
        ),
    )
    status.add_argument(
        "names", nargs="*", metavar="NAME", help="circuits to show (default: all, by Scan)"
    )
    verbs = {
        "open": (
            "force a circuit open for the whole fleet until reset",
            "Force the circuit open for the whole fleet (CircuitBreaker.force_open): "
            "every call is rejected and no probe runs until 'aiocircuit reset'. Other "
            "processes obey within their local_cache_max_age.",
        ),
        "close": (
            "force a circuit closed for the whole fleet until reset",
            "Force the circuit closed for the whole fleet (CircuitBreaker.force_closed): "
            "every call runs and failures never trip it until 'aiocircuit reset'.",
        ),
        "reset": (
            "return a circuit to an ordinary CLOSED state",
            "Return the circuit to an ordinary CLOSED state with no history "
            "(CircuitBreaker.reset), lifting a forced state and ending any recovery in "
            "progress.",
        ),
    }
    for verb, (summary, description) in verbs.items():
        command = commands.add_parser(
            verb,
            parents=[per_operation],
            help=summary,
            description=f"{description} Needs dynamodb:UpdateItem. {_CIRCUIT_OUTPUT}",
        )
        command.add_argument("name", metavar="NAME", help="the circuit")
    create = commands.add_parser(
        "create-table",
        parents=[
            _store_options(
                timeout=CREATE_TABLE_TIMEOUT,
                timeout_help="seconds to wait for the table to be created and active",
            )
        ],
        help="create a DynamoDB table for circuit state",
        description=(
            "Create a DynamoDB table for circuit state: partition key 'id' (string), "
            "on-demand billing, TTL on 'expiration'; wait until it is active. If the "
            "table exists: exit 1, or with --exist-ok exit 0 and leave it as it is. "
            "Needs dynamodb:CreateTable, dynamodb:DescribeTable and "
            "dynamodb:UpdateTimeToLive."
        ),
    )
    create.add_argument(
        "--exist-ok",
        action="store_true",
        help="succeed if the table already exists (its schema is not checked)",
    )


# -- checks ----------------------------------------------------------------------------


def _options(args: argparse.Namespace, environ: dict[str, str]) -> StoreOptions:
    table = args.dynamodb_table
    if table is None:
        table = environ.get(TABLE_ENV_VAR) or None
    if table is None:
        raise CommandLineError(
            f"{args.command} needs a store: pass --dynamodb-table TABLE or set "
            f"{TABLE_ENV_VAR} (the in-memory store lives inside one process)"
        )
    if not _TABLE_NAME.fullmatch(table):
        raise CommandLineError(
            f"invalid table name {table!r}: DynamoDB table names are 3 to 255 characters "
            "of A-Z a-z 0-9 _ . -"
        )
    endpoint_url = args.endpoint_url
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommandLineError(
                f"--endpoint-url must be an http:// or https:// URL, got {endpoint_url!r}"
            )
    region = args.region
    if region is not None and not _REGION.fullmatch(region):
        raise CommandLineError(f"--region must be an AWS region name, got {region!r}")
    return StoreOptions(table, endpoint_url, region, float(args.timeout))


def _check_name(name: str) -> str:
    if not name:
        raise CommandLineError("a circuit NAME must not be empty")
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        raise CommandLineError(
            f"circuit name {name[:20]!r}... is longer than DynamoDB's {_MAX_KEY_BYTES}-byte "
            "key limit"
        )
    return name


# -- output ----------------------------------------------------------------------------


def _iso(seconds: float) -> str | None:
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # a corrupted, absurd timestamp
        return None


def circuit_json(info: CircuitInfo, now: float) -> dict[str, Any]:
    """``info`` as the JSON object ``--json`` prints (keys :data:`JSON_KEYS`).

    ``open_for_seconds`` is how long ago ``opened_at`` was at ``now`` (whole seconds, at
    least 0), ``None`` with ``opened_at``.
    """
    opened_at = info.opened_at
    return {
        "name": info.name,
        "state": info.state.value,
        "failure_count": info.failure_count,
        "opened_at": opened_at,
        "opened_at_iso": None if opened_at is None else _iso(opened_at),
        "open_for_seconds": None if opened_at is None else max(0, math.floor(now - opened_at)),
    }


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_table(infos: Sequence[CircuitInfo], now: float) -> list[str]:
    """``infos`` as the lines of an aligned table with a header row (:data:`COLUMNS`)."""
    rows = [list(COLUMNS)]
    for info in infos:
        data = circuit_json(info, now)
        rows.append(
            [
                info.name,
                info.state.value,
                str(info.failure_count),
                data["opened_at_iso"] or "-",
                "-" if info.opened_at is None else f"{info.opened_at:.3f}",
                "-" if data["open_for_seconds"] is None else _duration(data["open_for_seconds"]),
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))  # ASCII-only: safe whatever the locale


# -- errors ----------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _one_line(text: str) -> str:
    return " ".join(text.split())


def explain(exc: BaseException, options: StoreOptions) -> str:
    """One line saying why a store command failed, from ``exc`` and its causes."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    chain = _chain(exc)
    for cause in chain:
        if isinstance(cause, TimeoutError):
            return (
                f"{options.where}: no answer within {options.timeout:g} s "
                "(is the endpoint right? --timeout raises the limit)"
            )
        if isinstance(cause, NoRegionError):
            return "no AWS region configured: pass --region or set AWS_DEFAULT_REGION"
        if isinstance(cause, NoCredentialsError):
            return (
                "no AWS credentials found: configure them as for the AWS CLI "
                "(AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)"
            )
        if isinstance(cause, EndpointConnectionError):
            return f"{options.where}: {_one_line(str(cause))}"
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            code = error.get("Code", "")
            if code == "ResourceNotFoundException":
                return (
                    f"{options.where} does not exist (create it with "
                    f"'aiocircuit create-table --dynamodb-table {options.table}')"
                )
            message = error.get("Message") or str(cause)
            return f"{options.where}: {code}: {_one_line(message)}"
    return _one_line(str(exc)) or type(exc).__name__


# -- running ---------------------------------------------------------------------------


async def _gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` at most :data:`READ_CONCURRENCY` at a time; results in call order.
    The first failure (in call order) is raised as itself, not in an exception group."""
    limiter = anyio.CapacityLimiter(READ_CONCURRENCY)
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(calls)

    async def run(index: int) -> None:
        async with limiter:
            try:
                outcomes[index] = (True, await calls[index]())
            except Exception as exc:
                outcomes[index] = (False, exc)

    async with anyio.create_task_group() as group:
        for index in range(len(calls)):
            group.start_soon(run, index)
    for succeeded, value in outcomes:
        if not succeeded:
            raise value
    return [value for _, value in outcomes]


async def _scan_names(client: Any, options: StoreOptions) -> list[str]:
    """Names of the circuits in the table: a paginated, strongly consistent Scan that
    keeps only items whose state is a circuit state (other items may share a table)."""
    states = [state.value for state in CircuitState]
    placeholders = {f":s{index}": {"S": value} for index, value in enumerate(states)}
    request: dict[str, Any] = {
        "TableName": options.table,
        "ProjectionExpression": "#key, #state",
        "FilterExpression": f"attribute_type(#key, :string) AND #state IN "
        f"({', '.join(placeholders)})",
        "ExpressionAttributeNames": {"#key": KEY_ATTR, "#state": STATE_ATTR},
        "ExpressionAttributeValues": {":string": {"S": "S"}, **placeholders},
        "ConsistentRead": True,
    }
    names: set[str] = set()
    while True:
        with anyio.fail_after(options.timeout):
            page = await client.scan(**request)
        for item in page.get("Items", []):
            name = item.get(KEY_ATTR, {}).get("S")
            if name and item.get(STATE_ATTR, {}).get("S") in states:
                names.add(name)
        last_key = page.get("LastEvaluatedKey")
        if not last_key:
            return sorted(names)
        request["ExclusiveStartKey"] = last_key


async def _with_store(
    options: StoreOptions, action: Callable[[Any, DynamoDBPersistence], Awaitable[T]]
) -> T:
    """Run ``action(client, store)`` with one client for the command, closed after it."""
    import aioboto3
    from botocore.config import Config

    from .persistence.dynamodb import DynamoDBPersistence

    # Few retries: a wrong port or host should fail in seconds with botocore's own
    # "could not connect", not exhaust DynamoDB's default of ten attempts and the timeout.
    config = Config(
        connect_timeout=options.timeout,
        read_timeout=options.timeout,
        retries={"mode": "standard", "max_attempts": 3},
    )
    async with aioboto3.Session().client(
        "dynamodb", endpoint_url=options.endpoint_url, region_name=options.region, config=config
    ) as client:
        # The store borrows the client, so the scan and the reads share one connection
        # pool, and the client's lifetime is this block's.
        store = DynamoDBPersistence(options.table, client=client, consistent_read=True)
        return await action(client, store)


def _quiet_library_log() -> None:
    # Without a handler, Python prints the library's warnings on stderr (logging's "last
    # resort"), which would break the one-line error contract. The only warning that
    # reaches here is "disabled by AIOCIRCUIT_DISABLED", which does not apply to the
    # operator methods the CLI calls. An application that configures logging still sees
    # every record: a NullHandler does not stop propagation.
    log = logging.getLogger("aiocircuit")
    if not any(isinstance(handler, logging.NullHandler) for handler in log.handlers):
        log.addHandler(logging.NullHandler())


def _breaker(name: str, store: DynamoDBPersistence, options: StoreOptions) -> CircuitBreaker:
    return CircuitBreaker(name, store, config=CircuitBreakerConfig(store_timeout=options.timeout))


async def _status(options: StoreOptions, names: list[str]) -> list[CircuitInfo]:
    async def action(client: Any, store: DynamoDBPersistence) -> list[CircuitInfo]:
        wanted = names or await _scan_names(client, options)
        breakers = [_breaker(name, store, options) for name in wanted]
        return await _gather([breaker.info for breaker in breakers])

    return await _with_store(options, action)


async def _force(options: StoreOptions, name: str, verb: str) -> CircuitInfo:
    async def action(client: Any, store: DynamoDBPersistence) -> CircuitInfo:
        breaker = _breaker(name, store, options)
        operation = {
            "open": breaker.force_open,
            "close": breaker.force_closed,
            "reset": breaker.reset,
        }[verb]
        return await operation()

    return await _with_store(options, action)


async def _create_table(options: StoreOptions, exist_ok: bool) -> bool:
    """Create the table; ``False`` if it existed (and ``exist_ok``)."""
    from botocore.exceptions import ClientError

    from .persistence.dynamodb import DynamoDBPersistence

    try:
        with anyio.fail_after(options.timeout):
            await DynamoDBPersistence.create_table(
                options.table,
                key_attr=KEY_ATTR,
                expiry_attr=EXPIRY_ATTR,
                endpoint_url=options.endpoint_url,
                region_name=options.region,
            )
    except Exception as exc:
        exists = any(
            isinstance(cause, ClientError)
            and cause.response.get("Error", {}).get("Code") == "ResourceInUseException"
            for cause in _chain(exc)
        )
        if not exists:
            raise
        if exist_ok:
            return False
        raise StoreCommandError(
            f"{options.where} already exists (--exist-ok accepts an existing table)"
        ) from exc
    return True


def run_store_command(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """Run the store command ``args.command`` (one of :data:`COMMANDS`), print its
    result and return 0.

    Raises :class:`CommandLineError` for bad input (before any store is contacted) and
    :class:`StoreCommandError` when the store fails; both carry a one-line message.
    """
    options = _options(args, environ)
    _quiet_library_log()
    command = args.command
    names = [_check_name(name) for name in getattr(args, "names", [])]
    if hasattr(args, "name"):
        names = [_check_name(args.name)]
    try:
        import aioboto3  # noqa: F401  # only to say which install fixes its absence
    except ImportError:
        raise StoreCommandError(
            "the store commands need aioboto3: pip install 'aiocircuit[dynamodb]'"
        ) from None
    try:
        if command == "create-table":
            created = anyio.run(_create_table, options, args.exist_ok, backend="asyncio")
            if args.json:
                _print_json({"table": options.table, "created": created})
            elif created:
                print(
                    f"created {options.where} (key {KEY_ATTR!r}, on-demand billing, "
                    f"TTL on {EXPIRY_ATTR!r})"
                )
            else:
                print(f"{options.where} already exists; left as it is")
            return 0
        if command == "status":
            unique = list(dict.fromkeys(names))  # in the order given, once each
            infos = anyio.run(_status, options, unique, backend="asyncio")
            now = time.time()
            if args.json:
                _print_json([circuit_json(info, now) for info in infos])
            elif not infos:
                print(f"no circuits in {options.where}")
            else:
                print("\n".join(format_table(infos, now)))
            return 0
        info = anyio.run(_force, options, names[0], command, backend="asyncio")
        now = time.time()
        if args.json:
            _print_json(circuit_json(info, now))
        else:
            print("\n".join(format_table([info], now)))
        return 0
    except StoreCommandError:
        raise
    except Exception as exc:
        raise StoreCommandError(explain(exc, options)) from exc
