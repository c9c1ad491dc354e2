"""LifeMonitor's OAuth2 / API-key scope names (contract §1.1)."""

from __future__ import annotations

REGISTRY_INFO = "registry.info"
REGISTRY_USER = "registry.user"
REGISTRY_WORKFLOW_READ = "registry.workflow.read"
REGISTRY_WORKFLOW_WRITE = "registry.workflow.write"
REGISTRY_USER_WORKFLOW_READ = "registry.user.workflow.read"
REGISTRY_USER_WORKFLOW_WRITE = "registry.user.workflow.write"
WORKFLOW_READ = "workflow.read"
WORKFLOW_WRITE = "workflow.write"
TESTING_SERVICE_READ = "testingService.read"
TESTING_SERVICE_WRITE = "testingService.write"
USER_PROFILE = "user.profile"
USER_WORKFLOW_READ = "user.workflow.read"
USER_WORKFLOW_WRITE = "user.workflow.write"

DESCRIPTIONS: dict[str, str] = {
    REGISTRY_INFO: "Read information about the current registry client",
    REGISTRY_USER: "Read the registry's users",
    REGISTRY_WORKFLOW_READ: "Read the registry's workflows",
    REGISTRY_WORKFLOW_WRITE: "Submit and change the registry's workflows",
    REGISTRY_USER_WORKFLOW_READ: "Read the workflows of the registry's users",
    REGISTRY_USER_WORKFLOW_WRITE: "Submit and change the workflows of the registry's users",
    WORKFLOW_READ: "Read workflows, their suites, instances and builds",
    WORKFLOW_WRITE: "Change and delete workflows, suites and instances",
    TESTING_SERVICE_READ: "Read testing services",
    TESTING_SERVICE_WRITE: "Change testing services",
    USER_PROFILE: "Read the current user's profile",
    USER_WORKFLOW_READ: "Read the current user's workflows",
    USER_WORKFLOW_WRITE: "Submit and change the current user's workflows",
}
ALL = frozenset(DESCRIPTIONS)

#: RegistryClientCredentials: registry.*, workflow.*, testingService.*
REGISTRY_CLIENT_CREDENTIALS = frozenset(
    s for s in ALL if s.startswith(("registry.", "workflow.", "testingService."))
)
#: RegistryCodeFlow adds the user's profile and workflows (read).
REGISTRY_CODE_FLOW = REGISTRY_CLIENT_CREDENTIALS | {USER_PROFILE, USER_WORKFLOW_READ}
#: What a registry's OAuth2 client may be granted: the union, as LifeMonitor does (so
#: WorkflowHub's scope list, which includes user.profile, is accepted).
REGISTRY_CLIENT = REGISTRY_CODE_FLOW
#: AuthorizationCodeFlow (generic OAuth apps acting for a user).
AUTHORIZATION_CODE_FLOW = frozenset(
    {
        USER_PROFILE,
        USER_WORKFLOW_READ,
        USER_WORKFLOW_WRITE,
        WORKFLOW_READ,
        WORKFLOW_WRITE,
        TESTING_SERVICE_READ,
        TESTING_SERVICE_WRITE,
    }
)
#: A user's API keys: every scope but a registry's workflow scopes, as LifeMonitor's web UI
#: gives them (contract §6.3). `registry.info`/`registry.user` open nothing to a user: the
#: routes needing them also need a registry principal.
USER_API_KEY = frozenset(
    s for s in ALL if not s.startswith(("registry.workflow.", "registry.user.workflow."))
)
#: A client_credentials client acting as its owner (admin CLI `oauth
#: create-client-credentials`): an API key's scopes without any `registry.*` one (those
#: belong to registries; the two an API key may hold open nothing to a user).
USER_CLIENT_CREDENTIALS = frozenset(s for s in USER_API_KEY if not s.startswith("registry."))

#: The exact scope string WorkflowHub sends to /oauth2/token (contract §10).
WORKFLOWHUB_REQUEST = (
    "registry.info registry.user registry.workflow.read registry.workflow.write "
    "registry.user.workflow.read registry.user.workflow.write workflow.read workflow.write "
    "testingService.read testingService.write user.profile user.workflow.read"
)


def parse(scope: str | None) -> frozenset[str]:
    return frozenset((scope or "").split())


def unknown(scopes: frozenset[str] | set[str]) -> list[str]:
    return sorted(s for s in scopes if s not in ALL)


def join(scopes) -> str:
    return " ".join(sorted(scopes))
