"""Kopf registrations of the operator: thin functions that unpack Kopf's arguments and await one call.

Built into an explicit registry by ``agentid.handlers.runtime`` (``agentid run`` and the tests use the same
function). Kopf serves admission, the probes and the operator's lifecycle (startup starts the operator's own
watches and controller, cleanup stops them); every watch and every reconcile pass is ``agentid.reconcile``'s (plain
list+watch and one work queue: at thousands of agents Kopf's per-object machinery dominated memory and CPU).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from agentid.api import v1alpha1
from agentid.domain import podidentity
from agentid.handlers.state import Runtime
from agentid.webhooks import admission, configuration

AGENTS = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
POLICIES = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL)
logger = logging.getLogger(__name__)


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)  # noqa: S101 - wiring invariant, set by runtime.run_operator
    return runtime


def register(registry: kopf.OperatorRegistry) -> None:
    """Register every handler of the operator into ``registry``."""

    @kopf.on.login(registry=registry)
    async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
        return _runtime(memo).connection_info()

    @kopf.on.startup(registry=registry)
    async def startup(memo: kopf.Memo, **_: Any) -> None:
        runtime = _runtime(memo)
        runtime.start_background_tasks()
        await runtime.synced()  # ready (and admitting) once the operator's view is complete
        logger.info("view listed: %d agentidentities; ready", len(runtime.view.indexes.agents))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await _runtime(memo).stop_background_tasks()

    @kopf.on.probe(id="agents", registry=registry)
    async def agents_probe(memo: kopf.Memo, **_: Any) -> int:
        return len(_runtime(memo).view.indexes.agents)


def register_admission(registry: kopf.OperatorRegistry) -> None:
    """Admission handlers (only with a webhook server: Kopf refuses handlers it cannot serve)."""

    @kopf.on.mutate(*AGENTS, id=configuration.MUTATE_AGENT_PATH, operations=["CREATE", "UPDATE"], registry=registry)
    async def attribute(body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        admission_ = _runtime(memo).admission
        stamped = await admission_.annotations(body=body, old=kwargs.get("old"), userinfo=userinfo)
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(stamped)
        finalizers = admission_.finalizers(body=body, old=kwargs.get("old"))
        if finalizers is not None:
            patch["metadata"]["finalizers"] = finalizers

    @kopf.on.validate(*AGENTS, id=configuration.VALIDATE_AGENT_PATH, operations=["CREATE", "UPDATE"], registry=registry)
    async def validate_agent(
        body: kopf.Body, userinfo: kopf.UserInfo, warnings: list[str], memo: Any, **kwargs: Any
    ) -> None:
        try:
            await _runtime(memo).admission.validate(
                body=body, old=kwargs.get("old"), userinfo=userinfo, warnings=warnings
            )
        except admission.Denied as denied:
            raise kopf.AdmissionError(str(denied), code=403) from None

    @kopf.on.validate(
        *POLICIES, id=configuration.VALIDATE_POLICY_PATH, operations=["CREATE", "UPDATE"], registry=registry
    )
    async def validate_policy(body: kopf.Body, **_: Any) -> None:
        try:
            admission.validate_policy(body)
        except admission.Denied as denied:
            raise kopf.AdmissionError(str(denied), code=422) from None


def register_pod_identity(registry: kopf.OperatorRegistry) -> None:
    """Identity injection into Pods labelled ``agentid.dev/agent`` (only with a webhook server)."""

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id=configuration.MUTATE_POD_PATH,
        operations=["CREATE"],
        labels={podidentity.LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def inject_identity(
        body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, warnings: list[str], memo: Any, **_: Any
    ) -> None:
        pods = _runtime(memo).pods
        assert pods is not None  # noqa: S101 - registered only when injection is configured
        try:
            injection = await pods.inject(body, namespace=body.metadata.namespace or "", userinfo=userinfo)
        except podidentity.Refusal as refusal:
            raise kopf.AdmissionError(str(refusal), code=403) from None
        warnings.extend(injection.warnings)
        patch.fns.append(lambda raw: _replace(raw, injection.pod))


def _replace(raw: Any, pod: dict[str, Any]) -> None:
    """Kopf diffs the body before and after its patch functions into the JSON patch it answers with."""
    raw.clear()
    raw.update(pod)
