"""The operator under test: in-process (a thread running exactly what `agentid run` runs) or as a process."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from agentid.domain.podidentity import InjectionSettings
from agentid.domain.settings import OperatorSettings, Timings
from agentid.domain.shards import ElectionSettings, ElectionTimings
from agentid.handlers.runtime import OperatorConfig, WebhookConfig, run_operator

# A long resync, so every prompt behaviour a test sees is proven by its event (a watch event, a policy or namespace
# change, a timer the pass set), never by a periodic pass; a short key overlap so key retirement is observable
# within a test's deadline.
TEST_TIMINGS = Timings(
    resync_interval=dt.timedelta(hours=1),
    resync_jitter=dt.timedelta(seconds=1),
    key_overlap_allowance=dt.timedelta(seconds=2),
)


# The agent-side libraries run in the test process too (the sidecar, the SDK): their errors are what a test
# provoked on purpose, not operator failures.
AGENT_SIDE = ("agentid.sidecar", "agentid.client")


class LogCapture(logging.Handler):
    """Every log line of the process, formatted: scanned by tests for key material."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.errors: list[str] = []  # handler failures: the session fails if any occurred
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        denial = record.getMessage().startswith("Webhook ")  # an admission denial: the expected kind of "error"
        operator = record.name.startswith(("kopf.objects", "agentid")) and not record.name.startswith(AGENT_SIDE)
        if record.levelno >= logging.ERROR and operator and not denial:
            self.errors.append(self.format(record))


class OperatorThread:
    """Runs ``run_operator`` in a thread with its own event loop; ``stop()`` is a clean Kopf shutdown."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespaces: Sequence[str],
        timings: Timings = TEST_TIMINGS,
        webhook: WebhookConfig | None = None,
        pod_identity: InjectionSettings | None = None,
        election: ElectionSettings | None = None,
        instance: str | None = None,
    ) -> None:
        config = OperatorConfig(
            kubeconfig=str(kubeconfig),
            namespaces=tuple(namespaces),
            all_namespaces=False,
            settings=OperatorSettings(timings=timings),
            webhook=webhook,
            pod_identity=pod_identity,
            election=election,
        )
        # ``instance`` names it in Leases and its User-Agent (default: POD_NAME or the host name)
        self.config = dataclasses.replace(config, instance=instance) if instance else config
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agentid-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(run_operator(self.config, stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread by start()/stop()
            self._error = error
            self._ready.set()

    def start(self, timeout: float = 60) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the operator did not become ready")
        if self._error is not None:
            raise RuntimeError("the operator failed to start") from self._error
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the operator did not stop")
        if self._error is not None:
            raise RuntimeError("the operator crashed") from self._error


class OperatorProcess:
    """`agentid run` as a real process (killable at any moment, for crash-consistency tests). ``instance`` is its
    POD_NAME: it names the process in Leases, Events and its User-Agent (the apiserver's audit log)."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespaces: Sequence[str],
        log_path: Path,
        extra_args: Sequence[str] = (),
        instance: str | None = None,
        resync_seconds: float = 5,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "agentid",
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--resync-seconds={resync_seconds:g}",
            "--key-overlap-seconds=2",
            *extra_args,
        ]
        argv += [f"--namespace={pattern}" for pattern in namespaces]
        self.log_path = log_path
        self.instance = instance
        self._log = log_path.open("ab")
        env = dict(os.environ, POD_NAME=instance) if instance else None
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    @property
    def user_agent(self) -> str:
        """How its requests appear in the audit log (``agentid-operator/<version> (<instance>)``)."""
        return f"({self.instance})"

    def terminate(self) -> None:
        """SIGTERM, as the kubelet sends on a rollout or drain; returns at once (``stop`` waits)."""
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown — a crash."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


# Short Lease timings for tests: a crashed holder's Lease is free after 3 s (the chart keeps client-go's 15/10/2).
FAST_LEASES = ElectionTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)


def elected_operator(
    kubeconfig: Path,
    *,
    namespaces: Sequence[str],
    lease_namespace: str,
    instance: str,
    log_dir: Path,
    shards: int = 1,
    timings: ElectionTimings = FAST_LEASES,
    extra_args: Sequence[str] = (),
) -> OperatorProcess:
    """One replica of an operator Deployment: `agentid run --leader-election` as its own process, with the test
    resync (an hour: every pass a test sees was caused by an event or a Lease acquired)."""
    return OperatorProcess(
        kubeconfig,
        namespaces=namespaces,
        log_path=log_dir / f"{instance}.log",
        instance=instance,
        resync_seconds=TEST_TIMINGS.resync_interval.total_seconds(),
        extra_args=[
            "--leader-election",
            f"--leader-election-namespace={lease_namespace}",
            f"--shards={shards}",
            f"--lease-duration={timings.lease_duration:g}",
            f"--renew-deadline={timings.renew_deadline:g}",
            f"--retry-period={timings.retry_period:g}",
            *extra_args,
        ],
    )
