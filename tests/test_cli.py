"""The store commands of the ``aiocircuit`` CLI (``status``, ``open``, ``close``, ``reset``,
``create-table``) against moto's DynamoDB server on loopback.

The CLI runs its own event loop, so these are plain ``def`` tests calling ``main([...])``
in-process; one test runs ``python -m aiocircuit`` as a program.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import aioboto3
import anyio
import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
)
from aiocircuit.__main__ import main
from aiocircuit._cli_store import (
    COLUMNS,
    JSON_KEYS,
    TABLE_ENV_VAR,
    StoreOptions,
    _scan_names,
)
from aiocircuit.persistence.dynamodb import DynamoDBPersistence

ERROR = "aiocircuit: error: "


@pytest.fixture(autouse=True)
def _no_table_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table named in the developer's environment must not leak into these tests."""
    monkeypatch.delenv(TABLE_ENV_VAR, raising=False)


@pytest.fixture
def store_args(moto_endpoint: str, table_name: str) -> list[str]:
    """The options naming a fresh table on the moto server (not yet created)."""
    return ["--dynamodb-table", table_name, "--endpoint-url", moto_endpoint]


@pytest.fixture
def table(store_args: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """``store_args`` for a table created by ``aiocircuit create-table``."""
    assert main(["create-table", *store_args]) == 0
    capsys.readouterr()
    return store_args


def run_ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``main(argv)``, assert it succeeded silently on stderr, return stdout."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    return captured.out


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``main(argv + ["--json"])`` and parse what it printed."""
    return json.loads(run_ok([*argv, "--json"], capsys))


def assert_one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """Nothing on stdout, exactly one ``aiocircuit: error:`` line on stderr; returns it."""
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(ERROR)
    assert captured.err.count("\n") == 1
    return captured.err


def table_rows(out: str) -> list[list[str]]:
    """The cells of a printed table, after checking that its columns are aligned: each
    column starts at the same offset in every line."""
    lines = out.splitlines()
    header = lines[0]
    starts = [header.index(column) for column in COLUMNS]
    assert header.split() == list(COLUMNS)
    for line in lines:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  ", (line, start)
            assert line[start] != " ", (line, start)
    return [line.split() for line in lines[1:]]


def dynamodb(endpoint: str, operation: str, **request: Any) -> Any:
    """One DynamoDB request with a plain client, behind the CLI's back."""

    async def send() -> Any:
        async with aioboto3.Session().client("dynamodb", endpoint_url=endpoint) as client:
            return await getattr(client, operation)(**request)

    return anyio.run(send, backend="asyncio")


def unused_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- create-table ------------------------------------------------------------------------


def test_create_table_makes_a_usable_table(
    store_args: list[str], table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """create-table makes an on-demand table with TTL on 'expiration', and says so."""
    out = run_ok(["create-table", *store_args], capsys)

    assert f"created DynamoDB table {table_name!r}" in out
    endpoint = store_args[-1]
    description = dynamodb(endpoint, "describe_table", TableName=table_name)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb(endpoint, "describe_time_to_live", TableName=table_name)
    ttl = ttl["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expiration"


def test_create_table_that_exists_fails_unless_exist_ok(
    table: list[str], table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second create-table exits 1 with one line; with --exist-ok it exits 0."""
    assert main(["create-table", *table]) == 1
    assert "already exists" in assert_one_line_error(capsys)

    assert run_json(["create-table", *table, "--exist-ok"], capsys) == {
        "table": table_name,
        "created": False,
    }


# -- status, open, close, reset -----------------------------------------------------------


def test_status_of_an_unknown_circuit_is_closed(
    table: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A circuit with no record shows as CLOSED, with no opened_at, in a table."""
    rows = table_rows(run_ok(["status", *table, "payments"], capsys))

    assert rows == [["payments", "CLOSED", "0", "-", "-", "-"]]


def test_open_close_reset_and_status_agree(
    table: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """open, close and reset print the resulting circuit, and status then reads it back."""
    opened = run_json(["open", *table, "payments"], capsys)
    assert opened["state"] == "FORCED_OPEN"
    assert isinstance(opened["opened_at"], float)
    assert run_json(["status", *table, "payments"], capsys) == [
        {**opened, "open_for_seconds": pytest.approx(opened["open_for_seconds"], abs=2)}
    ]

    closed = run_json(["close", *table, "payments"], capsys)
    assert closed["state"] == "FORCED_CLOSED"
    assert closed["opened_at"] is None
    assert run_json(["status", *table, "payments"], capsys)[0]["state"] == "FORCED_CLOSED"

    reset = run_json(["reset", *table, "payments"], capsys)
    assert reset == {
        "name": "payments",
        "state": "CLOSED",
        "failure_count": 0,
        "opened_at": None,
        "opened_at_iso": None,
        "open_for_seconds": None,
    }
    assert run_json(["status", *table, "payments"], capsys) == [reset]


def test_json_has_the_documented_keys(table: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints an array for status, an object for open, with the documented keys
    in order and states as their string values."""
    opened = run_json(["open", *table, "a"], capsys)
    listed = run_json(["status", *table, "a", "b"], capsys)

    assert list(opened) == list(JSON_KEYS)
    assert [list(item) for item in listed] == [list(JSON_KEYS)] * 2
    assert [item["state"] for item in listed] == ["FORCED_OPEN", "CLOSED"]
    assert opened["opened_at_iso"].endswith("Z")
    assert opened["open_for_seconds"] >= 0


def test_table_output_is_aligned(table: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The human table has a header and aligned columns, rows in the order asked for."""
    run_ok(["open", *table, "a-rather-long-circuit-name"], capsys)
    run_ok(["close", *table, "b"], capsys)

    out = run_ok(["status", *table, "b", "a-rather-long-circuit-name", "c", "b"], capsys)
    rows = table_rows(out)

    assert [row[:3] for row in rows] == [
        ["b", "FORCED_CLOSED", "0"],
        ["a-rather-long-circuit-name", "FORCED_OPEN", "0"],
        ["c", "CLOSED", "0"],
    ]
    iso, unix, open_for = rows[1][3:]
    assert iso.endswith("Z")
    assert unix.replace(".", "", 1).isdigit()
    assert len(unix.split(".")[1]) == 3
    assert open_for.endswith("s")
    assert not any(line.endswith(" ") for line in out.splitlines())


def test_status_without_names_lists_every_circuit(
    table: list[str], table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status with no names lists the table's circuits by name (a Scan), skipping items
    that are not circuit records."""
    assert run_ok(["status", *table], capsys).startswith("no circuits in ")
    assert run_json(["status", *table], capsys) == []
    run_ok(["open", *table, "zeta"], capsys)
    run_ok(["reset", *table, "alpha"], capsys)
    for item in ({"id": "x", "status": "COMPLETED"}, {"id": "y", "state": "BANANA"}):
        typed = {key: {"S": value} for key, value in item.items()}
        dynamodb(table[-1], "put_item", TableName=table_name, Item=typed)

    listed = run_json(["status", *table], capsys)

    assert [(item["name"], item["state"]) for item in listed] == [
        ("alpha", "CLOSED"),
        ("zeta", "FORCED_OPEN"),
    ]


def test_scan_follows_every_page() -> None:
    """Listing circuits follows LastEvaluatedKey through every page of the Scan."""

    class PagedClient:
        def __init__(self) -> None:
            self.requests: list[dict[str, Any]] = []

        async def scan(self, **request: Any) -> dict[str, Any]:
            self.requests.append(request)
            page = len(self.requests)
            if page == 1:
                items = [{"id": {"S": "b"}, "state": {"S": "OPEN"}}]
                return {"Items": items, "LastEvaluatedKey": {"id": {"S": "b"}}}
            return {"Items": [{"id": {"S": "a"}, "state": {"S": "HALF_OPEN"}}]}

    client = PagedClient()
    options = StoreOptions("t", None, None, 5.0)

    names = anyio.run(_scan_names, client, options)

    assert names == ["a", "b"]
    assert "ExclusiveStartKey" not in client.requests[0]
    assert client.requests[1]["ExclusiveStartKey"] == {"id": {"S": "b"}}
    assert all(request["ConsistentRead"] for request in client.requests)


def test_a_breaker_obeys_what_the_cli_forces(
    table: list[str], table_name: str, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A circuit opened by the CLI is open for a breaker in another event loop, and a
    circuit a breaker tripped shows as OPEN in status."""
    run_ok(["open", *table, "forced"], capsys)

    async def fail() -> None:
        raise ConnectionError("down")

    async def use_breakers() -> None:
        async with DynamoDBPersistence(table_name, endpoint_url=moto_endpoint) as store:
            forced = CircuitBreaker("forced", store)
            with pytest.raises(CircuitBreakerOpenError):
                await forced.call(anyio.sleep, 0)
            tripping = CircuitBreaker(
                "tripping", store, config=CircuitBreakerConfig(failure_threshold=1)
            )
            with pytest.raises(ConnectionError):
                await tripping.call(fail)
            assert tripping.state is CircuitState.OPEN

    anyio.run(use_breakers, backend="asyncio")

    listed = run_json(["status", *table, "tripping"], capsys)
    assert listed[0]["state"] == "OPEN"
    assert listed[0]["failure_count"] == 1


def test_table_name_from_the_environment(
    table: list[str],
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --dynamodb-table, the table named by AIOCIRCUIT_DYNAMODB_TABLE is used."""
    monkeypatch.setenv(TABLE_ENV_VAR, table_name)

    listed = run_json(["status", "--endpoint-url", table[-1], "payments"], capsys)

    assert listed[0]["name"] == "payments"


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["open"],
        ["open", "--dynamodb-table", "circuits"],
        ["status", "payments"],
        ["reset", "payments"],
        ["create-table"],
        ["status", "--dynamodb-table", "circuits", "--timeout", "0", "payments"],
        ["status", "--dynamodb-table", "circuits", "--timeout", "soon", "payments"],
        ["status", "--dynamodb-table", "no/slashes", "payments"],
        ["status", "--dynamodb-table", "circuits", "--endpoint-url", "localhost:8000", "a"],
        ["status", "--dynamodb-table", "circuits", "--region", "us east", "a"],
        ["reset", "--dynamodb-table", "circuits", ""],
        ["open", "--dynamodb-table", "circuits", "a", "b"],
        ["status", "--dynamodb-table", "circuits", "--bogus"],
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input exits 2 with exactly one line on stderr, before any store is contacted."""
    assert main(argv) == 2
    assert_one_line_error(capsys)


def test_missing_table_says_which_option_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a table, the message names --dynamodb-table and the environment variable."""
    assert main(["status", "payments"]) == 2
    line = assert_one_line_error(capsys)

    assert "--dynamodb-table" in line
    assert TABLE_ENV_VAR in line


def test_unreachable_store_exits_1_with_one_line(
    aws_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store nobody answers for exits 1 with one line naming the endpoint, no traceback."""
    endpoint = f"http://127.0.0.1:{unused_port()}"

    for argv in (["status", "payments"], ["open", "payments"], ["status"]):
        code = main(
            [*argv, "--dynamodb-table", "circuits", "--endpoint-url", endpoint, "--timeout", "1"]
        )
        assert code == 1
        assert endpoint in assert_one_line_error(capsys)


def test_table_that_does_not_exist_exits_1_with_one_line(
    store_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A table that was never created exits 1 and says how to create it."""
    assert main(["status", *store_args, "payments"]) == 1

    assert "create-table" in assert_one_line_error(capsys)


def test_help_states_the_decisions(capsys: pytest.CaptureFixture[str]) -> None:
    """The help says what a Scan costs and needs, and which table option is required."""
    assert main(["status", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())

    assert "dynamodb:Scan" in out
    assert TABLE_ENV_VAR in out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "status", "open", "close", "reset", "create-table"):
        assert command in out


def test_module_runs_status_as_a_program(
    table: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m aiocircuit status --json`` works as a program (credentials from the
    environment) and exits 0 with only JSON on stdout."""
    run_ok(["open", *table, "payments"], capsys)

    result = subprocess.run(
        [sys.executable, "-m", "aiocircuit", "status", *table, "payments", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [circuit] = json.loads(result.stdout)
    assert circuit["name"] == "payments"
    assert circuit["state"] == "FORCED_OPEN"
