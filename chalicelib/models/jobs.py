"""Asynchronous registrations (`async: true` on a workflow POST, contract §1.3): the job a
worker runs later, and what `GET /jobs/status/<job_id>` shows meanwhile and afterwards."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chalicelib.models.base import Base, JSONType, Timestamped, uuid_column

#: LifeMonitor's job statuses, in the order a job goes through them.
WAITING = "waiting"
STARTED = "registration started"
COMPLETED = "completed"
ERROR = "error"
JOB_STATUSES = (WAITING, STARTED, COMPLETED, ERROR)


class RegistrationJob(Timestamped, Base):
    __tablename__ = "registration_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()  # the job id clients poll
    status: Mapped[str] = mapped_column(String(32), nullable=False, default=WAITING)
    # Who asked: enough to rebuild the Principal (ids, scopes, method), never a credential.
    principal: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    route: Mapped[str] = mapped_column(String(32), nullable=False)  # which workflow POST
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    # The request body without `rocrate` (stashed in the crate store) and `authorization`
    # (stashed in the parameter store): neither belongs in a table.
    body: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    request_url: Mapped[str | None] = mapped_column(String(2048))  # a problem's `instance`
    crate_location: Mapped[str | None] = mapped_column(String(512))
    authorization_key: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
