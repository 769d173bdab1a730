"""The token service under test, and agents provisioned for it.

Session fixtures: ``token_service`` (the service in a thread, with the port, certificate and issuer the session
apiserver trusts, see ``cluster_setup.configure_token_issuer``) and ``apiserver_trusts_issuer`` (waits until the
apiserver authenticates agent tokens). ``provision`` creates an AgentIdentity in a namespace the session operator
watches and waits until the operator has provisioned it (ServiceAccount, key Secret, status).
The fixtures are registered once for the whole run through ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import kubernetes
import pytest
import requests

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.devcluster import pki
from agentid.domain import claims, keys, naming
from agentid.kube.client import KubeClient
from agentid.tokens.service import FIELD_MANAGER, TokenService
from agentid.tokens.settings import TLS, TokenServiceSettings
from tests.support.agents import Agent, create_agent
from tests.support.cluster_setup import KUBE_AUDIENCE, TokenServiceEndpoint, reserved_port
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually

# The one-line switch: True once the session operator provisions agents (issue 3). Then `provision` waits for
# Ready instead of writing ServiceAccount, key Secret and status itself, in namespaces the operator watches.

SERVICE_NAMESPACE = "agentid-system"
TRUST_DOMAIN = "cluster.local"
MCP = "https://mcp.example"


# -- the service ---------------------------------------------------------------------------------------------------


class TokenServiceThread:
    """``TokenService`` on its own event loop in a thread (what ``agentid serve`` runs, minus the CLI)."""

    def __init__(self, settings: TokenServiceSettings, kubeconfig: Path) -> None:
        self.settings = settings
        self.kubeconfig = kubeconfig
        self.service: TokenService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agentid-token-service", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - surfaced in the test thread by start()
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = await KubeClient.connect(str(self.kubeconfig), field_manager=FIELD_MANAGER)
        self.service = TokenService(self.settings, client)
        try:
            await self.service.start()
            async with asyncio.timeout(60):
                await self.service.wait_ready()
            self._ready.set()
            await self._stop.wait()
        finally:
            await self.service.stop()
            await client.close()

    def start(self, timeout: float = 90) -> TokenServiceThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the token service did not become ready")
        if self._error is not None:
            raise RuntimeError("the token service failed to start") from self._error
        return self

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the service's loop (e.g. a keyring rotation) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


@dataclass
class TokenServiceHandle:
    """The running service and an HTTP client for it (TLS verified against the cluster CA)."""

    endpoint: TokenServiceEndpoint
    thread: TokenServiceThread
    session: requests.Session = field(default_factory=requests.Session)
    caller_token: str | None = None  # a tool's ServiceAccount token: introspection requires client authentication

    @property
    def issuer(self) -> str:
        return self.endpoint.issuer

    @property
    def service(self) -> TokenService:
        assert self.thread.service is not None
        return self.thread.service

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.issuer + path, verify=self.endpoint.ca, timeout=30)

    def post(self, path: str, data: Any, **kwargs: Any) -> requests.Response:
        return self.session.post(self.issuer + path, data=data, verify=self.endpoint.ca, timeout=30, **kwargs)

    def exchange(self, subject_token: str, **params: Any) -> requests.Response:
        form = {
            "grant_type": claims.GRANT_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": claims.TOKEN_TYPE_JWT,
            **params,
        }
        return self.post("/token", form)

    def token(self, subject_token: str, **params: Any) -> str:
        """Exchange and insist on success; the agent token."""
        response = self.exchange(subject_token, **params)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def delegate(self, agent_token: str, actor_token: str, **params: Any) -> requests.Response:
        """Exchange an agent token (handed over to an actor) together with the actor's own token: an `act` chain."""
        return self.exchange(
            agent_token,
            subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN,
            actor_token=actor_token,
            actor_token_type=claims.TOKEN_TYPE_JWT,
            **params,
        )

    def delegated(self, agent_token: str, actor_token: str, **params: Any) -> str:
        """``delegate`` and insist on success; the delegated agent token."""
        response = self.delegate(agent_token, actor_token, **params)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def introspect(self, token: str) -> dict[str, Any]:
        assert self.caller_token is not None, "the handle has no introspection caller"
        response = self.post("/introspect", {"token": token}, headers={"Authorization": f"Bearer {self.caller_token}"})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def session_endpoint(cluster: ClusterHandle) -> TokenServiceEndpoint:
    """The endpoint the session apiserver was configured for, or (external cluster) a fresh untrusted one."""
    if cluster.local is not None:
        endpoint = TokenServiceEndpoint.load(cluster.local.workdir)
        if endpoint is not None:
            return endpoint
    return fresh_endpoint()


