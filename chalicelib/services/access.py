"""Who may see and change a workflow (contract §1.7, with LifeMonitor's holes closed).

Read: public workflows, a user's own (an `owner` permission), a registry client's own (a
version linked to that registry). Write (PUT/DELETE on workflows, versions, suites,
instances): the owner, or the registry that submitted — never merely "can read".
A workflow that does not exist is 404; one that exists but is not visible is 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import exists, or_, select

from chalicelib.auth.principals import Principal
from chalicelib.errors import ForbiddenError, NotFoundError
from chalicelib.models import Permission, RegistryWorkflowVersion, Workflow, WorkflowVersion

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def owned_clause(principal: Principal):
    """SQL condition: the principal owns the workflow (user) or submitted it (registry)."""
    conditions = []
    if principal.user_id is not None:
        conditions.append(
            exists().where(
                Permission.workflow_id == Workflow.id, Permission.user_id == principal.user_id
            )
        )
    if principal.registry_id is not None:
        conditions.append(
            exists().where(
                RegistryWorkflowVersion.registry_id == principal.registry_id,
                RegistryWorkflowVersion.workflow_version_id == WorkflowVersion.id,
                WorkflowVersion.workflow_id == Workflow.id,
            )
        )
    return or_(*conditions) if conditions else None


def readable_clause(principal: Principal):
    """SQL condition: the principal may read the workflow. The one visibility rule: single
    reads (`can_read`) and every listing apply this same clause."""
    owned = owned_clause(principal)
    return Workflow.public.is_(True) if owned is None else or_(Workflow.public.is_(True), owned)


def can_read(session: Session, principal: Principal, workflow: Workflow) -> bool:
    if workflow.public:  # the clause's first branch, without a query
        return True
    return (
        session.execute(
            select(Workflow.id).where(Workflow.id == workflow.id, readable_clause(principal))
        ).first()
        is not None
    )


def can_write(session: Session, principal: Principal, workflow: Workflow) -> bool:
    owned = owned_clause(principal)
    if owned is None:
        return False
    return (
        session.execute(select(Workflow.id).where(Workflow.id == workflow.id, owned)).first()
        is not None
    )


def workflow_for_read(session: Session, principal: Principal, uuid: str) -> Workflow:
    workflow = session.scalar(select(Workflow).where(Workflow.uuid == uuid))
    if workflow is None:
        raise NotFoundError(
            f"Workflow '{uuid}' not found", resource_type="workflow", resource_identifier=uuid
        )
    check_read(session, principal, workflow)
    return workflow


def _deleted_meanwhile(session: Session, workflow: Workflow) -> None:
    """A check that failed because a concurrent request deleted the workflow since it was
    read: gone (404), not forbidden."""
    if session.scalar(select(Workflow.id).where(Workflow.id == workflow.id)) is None:
        raise NotFoundError(
            f"Workflow '{workflow.uuid}' not found",
            resource_type="workflow",
            resource_identifier=workflow.uuid,
        )


def check_read(session: Session, principal: Principal, workflow: Workflow) -> None:
    uuid = workflow.uuid
    if not can_read(session, principal, workflow):
        _deleted_meanwhile(session, workflow)
        if principal.is_anonymous:
            raise ForbiddenError(
                "No user nor registry found in the current session",
                resource_type="workflow",
                resource_identifier=uuid,
            )
        raise ForbiddenError(
            f"You are not allowed to access workflow '{uuid}'",
            resource_type="workflow",
            resource_identifier=uuid,
        )


def workflow_for_write(session: Session, principal: Principal, uuid: str) -> Workflow:
    workflow = workflow_for_read(session, principal, uuid)
    require_write(session, principal, workflow)
    return workflow


def require_write(session: Session, principal: Principal, workflow: Workflow) -> None:
    if not can_write(session, principal, workflow):
        _deleted_meanwhile(session, workflow)
        raise ForbiddenError(
            f"Only the owner or the submitting registry may change workflow '{workflow.uuid}'",
            resource_type="workflow",
            resource_identifier=workflow.uuid,
        )
