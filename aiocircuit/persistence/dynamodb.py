"""Circuit state in a DynamoDB table, shared by a whole fleet (``aiocircuit[dynamodb]``).

The item layout is the one Powertools' circuit breaker (v3.31.0+) uses, attribute for
attribute, so both libraries can share one table and see one circuit. Powertools keeps
whole seconds; this store writes those attributes as Powertools would (``opened_at``
rounded down, the lease expiry rounded up) and adds attributes of its own: the
sub-second ``opened_at`` and lease expiry, the open period and the count of failed
probes. Those are used only while they agree with Powertools' whole seconds: an item
Powertools wrote last (its writes leave attributes it does not know in place) reads as
Powertools wrote it. Every write is a
single conditional ``UpdateItem`` that returns the item as stored: the new one when it
won (``ReturnValues=ALL_NEW``), the one that beat it when it lost
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so losing costs no extra read.

aioboto3 runs only on asyncio. Clients are long-lived (creating one costs tens of
milliseconds, a warm request a few), one per event loop: a store used from a fresh loop
(``asyncio.run`` per Lambda invocation) opens a fresh client instead of touching one
bound to a closed loop.

How a client is opened in the background and let go with its loop is in
``_dynamodb_clients``.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from .._circuit import CircuitState
from .._errors import (
    CircuitBreakerConfigError,
    CircuitBreakerPersistenceError,
    CircuitBreakerUnsupportedBackendError,
)
from ._base import CircuitRecord, PersistenceStore, WriteResult
from ._dynamodb_clients import LoopClient

try:
    import aioboto3
    from botocore.exceptions import ClientError
except ImportError as exc:  # pragma: no cover - exercised in an environment without it
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

__all__ = ["DynamoDBPersistence"]

_INSTALL_HINT = "DynamoDBPersistence needs aioboto3: pip install 'aiocircuit[dynamodb]'"
_CONDITION_FAILED = "ConditionalCheckFailedException"
_STATES = {state.value: state for state in CircuitState}


def _require_aioboto3() -> None:
    if _IMPORT_ERROR is not None:
        raise ImportError(_INSTALL_HINT) from _IMPORT_ERROR


def _running_loop(operation: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise CircuitBreakerUnsupportedBackendError(
            f"DynamoDBPersistence.{operation}: aioboto3 runs only on asyncio, and this "
            "code runs on another event loop (trio?). Run it on asyncio, or use a store "
            "that supports this loop; the circuit is not protected until then."
        ) from None


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    # repr() round-trips a float exactly, and DynamoDB keeps up to 38 digits.
    return {"N": repr(value) if isinstance(value, float) else str(value)}


class DynamoDBPersistence(PersistenceStore):
    """Circuit records in a DynamoDB table, one item per circuit.

    Args:
        table_name: the table (see :meth:`create_table`).
        key_attr: the partition key attribute; it holds the circuit name, or
            ``static_pk_value`` in the composite key mode.
        sort_key_attr: set for a table with a composite key: the circuit name goes to
            this sort key, and ``static_pk_value`` to the partition key.
        static_pk_value: the partition key value in the composite mode; by default
            ``circuit_breaker#<AWS_LAMBDA_FUNCTION_NAME>``, as Powertools does.
        state_attr: the attribute holding the state (Powertools' name by default).
        failure_count_attr: the attribute holding the trip's failure count.
        opened_at_attr: the attribute holding when the circuit opened (Unix seconds).
        half_open_owner_attr: the attribute holding the probe lease's owner id.
        probe_lease_expiry_attr: the attribute holding the lease expiry (Unix seconds).
        expiry_attr: the table's TTL attribute.
        precise_opened_at_attr: this library's own attribute: ``opened_at`` to the
            sub-second.
        precise_lease_expiry_attr: this library's own: the lease expiry, sub-second.
        open_period_attr: this library's own: the current open period, in seconds.
        reopen_count_attr: this library's own: failed probes since the trip.
        session: an ``aioboto3.Session`` to build clients from (default: a new one).
        client: a ready aiobotocore DynamoDB client to use instead; the caller owns its
            lifetime and its event loop.
        endpoint_url: passed to the clients this store builds (e.g. a local DynamoDB).
        region_name: passed to the clients this store builds.
        consistent_read: make reads strongly consistent (default: eventually
            consistent, which matches the breaker's own cache tolerance at half the
            cost).

    Needs ``dynamodb:GetItem`` and ``dynamodb:UpdateItem`` on the table
    (``dynamodb:CreateTable``, ``dynamodb:DescribeTable`` and
    ``dynamodb:UpdateTimeToLive`` for
    :meth:`create_table`).
    """

    def __init__(
        self,
        table_name: str,
        *,
        key_attr: str = "id",
        sort_key_attr: str | None = None,
        static_pk_value: str | None = None,
        state_attr: str = "state",
        failure_count_attr: str = "failure_count",
        opened_at_attr: str = "opened_at",
        half_open_owner_attr: str = "half_open_owner",
        probe_lease_expiry_attr: str = "probe_lease_expiry",
        expiry_attr: str = "expiration",
        precise_opened_at_attr: str = "aiocircuit_opened_at",
        precise_lease_expiry_attr: str = "aiocircuit_lease_expiry",
        open_period_attr: str = "aiocircuit_open_period",
        reopen_count_attr: str = "aiocircuit_reopen_count",
        session: Any = None,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        consistent_read: bool = False,
    ) -> None:
        names = {
            "table_name": table_name,
            "key_attr": key_attr,
            "state_attr": state_attr,
            "failure_count_attr": failure_count_attr,
            "opened_at_attr": opened_at_attr,
            "half_open_owner_attr": half_open_owner_attr,
            "probe_lease_expiry_attr": probe_lease_expiry_attr,
            "expiry_attr": expiry_attr,
            "precise_opened_at_attr": precise_opened_at_attr,
            "precise_lease_expiry_attr": precise_lease_expiry_attr,
            "open_period_attr": open_period_attr,
            "reopen_count_attr": reopen_count_attr,
        }
        if sort_key_attr is not None:
            names["sort_key_attr"] = sort_key_attr
        for field, value in names.items():
            if not isinstance(value, str) or not value:
                raise CircuitBreakerConfigError(field, f"must be a non-empty str, got {value!r}")
        first_use: dict[str, str] = {}
        for field, value in names.items():
            if field == "table_name":
                continue
            if value in first_use:
                raise CircuitBreakerConfigError(
                    field, f"must differ from {first_use[value]} (both are {value!r})"
                )
            first_use[value] = field
        if static_pk_value is not None and sort_key_attr is None:
            raise CircuitBreakerConfigError(
                "static_pk_value", "is used only with sort_key_attr (a composite key); set both"
            )
        if client is None:
            _require_aioboto3()
        self.table_name = table_name
        self.key_attr = key_attr
        self.sort_key_attr = sort_key_attr
        self.static_pk_value = (
            static_pk_value
            if static_pk_value is not None
            else f"circuit_breaker#{os.environ.get('AWS_LAMBDA_FUNCTION_NAME', '')}"
        )
        self.state_attr = state_attr
        self.failure_count_attr = failure_count_attr
        self.opened_at_attr = opened_at_attr
        self.half_open_owner_attr = half_open_owner_attr
        self.probe_lease_expiry_attr = probe_lease_expiry_attr
        self.expiry_attr = expiry_attr
        self.precise_opened_at_attr = precise_opened_at_attr
        self.precise_lease_expiry_attr = precise_lease_expiry_attr
        self.open_period_attr = open_period_attr
        self.reopen_count_attr = reopen_count_attr
        self.consistent_read = consistent_read
        self._given_client = client
        self._session = session
        self._client_options = {"endpoint_url": endpoint_url, "region_name": region_name}
        # One client per loop. A plain dict: each entry references its loop (see the
        # module docstring); entries of closed loops go when a new loop comes.
        self._clients: dict[asyncio.AbstractEventLoop, LoopClient] = {}
        self._names = {
            "#state": state_attr,
            "#failure_count": failure_count_attr,
            "#opened_at": opened_at_attr,
            "#owner": half_open_owner_attr,
            "#lease": probe_lease_expiry_attr,
            "#expiration": expiry_attr,
            "#p_opened_at": precise_opened_at_attr,
            "#p_lease": precise_lease_expiry_attr,
            "#open_period": open_period_attr,
            "#reopen_count": reopen_count_attr,
        }

    def __repr__(self) -> str:
        return f"DynamoDBPersistence({self.table_name!r})"

    # -- clients ---------------------------------------------------------------------

    async def _client(self, operation: str) -> Any:
        loop = _running_loop(operation)
        if self._given_client is not None:
            return self._given_client
        entry = self._clients.get(loop)
        if entry is None:
            # A loop met for the first time: those that closed since will run nothing more.
            self._forget_closed_loops()
            # One session for every loop's client: it caches credentials and botocore's
            # service model, which costs tens of milliseconds of blocking work to load.
            if self._session is None:
                self._session = aioboto3.Session()
            entry = LoopClient(
                self._clients, loop, self.table_name, self._session, self._client_options
            )
            self._clients[loop] = entry
        elif entry.client is not None:
            return entry.client
        return await entry.wait()

    def _forget_closed_loops(self) -> None:
        for loop, entry in list(self._clients.items()):
            # pop() decides which thread abandons it, if two sweep at once.
            if loop.is_closed() and self._clients.pop(loop, None) is entry:
                entry.abandon(self._session)

    async def open(self) -> None:
        """Open this store's client for the running event loop now, instead of on its
        first operation: in a Lambda function's init phase, a web app's startup.

        Waits as long as opening takes, with no timeout of its own: resolving
        credentials can wait on a metadata endpoint for as long as botocore's retries
        take (about 9 s if it hangs). Bound it with ``anyio.fail_after`` if you need to;
        a timeout abandons only the wait, and the client goes on opening in the
        background for the next operation. Raises
        :class:`~aiocircuit.CircuitBreakerPersistenceError` if opening fails, and
        :class:`~aiocircuit.CircuitBreakerUnsupportedBackendError` off asyncio.
        """
        await self._client("open")

    async def aclose(self) -> None:
        """Close the client this store opened on the running event loop, and let go of
        those of event loops that have closed since (clients on other running loops close
        with their loops). A client passed in is left to its owner."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._forget_closed_loops()
        entry = self._clients.get(loop)
        if entry is not None:
            await entry.close()

    # -- items -----------------------------------------------------------------------

    def _key(self, name: str) -> dict[str, dict[str, str]]:
        if self.sort_key_attr is not None:
            return {self.key_attr: _s(self.static_pk_value), self.sort_key_attr: _s(name)}
        return {self.key_attr: _s(name)}

    def _record(self, name: str, item: Mapping[str, Any] | None) -> CircuitRecord | None:
        """Parse an item, refusing anything that is not what a breaker writes."""
        if not item:
            return None
        try:
            raw_state = item[self.state_attr]["S"]
            state = _STATES[raw_state]
            opened_at: float | None = self._number(item, self.opened_at_attr)
            precise = self._exact(item, self.precise_opened_at_attr)
            ours = (
                opened_at is not None and precise is not None and math.floor(precise) == opened_at
            )
            if ours:
                opened_at = precise
            elif opened_at is not None:
                opened_at = float(opened_at)
            lease: float | None = self._number(item, self.probe_lease_expiry_attr)
            precise_lease = self._exact(item, self.precise_lease_expiry_attr)
            if (
                lease is not None
                and precise_lease is not None
                and (math.ceil(precise_lease) == lease)
            ):
                lease = precise_lease
            elif lease is not None:
                lease = float(lease)
            return CircuitRecord(
                state=state,
                failure_count=self._number(item, self.failure_count_attr) or 0,
                opened_at=opened_at,
                probe_owner=item[self.half_open_owner_attr]["S"]
                if self.half_open_owner_attr in item
                else None,
                lease_expiry=lease,
                open_period=self._exact(item, self.open_period_attr) if ours else None,
                reopen_count=(self._number(item, self.reopen_count_attr) or 0) if ours else 0,
            )
        except (KeyError, TypeError, InvalidOperation, ValueError) as exc:
            raise CircuitBreakerPersistenceError(
                f"item of circuit {name!r} in table {self.table_name!r} is not a circuit "
                f"record: {dict(item)!r}"
            ) from exc

    @staticmethod
    def _number(item: Mapping[str, Any], attribute: str) -> int | None:
        if attribute not in item:
            return None
        value = Decimal(item[attribute]["N"])
        if not value.is_finite():
            raise ValueError(f"{attribute} is {value}")
        return math.floor(value)

    @staticmethod
    def _exact(item: Mapping[str, Any], attribute: str) -> float | None:
        if attribute not in item:
            return None
        value = float(Decimal(item[attribute]["N"]))
        if not math.isfinite(value):
            raise ValueError(f"{attribute} is {value}")
        return value

    async def read(self, name: str) -> CircuitRecord | None:
        client = await self._client("read")
        try:
            response = await client.get_item(
                TableName=self.table_name,
                Key=self._key(name),
                ConsistentRead=self.consistent_read,
            )
        except Exception as exc:
            raise self._error("read", name, exc) from exc
        return self._record(name, response.get("Item"))

    def _error(self, operation: str, name: str, exc: Exception) -> CircuitBreakerPersistenceError:
        return CircuitBreakerPersistenceError(
            f"DynamoDB {operation} of circuit {name!r} in table {self.table_name!r} failed",
            f"{type(exc).__name__}: {exc}",
        )

    async def _update(
        self,
        operation: str,
        name: str,
        *,
        update: str,
        condition: str,
        values: dict[str, dict[str, str]],
        return_values: str = "ALL_NEW",
    ) -> WriteResult:
        client = await self._client(operation)
        used = {k: v for k, v in self._names.items() if k in update or k in condition}
        try:
            response = await client.update_item(
                TableName=self.table_name,
                Key=self._key(name),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=used,
                ExpressionAttributeValues=values,
                ReturnValues=return_values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED:
                return WriteResult(False, self._record(name, exc.response.get("Item")))
            raise self._error(operation, name, exc) from exc
        except Exception as exc:
            raise self._error(operation, name, exc) from exc
        return WriteResult(True, self._record(name, response.get("Attributes")))

    async def trip(
        self,
        name: str,
        *,
        failure_count: int,
        opened_at: float,
        seen_opened_at: float | None,
        open_period: float,
        expires_at: int,
    ) -> WriteResult:
        condition = "attribute_not_exists(#state) OR #state = :closed"
        values = {
            ":closed": _s(CircuitState.CLOSED.value),
            ":open": _s(CircuitState.OPEN.value),
            ":failure_count": _n(failure_count),
            ":opened_at": _n(math.floor(opened_at)),
            ":p_opened_at": _n(float(opened_at)),
            ":open_period": _n(float(open_period)),
            ":zero": _n(0),
            ":expiration": _n(expires_at),
        }
        if seen_opened_at is not None:
            condition += f" OR (#state = :open AND {self._opened_fence(seen_opened_at, values)})"
        return await self._update(
            "trip",
            name,
            update="SET #state = :open, #failure_count = :failure_count, "
            "#opened_at = :opened_at, #p_opened_at = :p_opened_at, "
            "#open_period = :open_period, #reopen_count = :zero, "
            "#expiration = :expiration REMOVE #owner, #lease, #p_lease",
            condition=condition,
            values=values,
        )

    @staticmethod
    def _opened_fence(seen: float, values: dict[str, dict[str, str]]) -> str:
        """The condition "``opened_at`` is still ``seen``", adding its values: the whole
        second always; the sub-second attribute too when it is in that second (else it
        is stale, left by a Powertools write, and ``seen`` was read as whole seconds)."""
        second = math.floor(seen)
        values[":seen"] = _n(second)
        values[":seen_exact"] = _n(float(seen))
        values[":seen_next"] = _n(second + 1)
        return (
            "#opened_at = :seen AND (attribute_not_exists(#p_opened_at) "
            "OR #p_opened_at = :seen_exact OR #p_opened_at < :seen "
            "OR #p_opened_at >= :seen_next)"
        )

    async def acquire_probe(
        self,
        name: str,
        *,
        owner: str,
        seen_opened_at: float,
        now: float,
        lease_expiry: float,
        expires_at: int,
        seen_owner: str | None = None,
    ) -> WriteResult:
        # The same election as Powertools' conditional PutItem, so a mixed fleet elects
        # one probe; an UpdateItem keeps the stored opened_at on a takeover. It returns
        # the item it replaced (ALL_OLD): whether that was OPEN (an election, a
        # transition) or HALF_OPEN (a takeover, none); the new item is that one with
        # exactly the attributes set here.
        # A lease lapses by its sub-second expiry when it has one (this store wrote
        # it), else by Powertools' whole-second one.
        takeover = (
            "#state = :half_open AND (#p_lease <= :now "
            "OR (attribute_not_exists(#p_lease) AND #lease <= :now))"
        )
        values = {
            ":open": _s(CircuitState.OPEN.value),
            ":half_open": _s(CircuitState.HALF_OPEN.value),
            ":owner": _s(owner),
            ":lease": _n(math.ceil(lease_expiry)),
            ":p_lease": _n(float(lease_expiry)),
            ":zero": _n(0),
            ":now": _n(float(now)),
            ":expiration": _n(expires_at),
        }
        election = self._opened_fence(seen_opened_at, values)
        if seen_owner is not None:
            takeover += " AND #owner = :seen_owner"
            values[":seen_owner"] = _s(seen_owner)
        result = await self._update(
            "acquire_probe",
            name,
            update="SET #state = :half_open, #owner = :owner, #lease = :lease, "
            "#p_lease = :p_lease, #failure_count = :zero, #expiration = :expiration",
            condition="(#state = :open AND attribute_not_exists(#owner) "
            f"AND {election}) OR ({takeover})",
            values=values,
            return_values="ALL_OLD",
        )
        if not result.won:
            return result
        if result.record is None:
            raise self._error("acquire_probe", name, ValueError("no previous item returned"))
        new = replace(
            result.record,
            state=CircuitState.HALF_OPEN,
            failure_count=0,
            probe_owner=owner,
            lease_expiry=float(lease_expiry),
        )
        return WriteResult(True, new, replaced=result.record.state)

    async def renew_probe(
        self, name: str, *, owner: str, lease_expiry: float, expires_at: int
    ) -> WriteResult:
        return await self._update(
            "renew_probe",
            name,
            update="SET #lease = :lease, #p_lease = :p_lease, #expiration = :expiration",
            condition="#owner = :owner",
            values={
                ":owner": _s(owner),
                ":lease": _n(math.ceil(lease_expiry)),
                ":p_lease": _n(float(lease_expiry)),
                ":expiration": _n(expires_at),
            },
        )

    async def close(self, name: str, *, owner: str, expires_at: int) -> WriteResult:
        return await self._update(
            "close",
            name,
            update="SET #state = :closed, #failure_count = :zero, #expiration = :expiration "
            "REMOVE #opened_at, #owner, #lease, #p_opened_at, #p_lease, #open_period, "
            "#reopen_count",
            condition="#owner = :owner",
            values={
                ":closed": _s(CircuitState.CLOSED.value),
                ":zero": _n(0),
                ":owner": _s(owner),
                ":expiration": _n(expires_at),
            },
        )

    async def reopen(
        self,
        name: str,
        *,
        owner: str,
        opened_at: float,
        open_period: float,
        reopen_count: int,
        expires_at: int,
    ) -> WriteResult:
        return await self._update(
            "reopen",
            name,
            update="SET #state = :open, #failure_count = :zero, #opened_at = :opened_at, "
            "#p_opened_at = :p_opened_at, #open_period = :open_period, "
            "#reopen_count = :reopen_count, #expiration = :expiration "
            "REMOVE #owner, #lease, #p_lease",
            condition="#owner = :owner",
            values={
                ":open": _s(CircuitState.OPEN.value),
                ":zero": _n(0),
                ":owner": _s(owner),
                ":opened_at": _n(math.floor(opened_at)),
                ":p_opened_at": _n(float(opened_at)),
                ":open_period": _n(float(open_period)),
                ":reopen_count": _n(reopen_count),
                ":expiration": _n(expires_at),
            },
        )

    async def force(
        self,
        name: str,
        *,
        state: CircuitState,
        opened_at: float | None,
        expires_at: int | None,
    ) -> CircuitRecord:
        sets = ["#state = :state", "#failure_count = :zero"]
        removes = ["#owner", "#lease", "#p_lease", "#open_period", "#reopen_count"]
        values = {":state": _s(state.value), ":zero": _n(0)}
        if opened_at is None:
            removes += ["#opened_at", "#p_opened_at"]
        else:
            sets += ["#opened_at = :opened_at", "#p_opened_at = :p_opened_at"]
            values[":opened_at"] = _n(math.floor(opened_at))
            values[":p_opened_at"] = _n(float(opened_at))
        if expires_at is None:
            removes.append("#expiration")  # a forced state holds until reset
        else:
            sets.append("#expiration = :expiration")
            values[":expiration"] = _n(expires_at)
        update = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
        client = await self._client("force")
        try:
            response = await client.update_item(
                TableName=self.table_name,
                Key=self._key(name),
                UpdateExpression=update,
                ExpressionAttributeNames={k: v for k, v in self._names.items() if k in update},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            raise self._error("force", name, exc) from exc
        record = self._record(name, response.get("Attributes"))
        if record is None:
            raise self._error("force", name, ValueError("no item returned"))
        return record

    # -- table -----------------------------------------------------------------------

    @staticmethod
    async def create_table(
        table_name: str,
        *,
        key_attr: str = "id",
        sort_key_attr: str | None = None,
        expiry_attr: str = "expiration",
        session: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
    ) -> None:
        """Create a table for circuit state: on-demand billing, TTL on ``expiry_attr``.

        Waits until the table is active. Needs ``dynamodb:CreateTable``,
        ``dynamodb:DescribeTable`` and ``dynamodb:UpdateTimeToLive``.
        """
        _require_aioboto3()
        _running_loop("create_table")
        session = session if session is not None else aioboto3.Session()
        keys = [(key_attr, "HASH")] + ([(sort_key_attr, "RANGE")] if sort_key_attr else [])
        async with session.client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region_name
        ) as client:
            try:
                await client.create_table(
                    TableName=table_name,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": a, "KeyType": t} for a, t in keys],
                    AttributeDefinitions=[
                        {"AttributeName": a, "AttributeType": "S"} for a, _ in keys
                    ],
                )
                await client.get_waiter("table_exists").wait(
                    TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
                )
                await client.update_time_to_live(
                    TableName=table_name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": expiry_attr},
                )
            except Exception as exc:
                raise CircuitBreakerPersistenceError(
                    f"creating table {table_name!r} failed", f"{type(exc).__name__}: {exc}"
                ) from exc
