"""aiocircuit and Powertools' ``circuit_breaker`` on one DynamoDB table: one circuit.

Both libraries use the same item layout, so a fleet may run both (say, async services
next to Lambda functions still on Powertools). Each side must see the other's trips,
respect the other's probe lease, and parse the other's items.

Powertools reads the wall clock through ``datetime.datetime.now()``; here it follows the
same FakeClock our breakers read, so nothing waits out a recovery timeout. Everything
runs against the single-threaded moto server, which makes racing conditional writes
atomic as DynamoDB does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.from_thread
import boto3
import pytest
from aws_lambda_powertools.utilities import circuit_breaker as powertools
from aws_lambda_powertools.utilities.circuit_breaker import base as pt_base
from aws_lambda_powertools.utilities.circuit_breaker.persistence import (
    CircuitBreakerDynamoDBPersistence,
    CircuitStateRecord,
)
from aws_lambda_powertools.utilities.circuit_breaker.persistence import base as pt_persistence_base
from aws_lambda_powertools.utilities.circuit_breaker.persistence import dynamodb as pt_dynamodb

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitInfo,
    CircuitState,
)
from aiocircuit.persistence import CircuitRecord
from aiocircuit.persistence.dynamodb import DynamoDBPersistence
from aiocircuit.testing import FakeClock

CIRCUIT = "payments"
FAILURES = 2
SUCCESSES = 2
RECOVERY = 30
HOLD = 10.0  # longest a held probe waits for the other callers (only hit on a bug)
REJECTED = "rejected by Powertools"
TTL_BUFFER = pt_persistence_base.PERSISTED_STATE_TTL_BUFFER  # aiocircuit's is the same


def _our_config(**overrides: Any) -> CircuitBreakerConfig:
    settings: dict[str, Any] = {
        "failure_threshold": FAILURES,
        "success_threshold": SUCCESSES,
        "recovery_timeout": RECOVERY,
        "local_cache_max_age": 0,
        "store_timeout": 10,  # one server thread serves every caller: never fail open here
    }
    return CircuitBreakerConfig(**{**settings, **overrides})


def _powertools_config() -> powertools.CircuitBreakerConfig:
    return powertools.CircuitBreakerConfig(
        failure_threshold=FAILURES,
        success_threshold=SUCCESSES,
        recovery_timeout=RECOVERY,
        local_cache_max_age=0,
    )


def _powertools_rejected(*args: Any, circuit: powertools.CircuitInfo) -> str:
    return REJECTED


def _recording(calls: list[str]) -> Callable[[], str]:
    """A downstream for Powertools' breaker that notes each call in ``calls``."""

    def downstream() -> str:
        calls.append("probe")
        return "pt-ok"

    return downstream


def _powertools(
    store: CircuitBreakerDynamoDBPersistence,
    fn: Callable[..., Any],
    on_circuit_open: Callable[..., Any] | None = _powertools_rejected,
) -> Callable[..., Any]:
    """``fn`` behind Powertools' breaker on our circuit; rejections return REJECTED."""
    decorate = powertools.circuit_breaker(
        name=CIRCUIT,
        persistence_store=store,
        on_circuit_open=on_circuit_open,
        config=_powertools_config(),
    )
    protected: Callable[..., Any] = decorate(fn)
    return protected


async def _fail() -> None:
    raise ConnectionError("down")


