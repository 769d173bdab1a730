"""AgentIdentity v1alpha1: the user-facing contract (../shared/design/api.md), as pydantic models.

Everything that reads an AgentIdentity goes through ``AgentIdentity.from_body`` (the reconciler, the admission
webhook, the token service, the CLI), so the spec is parsed in exactly one place. The CRD in ``crds/`` is
generated from these models by ``agentid.api.crdgen``: limits and CEL rules written here are enforced by the
apiserver before the operator ever sees an object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agentid.api.durations import DurationRange, parse
from agentid.api.timestamps import Timestamp

GROUP = "agentid.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AgentIdentity"
PLURAL = "agentidentities"

READ_VERBS = frozenset({"get", "list", "watch"})

# Limits: every string and list is bounded so a hostile manifest is refused by the apiserver, not by us.
NAME_MAX = 253
TEXT_MAX = 1024
PURPOSE_MAX = 512
ATTRIBUTES_MAX = 32
ATTRIBUTE_VALUE_MAX = 256
RULES_MAX = 64
CLUSTER_ROLE_REFS_MAX = 16
AUDIENCES_MAX = 16
ACTORS_MAX = 16
AGENT_NAME_MAX = 63  # the agent's name is a label value (agentid.dev/agent) and part of child names

ShortText = Annotated[str, Field(max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]


# Conditions are a map keyed by type (Kubernetes API conventions): server-side apply merges them per type.
CONDITIONS_LIST = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def _rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in pairs]}


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused (the schema is strict too)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, use_attribute_docstrings=True
    )


class SupervisionMode(StrEnum):
    AUTONOMOUS = "Autonomous"
    SUPERVISED = "Supervised"
    SUSPENDED = "Suspended"


class KeyAlgorithm(StrEnum):
    ED25519 = "Ed25519"
    ES256 = "ES256"
    RS256 = "RS256"


class Phase(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    SUPERVISED = "Supervised"
    SUSPENDED = "Suspended"
    REVOKED = "Revoked"
    EXPIRED = "Expired"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.REVOKED, Phase.EXPIRED)


class Owner(ApiModel):
    """The accountable human (or group): every token and event names them."""

    kind: Literal["User", "Group"] = "User"
    """Whether the owner is one person (User) or a team (Group)."""
    name: Name
    """User or group name as the cluster's authenticator knows it (e.g. an OIDC email)."""


class AgentInfo(ApiModel):
    """The agent software, for people and audit records (descriptive: nothing is enforced from it)."""

    framework: ShortText | None = None
    """Agent framework, e.g. langgraph or crewai."""
    model: ShortText | None = None
    """Model the agent runs on, e.g. claude-sonnet-4."""
    version: ShortText | None = None
    """Version of the agent's own code or image."""


class Supervision(ApiModel):
    """How much of its declared access the agent holds right now (a human's switch, reversible)."""

    mode: SupervisionMode = SupervisionMode.SUPERVISED
    """Autonomous: everything declared is granted. Supervised: only get/list/watch and read-only ClusterRoles.
    Suspended: nothing (reversible)."""
    reason: Annotated[str, Field(max_length=TEXT_MAX)] | None = None
    """Why the mode is what it is; shown in status and Events."""


ApiGroup = Annotated[str, Field(max_length=NAME_MAX, pattern=r"^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")]
Resource = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=r"^[a-z0-9*][-a-z0-9.*]*(/[-a-z0-9.*]+)?$")]
Verb = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(\*|[a-z][a-zA-Z]*)$")]


class PolicyRule(ApiModel):
    """A namespaced RBAC rule for the agent. Wildcards are refused: an agent's access is always enumerated."""

    api_groups: Annotated[
        list[ApiGroup],
        Field(
            min_length=1,
            max_length=16,
            json_schema_extra=_rules(
                ("!self.exists(g, g == '*')", "apiGroups must not contain '*': name the API groups")
            ),
        ),
    ]
    """API groups of the resources ("" is the core group; no '*')."""
    resources: Annotated[
        list[Resource],
        Field(
            min_length=1,
            max_length=32,
            json_schema_extra=_rules(
                (
                    "!self.exists(r, r.contains('*'))",
                    "resources must not contain '*': list the resources the agent needs",
                )
            ),
        ),
    ]
    """Resources, optionally with a subresource (pods/log; no '*')."""
    verbs: Annotated[
        list[Verb],
        Field(
            min_length=1,
            max_length=16,
            json_schema_extra=_rules(
                ("!self.exists(v, v == '*')", "verbs must not contain '*': list the verbs the agent needs")
            ),
        ),
    ]
    """Verbs such as get, list, watch, create, update, patch, delete (no '*')."""
    resource_names: Annotated[list[Annotated[str, Field(min_length=1, max_length=NAME_MAX)]], Field(max_length=64)] = []
    """Restrict the rule to these object names (empty: every object of the resources)."""


