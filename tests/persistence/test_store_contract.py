"""The contract every PersistenceStore honours, written once for all backends.

Each operation is a compare-and-set: it applies only under its condition, reports
whether it won, and returns the record as stored afterwards.
"""

from __future__ import annotations

import itertools

import anyio
import pytest

from aiocircuit import CircuitState
from aiocircuit.persistence import CircuitRecord, PersistenceStore

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000
TTL = NOW + 7200
PERIOD = 30.0
_names = itertools.count()


@pytest.fixture
def name() -> str:
    return f"circuit-{next(_names)}"


async def _open(store: PersistenceStore, name: str, opened_at: int = NOW) -> None:
    result = await store.trip(
        name,
        failure_count=5,
        opened_at=opened_at,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert result.won


async def _half_open(
    store: PersistenceStore, name: str, owner: str = "a", lease_expiry: int = NOW + 30
) -> None:
    await _open(store, name)
    result = await store.acquire_probe(
        name,
        owner=owner,
        seen_opened_at=NOW,
        now=NOW + 30,
        lease_expiry=lease_expiry,
        expires_at=TTL,
    )
    assert result.won


async def test_missing_record_reads_as_none(store: PersistenceStore, name: str) -> None:
    """A circuit never written has no record."""
    assert await store.read(name) is None


async def test_trip_creates_open_record(store: PersistenceStore, name: str) -> None:
    """Tripping a missing circuit stores OPEN with its opened_at and failure count."""
    result = await store.trip(
        name,
        failure_count=5,
        opened_at=NOW,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    expected = CircuitRecord(CircuitState.OPEN, failure_count=5, opened_at=NOW, open_period=PERIOD)
    assert result.won
    assert result.record == expected
    assert await store.read(name) == expected


async def test_trip_loses_to_newer_open(store: PersistenceStore, name: str) -> None:
    """A trip fenced on a stale opened_at loses and returns the stored record."""
    await _open(store, name, opened_at=NOW + 10)
    result = await store.trip(
        name,
        failure_count=3,
        opened_at=NOW + 20,
        seen_opened_at=NOW,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert not result.won
    assert result.record == CircuitRecord(CircuitState.OPEN, 5, NOW + 10, open_period=PERIOD)


async def test_trip_over_open_it_saw(store: PersistenceStore, name: str) -> None:
    """A trip fenced on the opened_at that is stored applies."""
    await _open(store, name)
    result = await store.trip(
        name,
        failure_count=2,
        opened_at=NOW + 5,
        seen_opened_at=NOW,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert result.won
    assert result.record == CircuitRecord(CircuitState.OPEN, 2, NOW + 5, open_period=PERIOD)


async def test_second_of_two_trips_loses(store: PersistenceStore, name: str) -> None:
    """Two environments tripping from CLOSED: one wins, the other adopts its record."""
    first = await store.trip(
        name,
        failure_count=5,
        opened_at=NOW,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    second = await store.trip(
        name,
        failure_count=5,
        opened_at=NOW + 1,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert first.won
    assert not second.won
    assert second.record == first.record


async def test_trip_never_overwrites_a_probe(store: PersistenceStore, name: str) -> None:
    """A stale environment cannot trip over a live HALF_OPEN lease."""
    await _half_open(store, name)
    result = await store.trip(
        name,
        failure_count=5,
        opened_at=NOW + 40,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert not result.won
    assert result.record is not None
    assert result.record.state is CircuitState.HALF_OPEN
    assert result.record.probe_owner == "a"


async def test_acquire_elects_one_probe(store: PersistenceStore, name: str) -> None:
    """Winning the election stores HALF_OPEN with the owner and lease, keeping opened_at."""
    await _open(store, name)
    result = await store.acquire_probe(
        name, owner="a", seen_opened_at=NOW, now=NOW + 30, lease_expiry=NOW + 60, expires_at=TTL
    )
    expected = CircuitRecord(CircuitState.HALF_OPEN, 0, NOW, "a", NOW + 60, PERIOD)
    assert result.won
    assert result.record == expected
    assert result.replaced is CircuitState.OPEN  # an election: a transition
    assert await store.read(name) == expected


async def test_acquire_on_missing_record_loses(store: PersistenceStore, name: str) -> None:
    """There is nothing to probe on a circuit that was never opened."""
    result = await store.acquire_probe(
        name, owner="a", seen_opened_at=NOW, now=NOW, lease_expiry=NOW + 30, expires_at=TTL
    )
    assert not result.won
    assert result.record is None


async def test_acquire_fenced_on_opened_at(store: PersistenceStore, name: str) -> None:
    """An election on a stale opened_at (the circuit reopened since) loses."""
    await _open(store, name, opened_at=NOW + 50)
    result = await store.acquire_probe(
        name, owner="a", seen_opened_at=NOW, now=NOW + 90, lease_expiry=NOW + 120, expires_at=TTL
    )
    assert not result.won
    assert result.record == CircuitRecord(CircuitState.OPEN, 5, NOW + 50, open_period=PERIOD)


async def test_live_lease_is_not_taken(store: PersistenceStore, name: str) -> None:
    """While a lease runs, a second election loses and sees the holder."""
    await _half_open(store, name, owner="a", lease_expiry=NOW + 60)
    result = await store.acquire_probe(
        name, owner="b", seen_opened_at=NOW, now=NOW + 59, lease_expiry=NOW + 89, expires_at=TTL
    )
    assert not result.won
    assert result.record is not None
    assert result.record.probe_owner == "a"


async def test_lapsed_lease_is_taken_over(store: PersistenceStore, name: str) -> None:
    """Once its lease has expired, a vanished holder's lease can be taken over."""
    await _half_open(store, name, owner="a", lease_expiry=NOW + 60)
    result = await store.acquire_probe(
        name, owner="b", seen_opened_at=NOW, now=NOW + 60, lease_expiry=NOW + 90, expires_at=TTL
    )
    assert result.won
    assert result.record == CircuitRecord(CircuitState.HALF_OPEN, 0, NOW, "b", NOW + 90, PERIOD)
    assert result.replaced is CircuitState.HALF_OPEN  # a takeover: no transition


async def test_renew_only_by_owner(store: PersistenceStore, name: str) -> None:
    """Only the lease holder can renew its lease."""
    await _half_open(store, name, owner="a")
    stranger = await store.renew_probe(name, owner="b", lease_expiry=NOW + 99, expires_at=TTL)
    owner = await store.renew_probe(name, owner="a", lease_expiry=NOW + 99, expires_at=TTL)
    assert not stranger.won
    assert owner.won
    assert owner.record is not None
    assert owner.record.lease_expiry == NOW + 99
    assert owner.record.probe_owner == "a"


async def test_release_lets_next_caller_probe(store: PersistenceStore, name: str) -> None:
    """A lease renewed to expiry 0 is released: anyone takes it over at once."""
    await _half_open(store, name, owner="a", lease_expiry=NOW + 60)
    released = await store.renew_probe(name, owner="a", lease_expiry=0, expires_at=TTL)
    assert released.won
    taken = await store.acquire_probe(
        name, owner="b", seen_opened_at=NOW, now=NOW + 31, lease_expiry=NOW + 61, expires_at=TTL
    )
    assert taken.won


async def test_takeover_is_fenced_on_the_holder_seen(store: PersistenceStore, name: str) -> None:
    """A takeover naming the holder it saw lapse applies only while that holder still
    holds the lease: of two processes that saw it lapse, only the first takes it over,
    even when the expiry they saw lies far in the future (a corrupted value)."""
    await _half_open(store, name, owner="vanished", lease_expiry=10**12)
    first = await store.acquire_probe(
        name,
        owner="a",
        seen_opened_at=NOW,
        now=10**12,
        lease_expiry=NOW + 61,
        expires_at=TTL,
        seen_owner="vanished",
    )
    assert first.won
    second = await store.acquire_probe(
        name,
        owner="b",
        seen_opened_at=NOW,
        now=10**12,
        lease_expiry=NOW + 62,
        expires_at=TTL,
        seen_owner="vanished",
    )
    assert not second.won
    assert second.record is not None
    assert second.record.probe_owner == "a"


async def test_close_only_by_owner(store: PersistenceStore, name: str) -> None:
    """Close is fenced on the probe owner and clears opened_at and the lease."""
    await _half_open(store, name, owner="a")
    stranger = await store.close(name, owner="b", expires_at=TTL)
    assert not stranger.won
    assert stranger.record is not None
    assert stranger.record.state is CircuitState.HALF_OPEN
    owner = await store.close(name, owner="a", expires_at=TTL)
    assert owner.won
    assert owner.record == CircuitRecord(CircuitState.CLOSED)
    assert await store.read(name) == CircuitRecord(CircuitState.CLOSED)


async def test_trip_after_close(store: PersistenceStore, name: str) -> None:
    """A closed record trips again like a missing one."""
    await _half_open(store, name, owner="a")
    assert (await store.close(name, owner="a", expires_at=TTL)).won
    result = await store.trip(
        name,
        failure_count=4,
        opened_at=NOW + 100,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert result.won
    assert result.record == CircuitRecord(CircuitState.OPEN, 4, NOW + 100, open_period=PERIOD)


async def test_reopen_only_by_owner(store: PersistenceStore, name: str) -> None:
    """Reopen is fenced on the owner, sets a fresh opened_at and clears the lease."""
    await _half_open(store, name, owner="a")
    stranger = await store.reopen(
        name, owner="b", opened_at=NOW + 40, open_period=PERIOD, reopen_count=1, expires_at=TTL
    )
    assert not stranger.won
    owner = await store.reopen(
        name, owner="a", opened_at=NOW + 40, open_period=PERIOD, reopen_count=1, expires_at=TTL
    )
    assert owner.won
    assert owner.record == CircuitRecord(
        CircuitState.OPEN, 0, NOW + 40, open_period=PERIOD, reopen_count=1
    )


async def test_reopened_circuit_can_be_elected(store: PersistenceStore, name: str) -> None:
    """After a reopen, the next election on the new opened_at wins (no stale owner)."""
    await _half_open(store, name, owner="a")
    await store.reopen(
        name, owner="a", opened_at=NOW + 40, open_period=PERIOD, reopen_count=1, expires_at=TTL
    )
    result = await store.acquire_probe(
        name,
        owner="b",
        seen_opened_at=NOW + 40,
        now=NOW + 70,
        lease_expiry=NOW + 100,
        expires_at=TTL,
    )
    assert result.won


async def test_old_owner_fenced_after_takeover(store: PersistenceStore, name: str) -> None:
    """A holder whose lease was taken over can no longer close or reopen."""
    await _half_open(store, name, owner="a", lease_expiry=NOW + 60)
    await store.acquire_probe(
        name, owner="b", seen_opened_at=NOW, now=NOW + 61, lease_expiry=NOW + 91, expires_at=TTL
    )
    assert not (await store.close(name, owner="a", expires_at=TTL)).won
    assert not (
        await store.reopen(
            name, owner="a", opened_at=NOW + 62, open_period=PERIOD, reopen_count=1, expires_at=TTL
        )
    ).won
    record = await store.read(name)
    assert record is not None
    assert record.probe_owner == "b"


async def test_circuits_are_independent(store: PersistenceStore, name: str) -> None:
    """Writing one circuit leaves every other untouched."""
    await _open(store, name)
    assert await store.read(name + "-other") is None


async def test_concurrent_elections_have_one_winner(store: PersistenceStore, name: str) -> None:
    """Fifty racing elections on one OPEN record: exactly one wins."""
    await _open(store, name)
    wins: list[str] = []

    async def elect(owner: str) -> None:
        result = await store.acquire_probe(
            name,
            owner=owner,
            seen_opened_at=NOW,
            now=NOW + 30,
            lease_expiry=NOW + 60,
            expires_at=TTL,
        )
        if result.won:
            wins.append(owner)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(elect, f"owner-{i}")
    assert len(wins) == 1
    record = await store.read(name)
    assert record is not None
    assert record.probe_owner == wins[0]


@pytest.mark.parametrize(
    "state", [CircuitState.FORCED_OPEN, CircuitState.FORCED_CLOSED, CircuitState.CLOSED]
)
async def test_force_overrides_anything(
    store: PersistenceStore, name: str, state: CircuitState
) -> None:
    """An operator's forced write applies over a live probe lease and clears it."""
    await _half_open(store, name, owner="a")
    opened_at = NOW + 5 if state is CircuitState.FORCED_OPEN else None
    record = await store.force(name, state=state, opened_at=opened_at, expires_at=None)
    assert record == CircuitRecord(state, 0, opened_at)
    assert await store.read(name) == record
    assert not (await store.close(name, owner="a", expires_at=TTL)).won  # lease gone


async def test_forced_states_refuse_trips_and_elections(store: PersistenceStore, name: str) -> None:
    """A forced-closed circuit cannot be tripped; a forced-open one cannot be elected."""
    await store.force(name, state=CircuitState.FORCED_CLOSED, opened_at=None, expires_at=None)
    trip = await store.trip(
        name,
        failure_count=5,
        opened_at=NOW,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert not trip.won
    await store.force(name, state=CircuitState.FORCED_OPEN, opened_at=NOW, expires_at=None)
    election = await store.acquire_probe(
        name,
        owner="a",
        seen_opened_at=NOW,
        now=NOW + 999,
        lease_expiry=NOW + 1029,
        expires_at=TTL,
    )
    assert not election.won
    assert election.record is not None
    assert election.record.state is CircuitState.FORCED_OPEN


async def test_numbers_keep_their_value_whatever_their_size(
    store: PersistenceStore, name: str
) -> None:
    """Counts however large (1E+125, DynamoDB's largest magnitude) and negative times
    are stored and read back as the very same values: a store refuses no number; what
    one means is for the breaker to bound."""
    huge = 10**125
    result = await store.trip(
        name,
        failure_count=huge,
        opened_at=-NOW,
        seen_opened_at=None,
        open_period=PERIOD,
        expires_at=TTL,
    )
    assert result.won
    assert result.record == CircuitRecord(CircuitState.OPEN, huge, -NOW, open_period=PERIOD)
    assert await store.read(name) == result.record


async def test_open_may_come_at_any_time(store: PersistenceStore, name: str) -> None:
    """open(), which ``async with store:`` already ran, may be called again, before and
    between operations."""
    await store.open()
    assert await store.read(name) is None
    await store.open()
    await _open(store, name)
    assert (await store.read(name)) is not None


async def test_sub_second_times_come_back_exactly(store: PersistenceStore, name: str) -> None:
    """Times are floats and come back bit for bit, so that the fences, which compare
    them for equality, hold: the election on the sub-second opened_at read wins, one on
    the same whole second but another fraction loses."""
    opened_at = NOW + 0.123456789
    trip = await store.trip(
        name,
        failure_count=5,
        opened_at=opened_at,
        seen_opened_at=None,
        open_period=0.25,
        expires_at=TTL,
    )
    assert trip.record == CircuitRecord(CircuitState.OPEN, 5, opened_at, open_period=0.25)
    assert await store.read(name) == trip.record
    stale = await store.acquire_probe(
        name, owner="a", seen_opened_at=NOW + 0.5, now=NOW + 1, lease_expiry=NOW + 2, expires_at=TTL
    )
    assert not stale.won
    lease = NOW + 1.000001
    won = await store.acquire_probe(
        name, owner="a", seen_opened_at=opened_at, now=NOW + 1, lease_expiry=lease, expires_at=TTL
    )
    assert won.won
    assert won.record == CircuitRecord(CircuitState.HALF_OPEN, 0, opened_at, "a", lease, 0.25)
    early = await store.acquire_probe(
        name,
        owner="b",
        seen_opened_at=opened_at,
        now=NOW + 1.0000005,
        lease_expiry=NOW + 3,
        expires_at=TTL,
        seen_owner="a",
    )
    assert not early.won, "the lease lapses at its sub-second expiry, not its whole second"
    assert await store.read(name) == won.record


async def test_open_period_and_reopen_count_live_with_the_open_period(
    store: PersistenceStore, name: str
) -> None:
    """A reopen stores its period and count; the election keeps them; a close and a
    forced state clear them."""
    await _half_open(store, name)
    reopened = await store.reopen(
        name, owner="a", opened_at=NOW + 40.5, open_period=60.0, reopen_count=1, expires_at=TTL
    )
    assert reopened.record == CircuitRecord(
        CircuitState.OPEN, 0, NOW + 40.5, open_period=60.0, reopen_count=1
    )
    elected = await store.acquire_probe(
        name,
        owner="b",
        seen_opened_at=NOW + 40.5,
        now=NOW + 101,
        lease_expiry=NOW + 131,
        expires_at=TTL,
    )
    assert elected.record is not None
    assert (elected.record.open_period, elected.record.reopen_count) == (60.0, 1)
    assert (await store.close(name, owner="b", expires_at=TTL)).record == CircuitRecord(
        CircuitState.CLOSED
    )
    await _half_open(store, name, owner="c")
    await store.reopen(
        name, owner="c", opened_at=NOW + 50, open_period=90.0, reopen_count=2, expires_at=TTL
    )
    forced = await store.force(name, state=CircuitState.FORCED_OPEN, opened_at=NOW, expires_at=None)
    assert forced == CircuitRecord(CircuitState.FORCED_OPEN, 0, NOW)
    assert await store.read(name) == forced
