"""``agentid serve|token|verify|whoami``: run the token service, and the three tools to try and debug it.

``serve`` runs the service in the foreground (``--print-authentication-config`` prints what kube-apiserver needs
instead); ``token`` performs an RFC 8693 exchange; ``verify`` checks a JWT against a JWKS and prints its claims
and delegation chain; ``whoami`` asks the apiserver who a credential is (SelfSubjectReview). Tokens read from
files or stdin are never echoed except the one ``token`` was asked to print.

The parsers need only the standard library; each command imports what it uses when it runs (``agentid --help``
stays fast).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentid.tokens.defaults import DEFAULT_NAMESPACE, DEFAULT_SECRET

if TYPE_CHECKING:
    import ssl

    from agentid.tokens.settings import TokenServiceSettings

HTTP_TIMEOUT = 30


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_serve(subparsers)
    _register_token(subparsers)
    _register_verify(subparsers)
    _register_whoami(subparsers)


def _register_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_parser = subparsers.add_parser("serve", help="run the agent token service (RFC 8693 exchange, JWKS)")
    serve_parser.add_argument("--issuer", required=True, help="issuer URL, exactly as tokens and discovery name it")
    serve_parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")  # noqa: S104
    serve_parser.add_argument("--port", type=int, default=8443)
    serve_parser.add_argument("--tls-cert", type=Path, help="serving certificate (PEM); required unless loopback")
    serve_parser.add_argument("--tls-key", type=Path, help="serving key (PEM)")
    serve_parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace of the issuer key Secret")
    serve_parser.add_argument("--secret-name", default=DEFAULT_SECRET, help="name of the issuer key Secret")
    serve_parser.add_argument(
        "--subject-audience",
        action="append",
        default=[],
        metavar="AUD",
        help="audience SA tokens must carry (repeatable; default: the issuer)",
    )
    serve_parser.add_argument(
        "--access-token-audience",
        action="append",
        default=[],
        metavar="AUD",
        help="mint tokens for this audience as RFC 9068 access tokens (typ at+jwt, client_id; repeatable)",
    )
    serve_parser.add_argument("--rotation-period", default="720h", help="how long one issuer key signs")
    serve_parser.add_argument("--rotation-lead", default="10m", help="how long a new key is published before use")
    serve_parser.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster, then $KUBECONFIG)")
    serve_parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    serve_parser.add_argument("--audit-log", metavar="PATH", help="write audit records here (default: stdout)")
    serve_parser.add_argument("--verbose", action="store_true", help="debug logging (never shows tokens or keys)")
    serve_parser.add_argument(
        "--log-format",
        choices=["plain", "full", "json"],
        default="full",
        help="log format; json is the operator's schema (message, timestamp, severity) so one parser reads both",
    )
    serve_parser.add_argument(
        "--print-authentication-config",
        action="store_true",
        help="print the apiserver AuthenticationConfiguration and exit",
    )
    serve_parser.add_argument(
        "--kube-audience",
        action="append",
        default=[],
        metavar="AUD",
        help="audience of agent tokens for the apiserver (config)",
    )
    serve_parser.add_argument("--ca-file", type=Path, help="CA the apiserver should trust the issuer with")
    serve_parser.add_argument(
        "--trust-domain", default="cluster.local", help="trust domain of agent IDs (the operator's --trust-domain)"
    )
    serve_parser.set_defaults(func=serve_command)


def _register_token(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = subparsers.add_parser("token", help="exchange a ServiceAccount (or agent) token for an agent token")
    token.add_argument("--issuer", required=True, help="the token service's issuer URL")
    source = token.add_mutually_exclusive_group(required=True)
    source.add_argument("--subject-token", metavar="FILE", help="file holding the subject token ('-' for stdin)")
    source.add_argument(
        "--agent", metavar="NAMESPACE/NAME", help="mint the agent's ServiceAccount token (TokenRequest)"
    )
    token.add_argument("--actor-token", metavar="FILE", help="file holding the actor's token (delegation)")
    token.add_argument("--audience", action="append", default=[], help="requested audience (repeatable)")
    token.add_argument("--expires-in", type=int, help="requested lifetime in seconds (at most the agent's tokenTTL)")
    token.add_argument("--cacert", type=Path, help="CA bundle to trust the token service with")
    token.add_argument("--kubeconfig", help="kubeconfig for --agent")
    token.add_argument("-o", "--output", choices=["token", "json", "claims"], default="token")
    token.set_defaults(func=token_command)


def _register_verify(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = subparsers.add_parser("verify", help="verify an agent token and print its claims and delegation chain")
    verify.add_argument("jwt", help="the token, or '-' to read it from stdin")
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--jwks-url", help="JWKS to verify against")
    where.add_argument("--issuer", help="issuer URL (JWKS found through its discovery document; iss checked)")
    verify.add_argument("--audience", action="append", default=None, help="require one of these audiences")
    verify.add_argument("--cacert", type=Path, help="CA bundle to trust the JWKS server with")
    verify.set_defaults(func=verify_command)


def _register_whoami(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    whoami = subparsers.add_parser("whoami", help="ask the apiserver who a credential is (SelfSubjectReview)")
    whoami.add_argument("--token", metavar="FILE", help="authenticate with the token in FILE ('-' for stdin)")
    whoami.add_argument("--kubeconfig", help="kubeconfig (server and CA; its credentials unless --token)")
    whoami.add_argument("-o", "--output", choices=["text", "json"], default="text")
    whoami.set_defaults(func=whoami_command)


# -- serve ----------------------------------------------------------------------------------------------------------


def serve_settings(args: argparse.Namespace) -> TokenServiceSettings:
    from agentid.api.durations import parse as parse_duration
    from agentid.domain.issuer_keys import RotationPolicy
    from agentid.tokens.settings import TLS, Limits, TokenServiceSettings

    issuer = args.issuer.rstrip("/")
    tls = TLS(args.tls_cert, args.tls_key) if args.tls_cert and args.tls_key else None
    return TokenServiceSettings(
        issuer=issuer,
        host=args.host,
        port=args.port,
        tls=tls,
        namespace=args.namespace,
        secret_name=args.secret_name,
        subject_audiences=tuple(args.subject_audience),
        access_token_audiences=tuple(args.access_token_audience),
        rotation=RotationPolicy(period=parse_duration(args.rotation_period), lead=parse_duration(args.rotation_lead)),
        limits=Limits(),
        trust_domain=args.trust_domain,
    )


def serve_command(args: argparse.Namespace) -> int:
    import asyncio

    import kopf
    import yaml

    from agentid import audit, metrics
    from agentid.tokens import authnconfig
    from agentid.tokens.service import lean_log_records

    settings = serve_settings(args)
    if args.print_authentication_config:
        ca_pem = args.ca_file.read_text() if args.ca_file else None
        audiences = args.kube_audience or [authnconfig.DEFAULT_KUBE_AUDIENCE]
        config = authnconfig.authentication_configuration(settings.issuer, audiences=audiences, ca_pem=ca_pem)
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    problem = settings.tls_problem()
    if problem is not None:
        print(f"{problem} (--tls-cert/--tls-key)", file=sys.stderr)
        return 2
    # Kopf's log configuration, as `agentid run` uses it: the operator and the token service log one schema.
    kopf.configure(debug=args.verbose, verbose=True, log_format=kopf.LogFormat[args.log_format.upper()])
    audit.configure(args.audit_log)
    lean_log_records()
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port)
    return int(asyncio.run(_serve_until_signal(settings, args.kubeconfig)))


async def _serve_until_signal(settings: TokenServiceSettings, kubeconfig: str | None) -> int:
    import asyncio
    import contextlib
    import signal

    from agentid.tokens.service import serve

    task = asyncio.create_task(serve(settings, kubeconfig=kubeconfig))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0


# -- token ----------------------------------------------------------------------------------------------------------


def token_command(args: argparse.Namespace) -> int:
    import asyncio

    from agentid.domain import claims
    from agentid.tokens import verification

    issuer = args.issuer.rstrip("/")
    if args.agent:
        namespace, _, name = args.agent.partition("/")
        subject = asyncio.run(_mint_service_account_token(namespace, name, issuer, args.kubeconfig))
    else:
        subject = _read_secret_input(args.subject_token)
    form: list[tuple[str, str]] = [
        ("grant_type", claims.GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", claims.TOKEN_TYPE_JWT),
    ]
    form += [("audience", audience) for audience in args.audience]
    if args.actor_token:
        form += [("actor_token", _read_secret_input(args.actor_token)), ("actor_token_type", claims.TOKEN_TYPE_JWT)]
    if args.expires_in is not None:
        form.append(("expires_in", str(args.expires_in)))
    status, body = _post_form(f"{issuer}/token", form, args.cacert)
    if status != 200:
        print(f"refused ({status}): {body.get('error')}: {body.get('error_description', '')}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(body, indent=2))
    elif args.output == "claims":
        print(json.dumps(verification.unverified_claims(body["access_token"], 1 << 20), indent=2))
    else:
        print(body["access_token"])
    return 0


async def _mint_service_account_token(namespace: str, name: str, audience: str, kubeconfig: str | None) -> str:
    from agentid.domain import naming
    from agentid.kube.client import KubeClient
    from agentid.kube.resources import SERVICE_ACCOUNTS
    from agentid.tokens.service import FIELD_MANAGER

    client = await KubeClient.connect(kubeconfig, field_manager=FIELD_MANAGER)
    try:
        response = await client.request(
            "POST",
            SERVICE_ACCOUNTS.path(namespace, naming.service_account(name), "token"),
            body={"spec": {"audiences": [audience], "expirationSeconds": 600}},
        )
    finally:
        await client.close()
    return str(response["status"]["token"])


# -- verify ---------------------------------------------------------------------------------------------------------


def verify_command(args: argparse.Namespace) -> int:
    import datetime as dt

    from agentid.domain import claims
    from agentid.domain.claims import Refused
    from agentid.tokens import verification
    from agentid.tokens.settings import Limits

    token = sys.stdin.read().strip() if args.jwt == "-" else args.jwt.strip()
    jwks_url = args.jwks_url
    if jwks_url is None:
        discovery = _get_json(f"{args.issuer.rstrip('/')}/.well-known/openid-configuration", args.cacert)
        jwks_url = str(discovery["jwks_uri"])
    jwks = _get_json(jwks_url, args.cacert)
    try:
        header = verification.header_of(token, Limits().max_token_bytes)
        key = next((k for k in jwks.get("keys", []) if k.get("kid") == header["kid"]), None)
        if key is None:
            raise claims.invalid_token()
        verified = verification.verify(
            token,
            None,
            public_jwk=key,
            issuer=args.issuer.rstrip("/") if args.issuer else None,
            audience=args.audience,
            required=("exp", "iat", "iss", "sub", "jti"),
            max_bytes=Limits().max_token_bytes,
        )
        chain = claims.act_chain(verified.claims.get("act"))
    except Refused:
        print("INVALID: the token does not verify against this JWKS (signature, key, time or claims)", file=sys.stderr)
        return 1
    payload = verified.claims
    print(f"VALID: signed by key {verified.key_id}")
    for name in ("iss", "sub", "aud", "jti"):
        print(f"{name}: {payload.get(name)}")
    for name in ("iat", "nbf", "exp"):
        if isinstance(payload.get(name), int):
            print(f"{name}: {dt.datetime.fromtimestamp(payload[name], dt.UTC).isoformat()}")
    agent = payload.get("agent")
    if isinstance(agent, dict):
        owner = agent.get("owner") or {}
        print(f"agent: {agent.get('namespace')}/{agent.get('name')} (uid {agent.get('uid')})")
        print(f"owner: {owner.get('kind')} {owner.get('name')}")
        print(f"supervision: {agent.get('supervision')}")
        if agent.get("attributes"):
            print(f"attributes: {json.dumps(agent['attributes'], sort_keys=True)}")
    print("delegation: " + (" <- ".join([str(payload["sub"]), *(link.sub for link in chain)]) if chain else "none"))
    print(json.dumps(payload, indent=2, sort_keys=True))
    return 0


# -- whoami ---------------------------------------------------------------------------------------------------------


def whoami_command(args: argparse.Namespace) -> int:
    import asyncio

    token = _read_secret_input(args.token) if args.token else None
    user = asyncio.run(_self_subject_review(args.kubeconfig, token))
    if args.output == "json":
        print(json.dumps(user, indent=2, sort_keys=True))
        return 0
    print(f"username: {user.get('username')}")
    if user.get("uid"):
        print(f"uid: {user['uid']}")
    print(f"groups: {', '.join(user.get('groups') or [])}")
    for key, values in sorted((user.get("extra") or {}).items()):
        print(f"extra {key}: {', '.join(values)}")
    return 0


async def _self_subject_review(kubeconfig: str | None, token: str | None) -> dict[str, Any]:
    from agentid.kube.client import KubeClient, load_configuration
    from agentid.kube.resources import SELF_SUBJECT_REVIEWS
    from agentid.tokens.service import FIELD_MANAGER

    configuration = await load_configuration(kubeconfig)
    if token is not None:  # this credential only: drop client certificates and other auth of the kubeconfig
        configuration.cert_file = None
        configuration.key_file = None
        configuration.refresh_api_key_hook = None
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
    client = KubeClient(configuration, field_manager=FIELD_MANAGER)
    try:
        status = await client.create_review(SELF_SUBJECT_REVIEWS, {})
    finally:
        await client.close()
    user = status.get("userInfo")
    return user if isinstance(user, dict) else {}


# -- helpers --------------------------------------------------------------------------------------------------------


def _read_secret_input(source: str) -> str:
    return (sys.stdin.read() if source == "-" else Path(source).read_text()).strip()


def _ssl_context(cacert: Path | None) -> ssl.SSLContext:
    import ssl

    return ssl.create_default_context(cafile=str(cacert) if cacert else None)


def _get_json(url: str, cacert: Path | None) -> dict[str, Any]:
    import urllib.request

    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - https/http only
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=_ssl_context(cacert)) as response:  # noqa: S310
        document = json.loads(response.read())
    return document if isinstance(document, dict) else {}


def _post_form(url: str, form: list[tuple[str, str]], cacert: Path | None) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(  # noqa: S310 - the issuer URL the user named
        url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=_ssl_context(cacert)) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read())
        except ValueError:
            body = {"error": error.reason}
        return int(error.code), body if isinstance(body, dict) else {}