# The grammar is a CEL rule of DurationRange (with its own message), not an OpenAPI pattern that reads "should match".
RotationPeriod = Annotated[
    str, Field(max_length=32), DurationRange(minimum=dt.timedelta(hours=1), maximum=dt.timedelta(days=366))
]
TokenTTL = Annotated[
    str, Field(max_length=32), DurationRange(minimum=dt.timedelta(seconds=10), maximum=dt.timedelta(hours=24))
]
Audience = Annotated[str, Field(min_length=1, max_length=512)]


class Credentials(ApiModel):
    """The agent's own signing key and the agent tokens issued to it."""

    key_algorithm: KeyAlgorithm = KeyAlgorithm.ED25519
    """Algorithm of the agent's own signing key (kept in its Secret)."""
    rotation_period: RotationPeriod = "720h"
    """How long one agent key is used before a new one replaces it (Go duration, 1h to 8784h)."""
    token_ttl: TokenTTL = Field(default="15m", alias="tokenTTL")
    """Longest lifetime of an agent token from the token service (Go duration, at most 24h)."""
    audiences: Annotated[list[Audience], Field(max_length=AUDIENCES_MAX)] = []
    """Audiences the agent may request tokens for (e.g. an MCP server URL, https://kubernetes.default.svc)."""

    @property
    def rotation(self) -> dt.timedelta:
        return parse(self.rotation_period)

    @property
    def ttl(self) -> dt.timedelta:
        return parse(self.token_ttl)


class ActorRef(ApiModel):
    """Another AgentIdentity, by name."""

    name: Annotated[str, Field(min_length=1, max_length=AGENT_NAME_MAX)]
    """Name of the other AgentIdentity."""
    namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """Its namespace (default: this agent's)."""

    def resolve(self, default_namespace: str) -> tuple[str, str]:
        return (self.namespace or default_namespace, self.name)


class Delegation(ApiModel):
    """Which agents may act on behalf of this one (RFC 8693 delegation, the act claim), and how deep."""

    allowed_actors: Annotated[list[ActorRef], Field(max_length=ACTORS_MAX)] = []
    """Agents that may act on behalf of this one (the act claim of delegated tokens)."""
    max_depth: Annotated[int, Field(ge=1, le=5)] = 1
    """Longest delegation chain accepted in this agent's tokens."""


AttributeValue = Annotated[str, Field(max_length=ATTRIBUTE_VALUE_MAX)]


class AgentIdentitySpec(ApiModel):
    """The agent as its owner declares it: purpose, owner, supervision, permissions, credentials, expiry."""

    display_name: Annotated[str, Field(max_length=NAME_MAX)] | None = None
    """Human-friendly name."""
    purpose: Annotated[str, Field(min_length=1, max_length=PURPOSE_MAX)]
    """What the agent is for, in a sentence (required; shown to reviewers and in audit records)."""
    owner: Owner
    """The accountable human or group: every token, Event and audit record names them."""
    agent: AgentInfo | None = None
    """The agent software: framework, model, version (descriptive)."""
    attributes: Annotated[
        dict[str, AttributeValue],
        Field(
            max_length=ATTRIBUTES_MAX,
            json_schema_extra=_rules(
                (
                    "self.all(k, k.size() <= 63 && k.matches('^[A-Za-z0-9][-A-Za-z0-9_.]*$'))",
                    "attribute keys must be 1-63 characters of letters, digits, '-', '_' or '.'",
                )
            ),
        ),
    ] = {}
    """Free key/value facts copied into token claims (at most 32; values up to 256 characters)."""
    supervision: Supervision = Supervision()
    """Supervision mode and why."""
    permissions: Annotated[list[PolicyRule], Field(max_length=RULES_MAX)] = []
    """Namespaced RBAC rules for the agent, as granted in Autonomous mode."""
    cluster_role_refs: Annotated[list[Name], Field(max_length=CLUSTER_ROLE_REFS_MAX)] = []
    """Existing ClusterRoles to bind in this namespace (a missing one gives Ready=False)."""
    credentials: Credentials = Credentials()
    """Key algorithm, key rotation, token lifetime and audiences."""
    delegation: Delegation = Delegation()
    """Which other agents may act on behalf of this one, and how deep."""
    expires_at: Timestamp | None = None
    """Automatic revocation at this time (RFC 3339); terminal."""
    revoked: bool = False
    """true revokes the agent for good: bindings, keys and ServiceAccount are removed; cannot be undone."""
    revocation_reason: Annotated[str, Field(max_length=TEXT_MAX)] | None = None
    """Why it was revoked; recorded in status, Events and audit records."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "!has(oldSelf.revoked) || !oldSelf.revoked || (has(self.revoked) && self.revoked)",
                "revoked is terminal: once true it can never be set back to false",
            )
        )
    )


class KeyState(StrEnum):
    ACTIVE = "Active"
    RETIRING = "Retiring"


class KeyStatus(ApiModel):
    """Public information about one of the agent's signing keys (never the private key)."""

    key_id: str = Field(alias="keyID", max_length=128)
    """The key's ID: its RFC 7638 JWK thumbprint, the kid of what it signs."""
    algorithm: KeyAlgorithm
    """Its algorithm."""
    created_at: dt.datetime
    """When it was generated."""
    state: KeyState
    """Active signs; Retiring is still published for verifiers until retiresAt, and signs nothing."""
    retires_at: dt.datetime | None = None
    """When a Retiring key is unpublished (after the last token it signed has expired)."""
    jwk: Annotated[dict[str, str], Field(max_length=16)]
    """The public key as a JWK (RFC 7517)."""


