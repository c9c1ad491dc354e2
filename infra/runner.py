"""The local runner: what AWS does for the deployed event handlers, for `chalice local`
(which serves HTTP routes only). It reads `app.py`'s event sources, so every one is served:

* EventBridge: fires each schedule (`refresh`, `notify`, `housekeeping`, ...) at its rate,
  with a Scheduled Event payload (``--rate NAME=SECONDS`` overrides one; the first firing is
  at start);
* the SQS event source mappings (`worker`, `webhook_worker`, ...): long-polls each handler's
  queue, hands up to `batch_size` messages to it as an SQS event, deletes the ones it did not
  report in `batchItemFailures` (ReportBatchItemFailures), and leaves the others to come back
  after the visibility timeout — and, after `maxReceiveCount`, to the dead-letter queue.

The handlers are called through Chalice's own wrappers (`app.refresh(event, context)`), so
the code path is the deployed Lambda's. A queue named `q` in `app.py` is `q-<LM_STAGE>` (as
`infra/cfn/stateful.yaml` and `localstack/init` name them); boto3 finds the endpoint in
``AWS_ENDPOINT_URL``.

    python -m infra.runner [--rate refresh=30] [--once]
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("lifemonitor.runner")

UNIT_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400}
HANDLER_TIMEOUT = {"worker": 120.0, "webhook_worker": 60.0}  # infra/cfn/chalice-merge.yaml
DEFAULT_TIMEOUT = 60.0


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


@dataclass
class Schedule:
    name: str
    rate: float  # seconds
    next_fire: float = 0.0


@dataclass
class Consumer:
    name: str
    queue: str
    batch_size: int
    url: str | None = None
    arn: str | None = None


def _handler_name(source: Any) -> str:
    return source.handler_string.split(".", 1)[1]


def schedules(app_module: Any) -> list[Schedule]:
    """Every `@app.schedule` with a `Rate` (cron expressions are not emulated)."""
    out = []
    for source in app_module.app.event_sources:
        rate = getattr(source, "schedule_expression", None)
        if rate is not None and hasattr(rate, "unit"):
            out.append(Schedule(_handler_name(source), float(rate.value * UNIT_SECONDS[rate.unit])))
    return out


def consumers(app_module: Any) -> list[Consumer]:
    """Every `@app.on_sqs_message`."""
    return [
        Consumer(_handler_name(s), s.queue, int(s.batch_size))
        for s in app_module.app.event_sources
        if hasattr(s, "queue") and hasattr(s, "batch_size")
    ]


def schedule_rate(app_module: Any, name: str = "refresh") -> float:
    for schedule in schedules(app_module):
        if schedule.name == name:
            return schedule.rate
    raise LookupError(f"no schedule named {name!r} in app.py")


def scheduled_event(region: str, name: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:000000000000:rule/lifemonitor-{name}"],
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
        *,
        stage: str | None = None,
        rates: dict[str, float] | None = None,
        queue_urls: dict[str, str] | None = None,
        region: str | None = None,
        wait: int = 5,
    ) -> None:
        self.app = app_module
        self.stage = stage or os.environ.get("LM_STAGE") or "dev"
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1"
        self.wait = wait
        self.schedules = schedules(app_module)
        for schedule in self.schedules:
            if rates and schedule.name in rates:
                schedule.rate = rates[schedule.name]
        self.consumers = consumers(app_module)
        self.queue_urls = dict(queue_urls or {})
        self.stopping = threading.Event()
        self._sqs = None
        self.fired: dict[str, int] = {}
        self.delivered = 0
        self.deleted = 0

    @property
    def sqs(self):
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs", region_name=self.region)
        return self._sqs

    def consumer(self, name: str) -> Consumer:
        return next(c for c in self.consumers if c.name == name)

    def resolve(self, consumer: Consumer) -> bool:
        """Find the consumer's queue (`<queue>-<stage>`); False when it does not exist."""
        if consumer.url is None:
            url = self.queue_urls.get(consumer.queue)
            if url is None:
                try:
                    name = f"{consumer.queue}-{self.stage}"
                    url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                except Exception as exc:
                    log.error(
                        "runner: no queue for %s (%s): %s", consumer.name, consumer.queue, exc
                    )
                    return False
            attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            consumer.url, consumer.arn = url, attrs["Attributes"]["QueueArn"]
        return True

    def fire(self, name: str) -> Any:
        """One firing of a schedule, as EventBridge invokes its Lambda."""
        self.fired[name] = self.fired.get(name, 0) + 1
        handler = getattr(self.app, name)
        try:
            result = handler(
                scheduled_event(self.region, name),
                LambdaContext(name, HANDLER_TIMEOUT.get(name, DEFAULT_TIMEOUT)),
            )
        except Exception:
            log.exception("runner: the %s handler failed", name)
            return None
        print(f"runner: {name} fired: {json.dumps(result, default=str)}", flush=True)
        return result

    def fire_refresh(self) -> Any:
        return self.fire("refresh")

    def drain_once(self, consumer: Consumer | str = "worker", wait: int | None = None) -> int:
        """One poll of the consumer's queue and, if it gave messages, one invocation. Returns
        the number of messages handed to the handler."""
        if isinstance(consumer, str):
            consumer = self.consumer(consumer)
        if not self.resolve(consumer):
            return 0
        response = self.sqs.receive_message(
            QueueUrl=consumer.url,
            MaxNumberOfMessages=min(consumer.batch_size, 10),
            WaitTimeSeconds=self.wait if wait is None else wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.delivered += len(messages)
        event = sqs_event(messages, consumer.arn, self.region)
        handler = getattr(self.app, consumer.name)
        context = LambdaContext(consumer.name, HANDLER_TIMEOUT.get(consumer.name, DEFAULT_TIMEOUT))
        try:
            result = handler(event, context) or {}
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            # A crashed invocation fails the whole batch: nothing is deleted.
            log.exception("runner: %s failed; the batch comes back later", consumer.name)
            return len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=consumer.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
            self.deleted += len(done)
        print(
            f"runner: {consumer.name} handled {len(messages)} message(s), {len(failed)} to retry",
            flush=True,
        )
        return len(messages)

    def run(self) -> None:
        """Fire every schedule at once and then at its rate; poll the queues in between."""
        now = time.monotonic()
        for schedule in self.schedules:
            schedule.next_fire = now
        while not self.stopping.is_set():
            for schedule in self.schedules:
                if time.monotonic() >= schedule.next_fire:
                    self.fire(schedule.name)
                    schedule.next_fire = time.monotonic() + schedule.rate
            next_fire = min((s.next_fire for s in self.schedules), default=time.monotonic() + 5)
            live = [c for c in self.consumers if c.url or self.resolve(c)]
            if not live:
                self.stopping.wait(max(0.1, min(5.0, next_fire - time.monotonic())))
                continue
            # Long-poll each queue in turn, never past the next firing.
            budget = max(0.0, min(float(self.wait), next_fire - time.monotonic()))
            wait = int(budget / len(live)) if len(live) > 1 else int(budget)
            for consumer in live:
                if self.stopping.is_set():
                    break
                try:
                    self.drain_once(consumer, wait)
                except Exception as exc:  # the endpoint restarting, say: keep going
                    log.error("runner: cannot poll %s: %s", consumer.url, exc)
                    self.stopping.wait(1.0)


def _rates(values: list[str]) -> dict[str, float]:
    rates = {}
    for value in values:
        name, sep, seconds = value.rpartition("=")
        name = name if sep else "refresh"
        try:
            rates[name] = float(seconds)
        except ValueError:
            raise SystemExit(f"--rate: not seconds: {value!r}") from None
        if rates[name] <= 0:
            raise SystemExit(f"--rate: must be > 0: {value!r}")
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.runner", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rate", action="append", default=[], metavar="[NAME=]SECONDS",
        help="a schedule's rate (NAME defaults to refresh; default: app.py's)",
    )  # fmt: skip
    parser.add_argument("--wait", type=int, default=5, help="SQS long-poll seconds")
    parser.add_argument("--once", action="store_true", help="fire every schedule, drain, exit")
    args = parser.parse_args(argv)
    rates = _rates(args.rate)

    from chalicelib import logs

    logs.configure()
    import app as app_module

    runner = Runner(app_module, rates=rates, wait=args.wait)
    if args.once:
        for schedule in runner.schedules:
            runner.fire(schedule.name)
        for consumer in runner.consumers:
            while runner.drain_once(consumer, wait=1):
                pass
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stopping.set())
    names = ", ".join(f"{s.name} every {s.rate:g} s" for s in runner.schedules)
    queues = ", ".join(f"{c.name} on {c.queue}-{runner.stage}" for c in runner.consumers)
    print(f"runner: {names}; {queues}", flush=True)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
