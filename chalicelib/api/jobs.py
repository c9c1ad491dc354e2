"""Asynchronous registrations' status (`GET /jobs/status/<job_id>`, contract §1.3)."""

from __future__ import annotations

from chalice import Blueprint

from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint

routes = Blueprint(__name__)


# No scope: only the job's own principal reads it, and everybody else (anonymous included)
# gets the same 404 as for an id that does not exist.
@endpoint(routes, "/jobs/status/{job_id}", anonymous=True)
def job_status(job_id: str):
    from chalicelib.db import session_scope
    from chalicelib.services import registration_jobs

    with session_scope() as s:
        return registration_jobs.get_status(s, current_principal(), job_id)