def fresh_endpoint() -> TokenServiceEndpoint:
    """A free port and a certificate from a new CA: for extra services the apiserver need not trust."""
    folder = Path(tempfile.mkdtemp(prefix="agentid-tokens-"))
    ca = pki.CertificateAuthority(folder)
    serving = ca.serving("token-service", "127.0.0.1", "localhost")
    return TokenServiceEndpoint(
        port=reserved_port(),
        cert=str(serving.cert),
        key=str(serving.key),
        ca=str(ca.cert_path),
        trusted_by_apiserver=False,
    )


def tool_service_account_token(cluster: ClusterHandle, issuer: str, name: str = "tool") -> str:
    """The token a tool running as ServiceAccount ``agentid-system/<name>`` authenticates to introspection with."""
    ensure_namespace(cluster, SERVICE_NAMESPACE)
    core = kubernetes.client.CoreV1Api(cluster.admin())
    try:
        core.create_namespaced_service_account(SERVICE_NAMESPACE, {"metadata": {"name": name}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    request = {"spec": {"audiences": [issuer], "expirationSeconds": 24 * 3600}}  # outlives any test session
    return str(core.create_namespaced_service_account_token(name, SERVICE_NAMESPACE, request).status.token)


def ensure_namespace(cluster: ClusterHandle, name: str) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    try:
        core.create_namespace({"metadata": {"name": name}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise


def start_token_service(cluster: ClusterHandle, endpoint: TokenServiceEndpoint, **overrides: Any) -> TokenServiceThread:
    ensure_namespace(cluster, SERVICE_NAMESPACE)
    settings = TokenServiceSettings(
        issuer=endpoint.issuer,
        port=endpoint.port,
        tls=TLS(Path(endpoint.cert), Path(endpoint.key)),
        namespace=SERVICE_NAMESPACE,
        **overrides,
    )
    return TokenServiceThread(settings, cluster.kubeconfig).start()


@pytest.fixture(scope="session", name="token_service")
def token_service_fixture(cluster: ClusterHandle, crds: None) -> Iterator[TokenServiceHandle]:
    """One token service for the session (this module is a pytest plugin: see ``pytest_plugins`` in conftest)."""
    endpoint = session_endpoint(cluster)
    handle = TokenServiceHandle(endpoint, start_token_service(cluster, endpoint))
    handle.caller_token = tool_service_account_token(cluster, handle.issuer)
    yield handle
    handle.session.close()
    handle.thread.stop()


@pytest.fixture(scope="session", name="apiserver_trusts_issuer")
def apiserver_trusts_issuer_fixture(cluster: ClusterHandle, token_service: TokenServiceHandle) -> None:
    """Wait until kube-apiserver authenticates tokens of our issuer (it retries discovery on its own schedule)."""
    if not token_service.endpoint.trusted_by_apiserver:
        pytest.skip("the cluster under test was not configured with the token service's issuer")
    signing = token_service.service.keyring.signing_key()
    now = int(dt.datetime.now(dt.UTC).timestamp())
    probe = jwt.encode(
        {
            "iss": token_service.issuer,
            "sub": "spiffe://probe",
            "aud": KUBE_AUDIENCE,
            "exp": now + 300,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
            "agent": {
                "namespace": "probe",
                "name": "probe",
                "uid": "probe",
                "owner": {"kind": "User", "name": "t"},
                "supervision": "Supervised",
                "attributes": {},
            },
        },
        signing.private_key,
        algorithm=signing.jws_algorithm,
        headers={"kid": signing.key_id},
    )
    eventually(lambda: whoami(cluster, probe) is not None, timeout=90, what="apiserver accepts agent tokens")


def whoami(cluster: ClusterHandle, token: str) -> dict[str, Any] | None:
    """SelfSubjectReview with ``token``: the user info, or None when the apiserver does not authenticate it."""
    api = kubernetes.client.AuthenticationV1Api(cluster.with_token(token))
    try:
        review = api.create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    except kubernetes.client.ApiException as error:
        if error.status == 401:
            return None
        raise
    user: dict[str, Any] = review.status.user_info.to_dict()
    return user


@pytest.fixture(name="token_namespace")
def token_namespace_fixture(request: pytest.FixtureRequest) -> str:
    """Where ``provision`` creates agents: a namespace the session operator watches."""
    return str(request.getfixturevalue("agent_namespace"))


# -- agents --------------------------------------------------------------------------------------------------------


@dataclass
class ProvisionedAgent:
    agent: Agent

    @property
    def cluster(self) -> ClusterHandle:
        return self.agent.cluster

    @property
    def namespace(self) -> str:
        return self.agent.namespace

    @property
    def name(self) -> str:
        return self.agent.name

    def body(self) -> dict[str, Any]:
        return self.agent.body()

    @property
    def uid(self) -> str:
        return str(self.body()["metadata"]["uid"])

    @property
    def agent_id(self) -> str:
        return str(self.agent.status()["agentID"])

    def patch_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.agent.patch_spec(spec)

    def service_account_token(self, audience: str, seconds: int = 600) -> str:
        """A ServiceAccount token for ``audience`` (the token service's issuer), minted by TokenRequest."""
        core = kubernetes.client.CoreV1Api(self.cluster.admin())
        request = {"spec": {"audiences": [audience], "expirationSeconds": seconds}}
        response = core.create_namespaced_service_account_token(
            naming.service_account(self.name), self.namespace, request
        )
        return str(response.status.token)

    def signing_key(self) -> keys.SigningKey:
        """The agent's private key, from its key Secret (as a workload mounting it would read it)."""
        core = kubernetes.client.CoreV1Api(self.cluster.admin())
        secret = core.read_namespaced_secret(naming.key_secret(self.name), self.namespace)
        data = secret.data or {}
        algorithm = KeyAlgorithm(base64.b64decode(data[naming.KEY_SECRET_ALGORITHM]).decode())
        return keys.load_pem(base64.b64decode(data[naming.KEY_SECRET_PRIVATE_KEY]), algorithm)

    def assertion(self, audience: str, *, lifetime: int = 60, **extra: Any) -> str:
        """An RFC 7523 assertion signed with the agent's own key."""
        key = self.signing_key()
        now = int(dt.datetime.now(dt.UTC).timestamp())
        payload = {
            "iss": self.agent_id,
            "sub": self.agent_id,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        return jwt.encode(payload, key.private_key, algorithm=key.jws_algorithm, headers={"kid": key.key_id})


def provision(cluster: ClusterHandle, namespace: str, name: str, **spec: Any) -> ProvisionedAgent:
    """An AgentIdentity, provisioned by the operator (ServiceAccount, key Secret, status) and Ready."""
    agent = create_agent(cluster, namespace, name, **spec)
    agent.wait_ready()
    return ProvisionedAgent(agent)


def provisioned(
    cluster: ClusterHandle, service: TokenServiceHandle, namespace: str, name: str, **spec: Any
) -> ProvisionedAgent:
    """``provision``, then wait until the token service's watch has seen the agent's status."""
    agent = provision(cluster, namespace, name, **spec)
    wait_known(service, agent)
    return agent


def wait_known(service: TokenServiceHandle, agent: ProvisionedAgent) -> None:
    """Until the service's watches have seen the agent's status and its ServiceAccount (provisioning is
    asynchronous to the service)."""
    eventually(
        lambda: (
            (known := service.service.agents.get(agent.namespace, agent.name)) is not None
            and known.status.agent_id is not None
            and bool(service.service.accounts.keys_of(known, dt.datetime.now(dt.UTC)))
        ),
        what=f"token service sees {agent.namespace}/{agent.name} and its ServiceAccount's keys",
    )