class Condition(ApiModel):
    """One aspect of the current state (metav1.Condition): Ready, CredentialsReady, AccessReady, Revoked."""

    type: Annotated[str, Field(max_length=316)]
    """The aspect, e.g. Ready (unique in the list)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)]
    """Why, as one CamelCase word for programs (docs/troubleshooting.md lists each)."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Why, in a sentence for people."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""
    last_transition_time: dt.datetime
    """When status last changed."""


class Attribution(ApiModel):
    """Who made a decision about the agent and when (recorded by the admission webhook from the request)."""

    username: Annotated[str, Field(max_length=NAME_MAX)]
    """Who, as the API server authenticated them."""
    groups: Annotated[list[Annotated[str, Field(max_length=NAME_MAX)]], Field(max_length=64)] = []
    """Their groups."""
    time: dt.datetime
    """When."""
    changes: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=16)] = []
    """What they changed: supervision, revocation, permissions, ..."""


class AgentIdentityStatus(ApiModel):
    """What the operator has put in force (written by the operator only; never an input)."""

    observed_generation: int | None = None
    """The spec generation this status describes (compare with metadata.generation)."""
    phase: Phase = Phase.PENDING
    """Lifecycle phase: Pending, Active, Supervised, Suspended, Failed; Revoked and Expired are terminal."""
    agent_id: str | None = Field(default=None, alias="agentID")
    """SPIFFE-style ID, spiffe://<trust domain>/ns/<namespace>/agent/<name>: the sub of the agent's tokens."""
    service_account_name: str | None = None
    """The agent's ServiceAccount (in the same namespace)."""
    service_account_uid: str | None = Field(default=None, alias="serviceAccountUID")
    """Its UID: identity is bound to it, so a recreated ServiceAccount is a different identity."""
    supervision: SupervisionMode | None = None
    """The supervision mode in force (a policy may hold it below the spec's)."""
    token_ttl: str | None = Field(default=None, alias="tokenTTL")
    """The agent token lifetime in force: the spec's, or a policy's lower maximum."""
    keys: list[KeyStatus] = []
    """Public information about the agent's signing keys (never private material)."""
    revoked_key_ids: list[str] = Field(default=[], alias="revokedKeyIDs")
    """Key IDs that must never be trusted again (revocation, a deleted key Secret)."""
    last_rotation_time: dt.datetime | None = None
    """When the active key was generated."""
    next_rotation_time: dt.datetime | None = None
    """When the next key replaces it."""
    granted_rules: int = 0
    """Number of RBAC rules in force for the current supervision mode."""
    granted_cluster_roles: list[str] = []
    """ClusterRoles bound in the namespace now (clusterRoleRefs minus those withheld)."""
    revoked_at: dt.datetime | None = None
    """When the operator saw the revocation (or expiry)."""
    revocation_reason: str | None = None
    """Why it was revoked or expired."""
    created_by: Attribution | None = None
    """Who created the agent (stamped by the admission webhook)."""
    last_changed_by: Attribution | None = None
    """Who last changed its supervision, revocation or permissions (stamped by the admission webhook)."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=CONDITIONS_LIST)] = []
    """Ready, CredentialsReady, AccessReady, Revoked (metav1.Condition, one per type)."""


class ObjectMeta(BaseModel):
    """The few metadata fields agentid reads (the rest is Kubernetes' business)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, alias_generator=to_camel)

    name: str
    namespace: str
    uid: str
    generation: int = 0
    resource_version: str | None = None
    creation_timestamp: dt.datetime | None = None
    deletion_timestamp: dt.datetime | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class AgentIdentity(BaseModel):
    """A parsed AgentIdentity: metadata, spec and (operator-written) status."""

    model_config = ConfigDict(frozen=True)

    KIND: ClassVar[str] = KIND
    metadata: ObjectMeta
    spec: AgentIdentitySpec
    status: AgentIdentityStatus = AgentIdentityStatus()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AgentIdentity:
        """Parse an object as served by the apiserver (or an admission request). Raises pydantic.ValidationError."""
        return cls.model_validate(
            {
                "metadata": body.get("metadata", {}),
                "spec": body.get("spec", {}),
                "status": _operator_status(body.get("status")),
            }
        )

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name


def _operator_status(status: Any) -> dict[str, Any]:
    """Only the fields this model knows: foreign status keys (e.g. from older versions) are ignored."""
    if not isinstance(status, Mapping):
        return {}
    known = {field.alias or name for name, field in AgentIdentityStatus.model_fields.items()}
    return {key: value for key, value in status.items() if key in known}


# -- AgentPolicy ------------------------------------------------------------------------------------------------

POLICY_KIND = "AgentPolicy"
POLICY_PLURAL = "agentpolicies"
DEFAULT_FORBIDDEN_RESOURCES = ("secrets", "serviceaccounts/token", "pods/exec")
DEFAULT_FORBIDDEN_VERBS = ("escalate", "bind", "impersonate")

PolicyDuration = Annotated[
    str, Field(max_length=32), DurationRange(minimum=dt.timedelta(seconds=10), maximum=dt.timedelta(days=3660))
]
Pattern = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]


