"""Every Lambda of LifeMonitor on one page: the API (blueprints), the scheduled refresh,
the refresh worker fed by SQS, and the admin command function. Each is a thin shim over
`chalicelib/`; nothing here reads configuration or opens a connection at import."""

from chalice import Chalice, Rate

from chalicelib.api import (
    badges,
    docs,
    health,
    history,
    instances,
    integrations,
    jobs,
    oauth,
    outbound,
    registries,
    suites,
    users,
    webhooks,
    workflows,
)
from chalicelib.api.middleware import http_middleware
from chalicelib.web import account, dashboard, pages
from chalicelib.web import email as web_email
from chalicelib.web import oauth as web_oauth

# Our JSON logging (chalicelib/logs.py) replaces Chalice's plain-text app logger.
app = Chalice(app_name="lifemonitor", configure_logs=False)
app.register_middleware(http_middleware, "http")

for blueprint in (
    health,
    docs,
    oauth,
    registries,
    users,
    workflows,
    suites,
    instances,
    history,
    integrations,
    jobs,
    webhooks,
    badges,
    outbound,
    pages,
    account,
    dashboard,
    web_oauth,
    web_email,
):
    app.register_blueprint(blueprint.routes)


@app.schedule(Rate(5, unit=Rate.MINUTES), name="refresh")
def refresh(event):
    """Dispatch the test instances that are due to the refresh queue."""
    from chalicelib.jobs import refresh as job

    return job.dispatch_due()


@app.on_sqs_message(
    queue="lifemonitor-refresh", batch_size=10, maximum_batching_window_in_seconds=5, name="worker"
)
def worker(event):
    """Refresh the batches of instances queued by `refresh`; report partial failures."""
    from chalicelib.jobs import refresh as job

    # Stop starting fetches well before the Lambda's own timeout (leases cover the rest).
    remaining = getattr(event.context, "get_remaining_time_in_millis", None)
    budget = max(5.0, remaining() / 1000 - 30) if remaining else None
    return job.handle_sqs_records((record.to_dict() for record in event), time_budget=budget)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="notify")
def notify(event):
    """Mail pending notifications (SES, in batches) and send due webhook deliveries."""
    from chalicelib.jobs import notify as job

    return job.every_minute()


@app.schedule(Rate(1, unit=Rate.HOURS), name="housekeeping")
def housekeeping(event):
    """Mark stale test instances (and notify), delete notifications and finished
    registration jobs past retention."""
    from chalicelib.jobs import notify as job

    return job.every_hour()


@app.on_sqs_message(queue="lifemonitor-webhooks", batch_size=10, name="webhook_worker")
def webhook_worker(event):
    """Deliver outbound webhooks queued by the transitions and the `notify` sweep."""
    from chalicelib.services import outbound as job

    return job.handle_sqs_records([record.to_dict() for record in event])


@app.lambda_function(name="admin")
def admin(event, context):
    """Admin commands: payload {"args": ["registry", "list"]} (`make admin STAGE=…`, which
    uses `aws lambda invoke`, or `chalice invoke -n admin` for `chalice deploy` stages), and
    the deploy's schema migration as a CloudFormation custom resource."""
    from chalicelib.admin import handle_lambda_event

    return handle_lambda_event(event, context)
