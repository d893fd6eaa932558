"""Static membership of the stage workers, so that a dead worker's partitions move at once.

A dynamic member that dies by ``kill -9`` stays in its group until the coordinator misses its
heartbeats for a whole session timeout (``streams_session_timeout_s``); its partitions wait that
long, and so does a restarted worker, whose join only completes once the dead member is expired.
So each worker joins as a static member (KIP-345) under a name its supervisor knows, and the
supervisor, which sees the worker exit the moment it happens, asks the coordinator to remove that
name: the group rebalances at once and the other workers, which keep standby copies of the table,
take the partitions over. A supervisor killed with its workers leaves them to the session timeout,
as before; a worker restarted under the same name takes its place without waiting for it.

aiokafka sends LeaveGroup v0-v1 only, which name a member id; removing a member by its instance
name needs v3 (Kafka 2.4+, what ``AdminClient.removeMembersFromConsumerGroup`` sends).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

from schemas.kafka_connection import KafkaConnection
from streams.kafka_clients import client_options

log = logging.getLogger(__name__)

__all__ = ["instance_id", "remove_static_member", "remove_static_member_or_log"]

_GROUP_COORDINATOR = 0
#: The member id that goes with a removal by instance name (JoinGroupRequest.UNKNOWN_MEMBER_ID).
_ANY_MEMBER_ID = ""
#: Errors that mean the member is not in the group: there is nothing to remove.
_NOT_A_MEMBER = {25, 69}  # UNKNOWN_MEMBER_ID, GROUP_ID_NOT_FOUND


def instance_id(app_id: str, worker_index: int) -> str:
    """The static member name of stage worker ``worker_index`` on this host: unique in the group
    as long as one ``ragstream streams`` runs per host."""
    return f"{app_id}-{socket.gethostname()}-{worker_index}"


class _LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(("member_id", String()), ("group_instance_id", String()), ("error_code", Int16))),
    )


class _LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group_id", String()),
        ("members", Array(("member_id", String()), ("group_instance_id", String()))),
    )


class _RemoveStaticMember(Request[_LeaveGroupRequestV3]):
    API_KEY = 13

    def __init__(self, group_id: str, instance: str) -> None:
        self._group_id = group_id
        self._instance = instance

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(self._group_id, [(_ANY_MEMBER_ID, self._instance)])


async def remove_static_member(
    kafka: KafkaConnection, group_id: str, instance: str, timeout_s: float = 5.0
) -> bool:
    """Remove the static member ``instance`` from ``group_id``, so that the group rebalances now;
    returns whether it was a member. Raises a ``KafkaError`` when no coordinator answers in time."""
    async with asyncio.timeout(timeout_s):
        client = AIOKafkaClient(**client_options(kafka), client_id=f"{group_id}-supervisor")
        try:
            await client.bootstrap()
            while True:
                coordinator = await client.coordinator_lookup(_GROUP_COORDINATOR, group_id)
                response = await client.send(coordinator, _RemoveStaticMember(group_id, instance))
                code = response.error_code or next((m[2] for m in response.members if m[2]), 0)
                if code == 0:
                    return True
                if code in _NOT_A_MEMBER:
                    return False
                error = for_code(code)
                if not error.retriable:
                    raise error(f"cannot remove {instance} from {group_id}")
                # The coordinator is moving or loading: ask again where it is.
                log.debug("removing %s from %s: %s; retrying", instance, group_id, error.__name__)
                await asyncio.sleep(0.2)
        finally:
            await client.close()


def remove_static_member_or_log(kafka: KafkaConnection, group_id: str, instance: str) -> None:
    """``remove_static_member`` for a synchronous caller; a failure is logged (the session timeout
    still removes the member), never raised."""
    try:
        removed = asyncio.run(remove_static_member(kafka, group_id, instance))
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning(
            "could not remove %s from %s (%r); it leaves the group at its session timeout",
            instance, group_id, exc,
        )  # fmt: skip
        return
    if removed:
        log.info("removed %s from group %s: its partitions are reassigned now", instance, group_id)