class LabelSelectorRequirement(ApiModel):
    """One label test (metav1.LabelSelectorRequirement)."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value is tested against values."""
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=64)] = []
    """The values for In and NotIn (empty for Exists and DoesNotExist)."""


class LabelSelector(ApiModel):
    """metav1.LabelSelector; empty selects everything."""

    match_labels: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=32)] = {}
    """Labels a namespace must carry, all of them."""
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=32)] = []
    """Label tests a namespace must pass, all of them."""


class AgentPolicySpec(ApiModel):
    """Ceilings for the agents in the namespaces this policy selects. An absent list means "no ceiling"; an
    empty list allows nothing. Where several policies select a namespace, the strictest of each wins."""

    namespace_selector: LabelSelector = LabelSelector()
    """Namespaces this policy governs (empty: all)."""
    allowed_api_groups: Annotated[list[Annotated[str, Field(max_length=NAME_MAX)]], Field(max_length=64)] | None = (
        Field(default=None, alias="allowedAPIGroups")
    )
    """API groups agents may be granted (absent: any)."""
    allowed_resources: Annotated[list[Resource], Field(max_length=128)] | None = None
    """Resources agents may be granted (absent: any)."""
    allowed_verbs: Annotated[list[Verb], Field(max_length=32)] | None = None
    """Verbs agents may be granted (absent: any)."""
    forbidden_resources: Annotated[list[Resource], Field(max_length=128)] = list(DEFAULT_FORBIDDEN_RESOURCES)
    """Resources never granted, directly or through a ClusterRole."""
    forbidden_verbs: Annotated[list[Verb], Field(max_length=32)] = list(DEFAULT_FORBIDDEN_VERBS)
    """Verbs never granted, directly or through a ClusterRole."""
    grantable_cluster_roles: Annotated[list[Name], Field(max_length=64)] | None = None
    """The only ClusterRoles agents may reference (absent: any that grants nothing forbidden)."""
    max_token_ttl: PolicyDuration | None = Field(default=None, alias="maxTokenTTL")
    """Longest agent token lifetime (caps credentials.tokenTTL)."""
    max_lifetime: PolicyDuration | None = None
    """Agents must set expiresAt, at most this far ahead."""
    allowed_owners: Annotated[list[Pattern], Field(max_length=64)] | None = None
    """Glob patterns the owner name must match (absent: any owner)."""
    allowed_supervision_modes: Annotated[list[SupervisionMode], Field(max_length=3)] | None = None
    """Modes agents may run in; a disallowed mode is held at the next lower one."""
    owner_ceiling: bool = False
    """Also check every grant against the owner's own access (SubjectAccessReview as the owner)."""


class AgentPolicyStatus(ApiModel):
    """What the policy governs now (written by the operator)."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    agents: int = 0
    """Agents in the namespaces the policy selects (revoked and expired ones not counted)."""
    out_of_bounds: int = 0
    """How many of them declare more than the policy allows (each is Ready=False, reason PolicyViolation)."""
    out_of_bounds_agents: Annotated[list[str], Field(max_length=20)] = []
    """The first 20 of them, as namespace/name."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=CONDITIONS_LIST)] = []
    """Ready: the policy is in force (reason Enforced, or AgentsOutOfBounds when some agents exceed it)."""


class AgentPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    generation: int = 0
    spec: AgentPolicySpec
    status: AgentPolicyStatus = AgentPolicyStatus()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AgentPolicy:
        metadata = body.get("metadata", {})
        return cls.model_validate(
            {
                "name": metadata.get("name", ""),
                "generation": metadata.get("generation", 0),
                "spec": body.get("spec", {}),
                "status": body.get("status") or {},
            }
        )
