"""The operator under test: in-process (a thread running exactly what `agentid run` runs) or as a process."""

from __future__ import annotations

import asyncio
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
from agentid.handlers.runtime import OperatorConfig, WebhookConfig, run_operator

# Short resync and key overlap so drift repair and key retirement are observable within a test's deadline.
TEST_TIMINGS = Timings(
    resync_interval=dt.timedelta(seconds=5),
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
    ) -> None:
        self.config = OperatorConfig(
            kubeconfig=str(kubeconfig),
            namespaces=tuple(namespaces),
            all_namespaces=False,
            settings=OperatorSettings(timings=timings),
            webhook=webhook,
            pod_identity=pod_identity,
        )
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
    """`agentid run` as a real process (killable at any moment, for crash-consistency tests)."""

    def __init__(
        self, kubeconfig: Path, *, namespaces: Sequence[str], log_path: Path, extra_args: Sequence[str] = ()
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "agentid",
            "run",
            f"--kubeconfig={kubeconfig}",
            "--resync-seconds=5",
            "--key-overlap-seconds=2",
            *extra_args,
        ]
        argv += [f"--namespace={pattern}" for pattern in namespaces]
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown — a crash."""
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
