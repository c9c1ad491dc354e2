"""Domain errors. Each knows its HTTP status and problem title, so `api/` can render it as
`application/problem+json` (contract §1.6) without the domain knowing about HTTP."""

from __future__ import annotations

from typing import Any


class LifeMonitorError(Exception):
    status = 500
    title = "Internal Error"

    def __init__(self, detail: str | None = None, **extra_info: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra_info = extra_info

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The `application/problem+json` body of this error (contract §1.6); the API
        answers it, and an asynchronous registration keeps it as the job's `error`."""
        return problem_body(self.status, self.title, self.detail, instance, self.extra_info)


def problem_body(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    extra_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every problem+json body, whoever answers it (a view's error, Chalice's own, a job)."""
    if not title:
        from http import HTTPStatus

        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": instance,
        "extra_info": extra_info or {},
    }


class BadRequestError(LifeMonitorError):
    status = 400
    title = "Bad Request"


class UnauthorizedError(LifeMonitorError):
    status = 401
    title = "Unauthorized"


class ForbiddenError(LifeMonitorError):
    status = 403
    title = "Forbidden"


class NotFoundError(LifeMonitorError):
    status = 404
    title = "Resource not found"


class ConflictError(LifeMonitorError):
    status = 409
    title = "Conflict"


class WorkflowVersionConflictError(ConflictError):
    title = "Workflow version conflict"


class GoneError(LifeMonitorError):
    status = 410
    title = "Gone"


class PayloadTooLargeError(LifeMonitorError):
    status = 413
    title = "Payload Too Large"


class UnprocessableError(LifeMonitorError):
    status = 422
    title = "Unprocessable Entity"


class NotImplementedYetError(LifeMonitorError):
    status = 501
    title = "Not Implemented"


class ServiceUnavailableError(LifeMonitorError):
    status = 503
    title = "External service not available"
