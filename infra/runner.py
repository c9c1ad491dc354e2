"""The local runner: what AWS does for the deployed event handlers, for `chalice local`
(which serves HTTP routes only).

* EventBridge: fires the `refresh` schedule of `app.py` at its rate (`Rate(5, MINUTES)`;
  ``--rate SECONDS`` overrides it), with a Scheduled Event payload;
* the SQS event source mapping of `worker`: long-polls the refresh queue, hands up to
  `batch_size` messages to the handler as an SQS event, deletes the ones the handler did not
  report in `batchItemFailures` (ReportBatchItemFailures), and leaves the others to come
  back after the visibility timeout — and, after `maxReceiveCount`, to the dead-letter queue.

The handlers are called through Chalice's own wrappers (`app.refresh(event, context)`), so
the code path is the deployed Lambda's. The queue URL is ``LM_REFRESH_QUEUE_URL``; boto3
finds the endpoint in ``AWS_ENDPOINT_URL``.

    python -m infra.runner [--rate SECONDS] [--once]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("lifemonitor.runner")

UNIT_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400}
WORKER_TIMEOUT = 120.0  # the worker Lambda's timeout (infra/cfn/chalice-merge.yaml)
REFRESH_TIMEOUT = 60.0


class LambdaContext:
    """The parts of Lambda's context object the handlers read."""

    def __init__(self, function_name: str, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def schedule_rate(app_module: Any, name: str = "refresh") -> float:
    """Seconds between two firings of the named schedule, read from the Chalice app."""
    for source in app_module.app.event_sources:
        if getattr(source, "name", None) == name and hasattr(source, "schedule_expression"):
            rate = source.schedule_expression
            return float(rate.value * UNIT_SECONDS[rate.unit])
    raise LookupError(f"no schedule named {name!r} in app.py")


def worker_batch_size(app_module: Any, name: str = "worker") -> int:
    for source in app_module.app.event_sources:
        if getattr(source, "name", None) == name and hasattr(source, "batch_size"):
            return int(source.batch_size)
    return 10


def scheduled_event(region: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:000000000000:rule/lifemonitor-refresh"],
        "detail": {},
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class Runner:
    def __init__(
        self,
        app_module: Any,
        queue_url: str | None,
        *,
        rate: float | None = None,
        region: str | None = None,
        wait: int = 5,
    ) -> None:
        self.app = app_module
        self.queue_url = queue_url
        self.rate = rate if rate is not None else schedule_rate(app_module)
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1"
        self.wait = wait
        self.batch_size = worker_batch_size(app_module)
        self.stopping = threading.Event()
        self._sqs = None
        self._queue_arn: str | None = None
        self.fired = 0
        self.delivered = 0
        self.deleted = 0

    @property
    def sqs(self):
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs", region_name=self.region)
        return self._sqs

    @property
    def queue_arn(self) -> str:
        if self._queue_arn is None:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )
            self._queue_arn = attrs["Attributes"]["QueueArn"]
        return self._queue_arn

    def fire_refresh(self) -> Any:
        """One firing of the schedule, as EventBridge would invoke the `refresh` Lambda."""
        self.fired += 1
        try:
            result = self.app.refresh(
                scheduled_event(self.region), LambdaContext("refresh", REFRESH_TIMEOUT)
            )
        except Exception:
            log.exception("refresh: the handler failed")
            return None
        print(f"runner: refresh fired: {json.dumps(result, default=str)}", flush=True)
        return result

    def drain_once(self, wait: int | None = None) -> int:
        """One poll of the queue and, if it gave messages, one worker invocation. Returns the
        number of messages handed to the worker."""
        if not self.queue_url:
            return 0
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            WaitTimeSeconds=self.wait if wait is None else wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.delivered += len(messages)
        event = sqs_event(messages, self.queue_arn, self.region)
        try:
            result = self.app.worker(event, LambdaContext("worker", WORKER_TIMEOUT)) or {}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            # A crashed invocation fails the whole batch: nothing is deleted.
            log.exception("worker: the handler failed; the batch comes back later")
            return len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
            self.deleted += len(done)
        print(
            f"runner: worker handled {len(messages)} message(s), {len(failed)} to retry",
            flush=True,
        )
        return len(messages)

    def run(self) -> None:
        """Fire at once, then every `rate` seconds; poll the queue in between."""
        next_fire = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_fire:
                self.fire_refresh()
                next_fire = now + self.rate
            if not self.queue_url:
                self.stopping.wait(max(0.1, next_fire - time.monotonic()))
                continue
            wait = int(max(0, min(self.wait, next_fire - time.monotonic())))
            try:
                self.drain_once(wait)
            except Exception as exc:  # the endpoint restarting, say: keep going
                log.error("runner: cannot poll %s: %s", self.queue_url, exc)
                self.stopping.wait(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.runner", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=None, help="seconds (default: app.py's)")
    parser.add_argument("--wait", type=int, default=5, help="SQS long-poll seconds")
    parser.add_argument("--once", action="store_true", help="fire once, drain, exit")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")

    from chalicelib import logs

    logs.configure()
    import app as app_module

    queue_url = os.environ.get("LM_REFRESH_QUEUE_URL") or None
    runner = Runner(app_module, queue_url, rate=args.rate, wait=args.wait)
    if not queue_url:
        print("runner: LM_REFRESH_QUEUE_URL is not set: refreshes run inline", flush=True)
    if args.once:
        runner.fire_refresh()
        while runner.drain_once(wait=1):
            pass
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stopping.set())
    print(f"runner: refresh every {runner.rate:g} s; worker on {queue_url}", flush=True)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