def _fail_sync() -> None:
    raise ConnectionError("down")


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def powertools_on_fake_clock(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Powertools' wall clock follows ``clock``; its per-process state starts empty."""

    def now() -> datetime.datetime:
        return datetime.datetime.fromtimestamp(clock.time(), tz=datetime.timezone.utc)

    fake_datetime_module = SimpleNamespace(datetime=SimpleNamespace(now=now))
    # Every read of time in its circuit breaker is `dt.datetime.now()` in these modules;
    # setattr raises if a Powertools upgrade renames one, rather than silently not faking.
    for module in (pt_base, pt_persistence_base, pt_dynamodb):
        monkeypatch.setattr(module, "dt", fake_datetime_module)
    monkeypatch.setattr(pt_base, "_PROBE_OWNER", threading.local())  # fresh owner ids
    monkeypatch.delenv("POWERTOOLS_CIRCUIT_BREAKER_DISABLED", raising=False)
    module_state = (pt_base._LOCAL_FAILURES, pt_base._LOCAL_SUCCESSES, pt_base._LAST_OBSERVED_STATE)
    for state in module_state:
        state.clear()
    yield
    for state in module_state:
        state.clear()


@pytest.fixture
def table(counting_moto: Any, table_name: str) -> str:
    """A table made by aiocircuit's create_table; Powertools uses it as is."""
    asyncio.run(DynamoDBPersistence.create_table(table_name, endpoint_url=counting_moto.url))
    return table_name


@pytest.fixture
def pt_store(counting_moto: Any, table: str) -> Iterator[CircuitBreakerDynamoDBPersistence]:
    client = boto3.client("dynamodb", endpoint_url=counting_moto.url, region_name="us-east-1")
    try:
        store = CircuitBreakerDynamoDBPersistence(table_name=table, boto3_client=client)
        store.configure(_powertools_config(), CIRCUIT)  # get_state reads through (age 0)
        yield store
    finally:
        client.close()


@pytest.fixture
async def our_store(counting_moto: Any, table: str) -> AsyncIterator[DynamoDBPersistence]:
    async with DynamoDBPersistence(table, endpoint_url=counting_moto.url) as store:
        yield store


def _fields(record: CircuitRecord | CircuitStateRecord | None) -> tuple[Any, ...] | None:
    """What both libraries store about a circuit, in one comparable shape."""
    if record is None:
        return None
    if isinstance(record, CircuitRecord):
        owner, lease = record.probe_owner, record.lease_expiry
    else:
        owner, lease = record.half_open_owner, record.probe_lease_expiry
    return (CircuitState(record.state), record.failure_count, record.opened_at, owner, lease)


# -- 1, 2: a trip by either side is seen by the other --------------------------------------


@pytest.mark.anyio
async def test_powertools_trip_makes_aiocircuit_reject_within_cache_age(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """Powertools trips the circuit; our breaker, which had cached CLOSED, rejects once
    its local_cache_max_age has passed, without calling the downstream, and reports
    Powertools' opened_at and failure count."""
    ours = CircuitBreaker(
        CIRCUIT, our_store, config=_our_config(local_cache_max_age=5), clock=clock
    )
    calls = 0

    async def downstream() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    assert await ours.call(downstream) == "ok"  # reads CLOSED, trusts it for 5 s
    failing = _powertools(pt_store, _fail_sync)
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            failing()
    opened_at = int(clock.time())
    clock.advance(4.5)
    assert await ours.call(downstream) == "ok"  # still within its cache age: as documented
    clock.advance(0.5)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        await ours.call(downstream)
    assert calls == 2
    # Powertools' item: whole seconds, and the reader's own recovery timeout as the period.
    assert caught.value.circuit == CircuitInfo(
        CIRCUIT, CircuitState.OPEN, FAILURES, opened_at, RECOVERY, opened_at + RECOVERY
    )
    assert caught.value.retry_after == RECOVERY - 5


@pytest.mark.anyio
async def test_aiocircuit_trip_makes_powertools_reject(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """Our breaker trips the circuit; Powertools then rejects without calling the
    downstream: its on_circuit_open fallback runs with our trip's details, and without
    a fallback it raises its own CircuitBreakerOpenError."""
    ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            await ours.call(_fail)
    opened_at = int(clock.time())
    clock.advance(RECOVERY - 1)
    calls: list[str] = []

    def charge(order: str) -> str:
        calls.append(order)
        return "charged"

    def queue(order: str, circuit: powertools.CircuitInfo) -> tuple[str, str, Any]:
        return ("queued", order, circuit)

    with_fallback = _powertools(pt_store, charge, on_circuit_open=queue)
    assert with_fallback("order-1") == (
        "queued",
        "order-1",
        powertools.CircuitInfo(CIRCUIT, powertools.CircuitState.OPEN, FAILURES, opened_at),
    )
    raising = _powertools(pt_store, charge, on_circuit_open=None)
    with pytest.raises(powertools.CircuitBreakerOpenError) as caught:
        raising("order-2")
    assert caught.value.circuit == powertools.CircuitInfo(
        CIRCUIT, powertools.CircuitState.OPEN, FAILURES, opened_at
    )
    assert calls == []


# -- 3: one probe for the mixed fleet, and each side respects the other's lease ------------


class _Race:
    """Callers of both libraries at one moment of recovery. A call that reaches the
    downstream is held until every caller has made its attempt."""

    def __init__(self, callers: int) -> None:
        self.callers = callers
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.attempts = 0
        self.everyone_tried = threading.Event()

    def attempted(self) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts == self.callers:
                self.everyone_tried.set()

    def reached_downstream(self, side: str) -> None:
        with self.lock:
            self.calls[side] += 1
        self.attempted()

    def rejected(self, side: str) -> None:
        with self.lock:
            self.rejections[side] += 1
        self.attempted()


async def _race(
    breakers: list[CircuitBreaker],
    tasks_per_breaker: int,
    pt_store: CircuitBreakerDynamoDBPersistence,
    pt_threads: int,
) -> _Race:
    """Every caller tries at once; a call that gets through fails (the downstream is
    still down), so the circuit reopens."""
    race = _Race(len(breakers) * tasks_per_breaker + pt_threads)

    async def our_downstream() -> None:
        race.reached_downstream("aiocircuit")
        await anyio.to_thread.run_sync(race.everyone_tried.wait, HOLD)
        raise ConnectionError("still down")

    def pt_downstream() -> None:
        race.reached_downstream("powertools")
        race.everyone_tried.wait(HOLD)
        raise ConnectionError("still down")

    def pt_rejected(*, circuit: powertools.CircuitInfo) -> None:
        race.rejected("powertools")

    pt_call = _powertools(pt_store, pt_downstream, on_circuit_open=pt_rejected)
    go = threading.Event()
    go_async = anyio.Event()

    def pt_caller() -> None:
        try:
            go.wait(HOLD)
            with contextlib.suppress(ConnectionError):
                pt_call()
        except BaseException as exc:
            race.errors.append(exc)

    async def our_caller(breaker: CircuitBreaker) -> None:
        await go_async.wait()
        try:
            await breaker.call(our_downstream)
        except CircuitBreakerOpenError:
            race.rejected("aiocircuit")
        except ConnectionError:
            pass

    threads = [threading.Thread(target=pt_caller) for _ in range(pt_threads)]
    for thread in threads:
        thread.start()
    try:
        async with anyio.create_task_group() as tg:
            for breaker in breakers:
                for _ in range(tasks_per_breaker):
                    tg.start_soon(our_caller, breaker)
            await anyio.wait_all_tasks_blocked()
            go.set()
            go_async.set()
    finally:
        go.set()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join, HOLD)
    assert not any(thread.is_alive() for thread in threads)
    assert race.errors == []
    return race


@pytest.mark.anyio
async def test_mixed_fleet_elects_one_probe_per_recovery(
    clock: FakeClock,
    counting_moto: Any,
    table: str,
    our_store: DynamoDBPersistence,
    pt_store: CircuitBreakerDynamoDBPersistence,
) -> None:
    """At each of four moments of recovery, 3 aiocircuit breakers x 10 tasks and 10
    Powertools threads race for the probe: exactly one downstream call in total, the
    other 39 callers rejected; the failed probe reopens the circuit for everyone."""
    async with contextlib.AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(
                DynamoDBPersistence(table, endpoint_url=counting_moto.url)
            )
            for _ in range(3)
        ]
        breakers = [
            CircuitBreaker(CIRCUIT, store, config=_our_config(), clock=clock) for store in stores
        ]
        for _ in range(FAILURES):
            with pytest.raises(ConnectionError):
                await breakers[0].call(_fail)
        winners: Counter[str] = Counter()
        for _ in range(4):
            clock.advance(RECOVERY)
            race = await _race(breakers, 10, pt_store, pt_threads=10)
            assert sum(race.calls.values()) == 1, race.calls
            assert sum(race.rejections.values()) == race.callers - 1
            winners.update(race.calls)
            record = await our_store.read(CIRCUIT)
            assert record is not None
            assert (record.state, record.opened_at, record.probe_owner) == (
                CircuitState.OPEN,
                int(clock.time()),
                None,
            )
        assert sum(winners.values()) == 4


@pytest.mark.anyio
async def test_aiocircuit_respects_powertools_probe_lease(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """While Powertools' probe holds the lease our breaker rejects without calling the
    downstream; once that lease has lapsed ours takes it over, and then Powertools'
    former owner is rejected in turn until ours closes the circuit."""
    ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            await ours.call(_fail)
    tripped = int(clock.time())
    clock.advance(RECOVERY)
    pt_calls: list[str] = []
    probe = _powertools(pt_store, _recording(pt_calls))
    assert probe() == "pt-ok"  # Powertools wins the election: success 1 of 2
    powertools_lease = await our_store.read(CIRCUIT)
    assert powertools_lease is not None
    assert powertools_lease.state is CircuitState.HALF_OPEN
    assert powertools_lease.probe_owner is not None
    assert powertools_lease.probe_owner.startswith(f"{os.getpid()}#")
    assert powertools_lease.lease_expiry == tripped + 2 * RECOVERY

    our_calls = 0

    async def downstream() -> str:
        nonlocal our_calls
        our_calls += 1
        return "ok"

    for remaining in (RECOVERY, 1):
        clock.advance(RECOVERY - remaining)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await ours.call(downstream)
        assert caught.value.circuit.state is CircuitState.HALF_OPEN
        assert caught.value.retry_after == remaining
    assert our_calls == 0

    clock.advance(1)  # Powertools' lease has lapsed (its probe vanished): ours takes over
    assert await ours.call(downstream) == "ok"
    our_lease = await our_store.read(CIRCUIT)
    assert our_lease is not None
    assert our_lease.state is CircuitState.HALF_OPEN
    assert our_lease.probe_owner not in (None, powertools_lease.probe_owner)
    assert probe() == REJECTED  # Powertools' former owner respects our lease
    assert await ours.call(downstream) == "ok"  # success 2 of 2: closed
    assert await ours.info() == CircuitInfo(CIRCUIT, CircuitState.CLOSED)
    assert probe() == "pt-ok"
    assert (our_calls, pt_calls) == (2, ["probe", "probe"])


@pytest.mark.anyio
async def test_powertools_respects_aiocircuit_probe_lease(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """While our probe holds the lease Powertools rejects, from any thread, without
    calling the downstream; once our lease has lapsed Powertools takes it over, and
    then ours is rejected until Powertools closes the circuit."""
    ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            await ours.call(_fail)
    tripped = int(clock.time())
    clock.advance(RECOVERY)
    our_calls = 0

    async def downstream() -> str:
        nonlocal our_calls
        our_calls += 1
        return "ok"

    assert await ours.call(downstream) == "ok"  # ours wins the election: success 1 of 2
    our_lease = await our_store.read(CIRCUIT)
    assert our_lease is not None
    assert (our_lease.state, our_lease.lease_expiry) == (
        CircuitState.HALF_OPEN,
        tripped + 2 * RECOVERY,
    )

    pt_calls: list[str] = []
    probe = _powertools(pt_store, _recording(pt_calls))
    assert probe() == REJECTED
    assert await anyio.to_thread.run_sync(probe) == REJECTED  # another thread, another owner
    clock.advance(RECOVERY - 1)
    assert probe() == REJECTED
    assert pt_calls == []

    clock.advance(1)  # our lease has lapsed (say our process died): Powertools takes over
    assert probe() == "pt-ok"
    powertools_lease = await our_store.read(CIRCUIT)
    assert powertools_lease is not None
    assert powertools_lease.state is CircuitState.HALF_OPEN
    assert powertools_lease.probe_owner not in (None, our_lease.probe_owner)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        await ours.call(downstream)
    assert caught.value.circuit.state is CircuitState.HALF_OPEN
    assert caught.value.retry_after == RECOVERY
    assert probe() == "pt-ok"  # success 2 of 2: Powertools closes the circuit
    assert await ours.call(downstream) == "ok"
    assert (our_calls, pt_calls) == (2, ["probe", "probe"])


@pytest.mark.anyio
async def test_stale_aiocircuit_probe_cannot_overwrite_powertools_takeover(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """Our probe outlives its lease and Powertools takes the lease over; when our probe
    then fails, its reopen is fenced out by the owner check: Powertools keeps the lease
    and goes on to close the circuit."""
    ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            await ours.call(_fail)
    clock.advance(RECOVERY)
    pt_calls: list[str] = []
    takeover = _powertools(pt_store, _recording(pt_calls))
    our_owner: list[str | None] = []

    async def hanging_probe() -> None:
        record = await our_store.read(CIRCUIT)
        our_owner.append(None if record is None else record.probe_owner)
        clock.advance(RECOVERY)  # our lease lapses while the downstream hangs
        assert takeover() == "pt-ok"  # Powertools takes over: success 1 of 2
        raise ConnectionError("down after all")

    with pytest.raises(ConnectionError):
        await ours.call(hanging_probe)
    record = await our_store.read(CIRCUIT)
    assert record is not None
    assert record.state is CircuitState.HALF_OPEN
    assert record.probe_owner not in (None, *our_owner)
    assert record.lease_expiry == int(clock.time()) + RECOVERY
    assert takeover() == "pt-ok"  # success 2 of 2: Powertools closes the circuit
    assert await ours.info() == CircuitInfo(CIRCUIT, CircuitState.CLOSED)
    assert pt_calls == ["probe", "probe"]


@pytest.mark.anyio
async def test_lease_released_by_an_ignored_error_is_taken_over_by_powertools_at_once(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """Our probe ends in an ignored exception: we release the lease (expiry 0) instead of
    holding it for recovery_timeout, and Powertools takes it over at once."""
    config = _our_config(ignored_exceptions=KeyError)
    ours = CircuitBreaker(CIRCUIT, our_store, config=config, clock=clock)
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            await ours.call(_fail)
    clock.advance(RECOVERY)

    async def ignored() -> None:
        raise KeyError("not the downstream's fault")

    with pytest.raises(KeyError):
        await ours.call(ignored)
    released = await our_store.read(CIRCUIT)
    assert released is not None
    assert (released.state, released.lease_expiry) == (CircuitState.HALF_OPEN, 0)
    assert _powertools(pt_store, lambda: "pt-ok")() == "pt-ok"
    taken = await our_store.read(CIRCUIT)
    assert taken is not None
    assert taken.probe_owner not in (None, released.probe_owner)
    assert taken.lease_expiry == int(clock.time()) + RECOVERY


# -- 4: each library parses the other's items ----------------------------------------------


@pytest.mark.anyio
async def test_powertools_reads_every_item_aiocircuit_writes(
    clock: FakeClock, our_store: DynamoDBPersistence, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """After (and during) each of our transitions (trip, probe, failed probe, renewed
    probe, close) Powertools parses the item without error and sees the same state,
    owner, lease, opened_at and failure count we do."""
    ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
    seen: list[tuple[Any, ...] | None] = []

    async def both_agree() -> None:
        record = await our_store.read(CIRCUIT)
        pt_record = pt_store._get_record(CIRCUIT)  # raises if it cannot parse the item
        assert _fields(pt_record) == _fields(record)
        if pt_record is not None:  # every step writes at the current time: the same TTL
            expected_ttl = int(clock.time()) + RECOVERY + TTL_BUFFER
            assert pt_record.expiry_timestamp == expected_ttl
        state = pt_store.get_state(CIRCUIT).state  # fails open to CLOSED if unparsable
        assert CircuitState(state) is (CircuitState.CLOSED if record is None else record.state)
        seen.append(_fields(record))

    async def probe(fail: bool) -> str:
        await both_agree()
        if fail:
            raise ConnectionError("still down")
        return "ok"

    start = int(clock.time())
    await both_agree()
    for _ in range(FAILURES):
        with pytest.raises(ConnectionError):
            await ours.call(_fail)
    await both_agree()
    clock.advance(RECOVERY)
    with pytest.raises(ConnectionError):
        await ours.call(probe, True)
    await both_agree()
    clock.advance(RECOVERY)
    assert await ours.call(probe, False) == "ok"
    await both_agree()
    clock.advance(1)
    assert await ours.call(probe, False) == "ok"
    await both_agree()

    half_open, reopened, closed = CircuitState.HALF_OPEN, CircuitState.OPEN, CircuitState.CLOSED
    owners = [None if fields is None else fields[3] for fields in seen]
    first, second = owners[2], owners[4]
    assert first is not None
    assert second is not None
    assert first != second  # a fresh owner id per lease
    t_reopen = start + RECOVERY
    assert seen == [
        None,  # no item yet
        (CircuitState.OPEN, FAILURES, start, None, None),  # tripped
        (half_open, 0, start, first, start + 2 * RECOVERY),  # probing
        (reopened, 0, t_reopen, None, None),  # the probe failed
        (half_open, 0, t_reopen, second, t_reopen + 2 * RECOVERY),  # probing again
        (half_open, 0, t_reopen, second, t_reopen + 2 * RECOVERY),  # 1 of 2 successes
        (half_open, 0, t_reopen, second, t_reopen + 2 * RECOVERY + 1),  # renewed lease
        (closed, 0, None, None, None),  # closed
    ]


def test_aiocircuit_reads_every_item_powertools_writes(
    clock: FakeClock, counting_moto: Any, table: str, pt_store: CircuitBreakerDynamoDBPersistence
) -> None:
    """After (and during) each of Powertools' transitions (trip, probe, failed probe,
    probes, close) DynamoDBPersistence.read() parses the item and sees the same state,
    owner, lease, opened_at and failure count Powertools does."""
    seen: list[tuple[Any, ...] | None] = []
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        store = DynamoDBPersistence(table, endpoint_url=counting_moto.url)
        try:

            def both_agree() -> None:
                record = portal.call(store.read, CIRCUIT)  # raises if unparsable
                assert _fields(record) == _fields(pt_store._get_record(CIRCUIT))
                seen.append(_fields(record))

            def probe(fail: bool) -> str:
                both_agree()
                if fail:
                    raise ConnectionError("still down")
                return "ok"

            protected = _powertools(pt_store, probe, on_circuit_open=None)
            start = int(clock.time())
            both_agree()
            for _ in range(FAILURES):
                with pytest.raises(ConnectionError):
                    protected(True)  # closed: the downstream runs, reads, fails
            both_agree()
            clock.advance(RECOVERY)
            with pytest.raises(ConnectionError):
                protected(True)
            both_agree()
            clock.advance(RECOVERY)
            assert protected(False) == "ok"
            both_agree()
            clock.advance(1)
            assert protected(False) == "ok"
            both_agree()
        finally:
            portal.call(store.aclose)

    owner = seen[4][3] if seen[4] is not None else None
    assert owner is not None
    assert owner.startswith(f"{os.getpid()}#")
    open_, half_open, closed = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED
    t_reopen = start + RECOVERY
    assert seen == [
        None,  # no item yet
        None,  # first failure, in the closed downstream
        None,  # second failure, in the closed downstream
        (open_, FAILURES, start, None, None),  # tripped
        (half_open, 0, start, owner, start + 2 * RECOVERY),  # probing
        (open_, 0, t_reopen, None, None),  # the probe failed
        (half_open, 0, t_reopen, owner, t_reopen + 2 * RECOVERY),  # probing again
        (half_open, 0, t_reopen, owner, t_reopen + 2 * RECOVERY),  # 1 of 2 successes
        (half_open, 0, t_reopen, owner, t_reopen + 2 * RECOVERY),  # probing: no renewal
        (closed, 0, None, None, None),  # 2 of 2: closed
    ]


@pytest.mark.anyio
async def test_composite_key_table_is_shared(
    clock: FakeClock,
    counting_moto: Any,
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a single-table design (composite key, the circuit name in the sort key, the
    same default partition value from AWS_LAMBDA_FUNCTION_NAME) our trip is Powertools'
    trip, and Powertools parses our item."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "checkout")
    url = counting_moto.url
    await DynamoDBPersistence.create_table(
        table_name, endpoint_url=url, key_attr="pk", sort_key_attr="sk"
    )
    client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
    try:
        pt_store = CircuitBreakerDynamoDBPersistence(
            table_name=table_name, boto3_client=client, key_attr="pk", sort_key_attr="sk"
        )
        async with DynamoDBPersistence(
            table_name, endpoint_url=url, key_attr="pk", sort_key_attr="sk"
        ) as our_store:
            ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
            for _ in range(FAILURES):
                with pytest.raises(ConnectionError):
                    await ours.call(_fail)
            record = await our_store.read(CIRCUIT)
        key = {"pk": {"S": "circuit_breaker#checkout"}, "sk": {"S": CIRCUIT}}
        item = client.get_item(TableName=table_name, Key=key)["Item"]
        assert item["state"] == {"S": "OPEN"}
        assert _fields(pt_store._get_record(CIRCUIT)) == _fields(record)
        assert _powertools(pt_store, lambda: "pt-ok")() == REJECTED
    finally:
        client.close()


# -- operator control: what Powertools does with a forced state ----------------------------


@pytest.mark.anyio
async def test_powertools_fails_open_on_a_forced_state(
    clock: FakeClock,
    our_store: DynamoDBPersistence,
    pt_store: CircuitBreakerDynamoDBPersistence,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Powertools cannot parse FORCED_OPEN: it logs a warning and fails open (runs the
    call as if CLOSED) on every read, so a forced-open circuit does not stop a
    Powertools environment. Ours rejects; reset gives Powertools a state it reads."""
    ours = CircuitBreaker(CIRCUIT, our_store, config=_our_config(), clock=clock)
    await ours.force_open()
    with pytest.raises(CircuitBreakerOpenError):
        await ours.call(_fail)
    calls: list[str] = []

    def charge(order: str) -> str:
        calls.append(order)
        return "charged"

    protected = _powertools(pt_store, charge, on_circuit_open=_powertools_rejected)
    with caplog.at_level(logging.WARNING):
        assert protected("order-1") == "charged"
    assert calls == ["order-1"]
    assert any("failing open" in r.getMessage() for r in caplog.records)
    await ours.reset()
    assert pt_store.get_state(CIRCUIT).state == powertools.CircuitState.CLOSED
