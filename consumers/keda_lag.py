"""The worker group's lag as KEDA's Kafka scaler sees it, and the replica count it implies.

KEDA (``pkg/scalers/kafka_scaler.go``) computes, per partition of the topic, the log-end offset
minus the group's committed offset. A partition without a committed offset counts as 1 under
``offsetResetPolicy: latest`` and as its whole log under ``earliest`` (0 for either with
``scaleToZeroOnInvalidOffset``). Unless ``allowIdleConsumers`` is set, the total is capped at
``partitions * lagThreshold``, so no more replicas than partitions are asked for. The HPA then
wants ``ceil(total / lagThreshold)`` replicas, within ``minReplicaCount`` and
``maxReplicaCount``; at or below ``activationLagThreshold`` the trigger is inactive and the
target sits at ``minReplicaCount``.

Pure functions over offsets, so that a test (or an operator) can check what the ScaledObject in
``deploy/k8s`` will do with a real cluster's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INVALID_OFFSET = -1


@dataclass(frozen=True)
class KedaTrigger:
    """The parts of a ScaledObject's kafka trigger and bounds that decide the replica count."""

    lag_threshold: int
    activation_lag_threshold: int = 0
    offset_reset_policy: str = "latest"
    allow_idle_consumers: bool = False
    scale_to_zero_on_invalid_offset: bool = False
    min_replicas: int = 0
    max_replicas: int = 100

    @classmethod
    def from_scaled_object(cls, scaled_object: Mapping[str, Any]) -> KedaTrigger:
        """From a ScaledObject manifest (as parsed YAML) with one ``kafka`` trigger."""
        spec = scaled_object["spec"]
        (trigger,) = (t for t in spec["triggers"] if t["type"] == "kafka")
        meta = trigger["metadata"]

        def flag(name: str) -> bool:
            return str(meta.get(name, "false")).lower() == "true"

        return cls(
            lag_threshold=int(meta.get("lagThreshold", 10)),
            activation_lag_threshold=int(meta.get("activationLagThreshold", 0)),
            offset_reset_policy=str(meta.get("offsetResetPolicy", "latest")),
            allow_idle_consumers=flag("allowIdleConsumers"),
            scale_to_zero_on_invalid_offset=flag("scaleToZeroOnInvalidOffset"),
            min_replicas=int(spec.get("minReplicaCount", 0)),
            max_replicas=int(spec.get("maxReplicaCount", 100)),
        )


def partition_lag(committed: int | None, log_end: int, trigger: KedaTrigger) -> int:
    """One partition's lag (``committed`` None or -1: the group has no offset there)."""
    if committed is None or committed == INVALID_OFFSET:
        if trigger.scale_to_zero_on_invalid_offset:
            return 0
        return log_end if trigger.offset_reset_policy == "earliest" else 1
    return log_end - committed


def total_lag(committed: Mapping[int, int | None], log_end: Mapping[int, int], trigger: KedaTrigger) -> int:
    """The topic's lag for the group, capped at partitions * lagThreshold unless idle consumers are allowed."""
    lag = sum(partition_lag(committed.get(p), end, trigger) for p, end in log_end.items())
    if not trigger.allow_idle_consumers and lag // trigger.lag_threshold > len(log_end):
        lag = len(log_end) * trigger.lag_threshold
    return lag


def desired_replicas(lag: int, trigger: KedaTrigger) -> int:
    """The replica count the HPA asks for at this lag."""
    if lag <= trigger.activation_lag_threshold:
        return trigger.min_replicas
    wanted = math.ceil(lag / trigger.lag_threshold)
    return max(trigger.min_replicas, 1, min(trigger.max_replicas, wanted))
