"""Kubernetes Events (events.k8s.io/v1) about agents, posted as agentid-operator.

Called by the reconciler for lifecycle transitions. Events are best effort, as in client-go's recorder: a
failure to post one is logged and never fails the reconciliation that caused it. Notes never carry secrets:
callers build them from public identifiers (key IDs, names, reasons).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from agentid.kube import errors, resources
from agentid.kube.client import KubeClient

REPORTING_CONTROLLER = "agentid.dev/operator"
NOTE_MAX = 1024
logger = logging.getLogger(__name__)


def micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    def __init__(self, client: KubeClient, *, instance: str) -> None:
        self.client = client
        self.instance = instance[:128]

    async def post(
        self,
        regarding: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        note: str,
        action: str,
        now: dt.datetime,
    ) -> None:
        metadata = regarding["metadata"]
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{metadata['name']}.{secrets.token_hex(8)}",
                "namespace": metadata["namespace"],
                "labels": {"app.kubernetes.io/managed-by": "agentid-operator"},
            },
            "eventTime": micro_time(now),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "type": type_,
            "note": note[:NOTE_MAX],
            "regarding": {
                "apiVersion": regarding.get("apiVersion", ""),
                "kind": regarding.get("kind", ""),
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid", ""),
            },
        }
        try:
            await self.client.create(resources.EVENTS, event, namespace=metadata["namespace"])
        except errors.ApiError as error:
            logger.warning(
                "could not post Event %s for %s/%s: %s", reason, metadata["namespace"], metadata["name"], error
            )
