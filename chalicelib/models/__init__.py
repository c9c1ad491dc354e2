"""SQLAlchemy models of the whole domain; `Base.metadata` is what Alembic migrates."""

from chalicelib.models.base import Base, utcnow
from chalicelib.models.jobs import RegistrationJob
from chalicelib.models.notifications import (
    EVENTS,
    Notification,
    Subscription,
    UserNotification,
    WebhookDelivery,
    WebhookEndpoint,
)
from chalicelib.models.oauth import OAuth2AuthorizationCode, OAuth2Client, OAuth2Token
from chalicelib.models.received import ReceivedDelivery
from chalicelib.models.registries import REGISTRY_TYPES, Registry
from chalicelib.models.testing import (
    BUILD_STATUSES,
    COMPLETED_STATUSES,
    Build,
    TestingService,
    TestInstance,
    TestSuite,
)
from chalicelib.models.users import ApiKey, Identity, User
from chalicelib.models.workflows import (
    Permission,
    RegistryWorkflowVersion,
    Workflow,
    WorkflowVersion,
)

__all__ = [
    "BUILD_STATUSES",
    "COMPLETED_STATUSES",
    "EVENTS",
    "REGISTRY_TYPES",
    "ApiKey",
    "Base",
    "Build",
    "Identity",
    "Notification",
    "OAuth2AuthorizationCode",
    "OAuth2Client",
    "OAuth2Token",
    "Permission",
    "ReceivedDelivery",
    "RegistrationJob",
    "Registry",
    "RegistryWorkflowVersion",
    "Subscription",
    "TestInstance",
    "TestSuite",
    "TestingService",
    "User",
    "UserNotification",
    "WebhookDelivery",
    "WebhookEndpoint",
    "Workflow",
    "WorkflowVersion",
    "utcnow",
]
