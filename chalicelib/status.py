"""The aggregate test status (contract §2), pure: no database, no HTTP.

LifeMonitor's rule, computed from *stored* builds: per instance, the first completed build
(passed, failed or error) among its ten most recent counts; running, waiting and aborted
builds are skipped. The four-state fold:

    not_available --pass--> all_passing --fail--> some_passing
    not_available --fail--> all_failing --pass--> some_passing

`some_passing` never changes. When the result is `not_available`, `reason` joins the
issues found (no suites, suites without instances, instances without builds).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

NOT_AVAILABLE = "not_available"
ALL_PASSING = "all_passing"
SOME_PASSING = "some_passing"
ALL_FAILING = "all_failing"
AGGREGATE_STATUSES = (ALL_PASSING, SOME_PASSING, ALL_FAILING, NOT_AVAILABLE)
COMPLETED = frozenset({"passed", "failed", "error"})

_TRANSITIONS = {
    (NOT_AVAILABLE, True): ALL_PASSING,
    (NOT_AVAILABLE, False): ALL_FAILING,
    (ALL_PASSING, True): ALL_PASSING,
    (ALL_PASSING, False): SOME_PASSING,
    (ALL_FAILING, True): SOME_PASSING,
    (ALL_FAILING, False): ALL_FAILING,
}


def step(state: str, passing: bool) -> str:
    """One transition of the fold."""
    return _TRANSITIONS.get((state, passing), SOME_PASSING)


def fold(results: Iterable[bool]) -> str:
    state = NOT_AVAILABLE
    for passing in results:
        state = step(state, passing)
    return state


@dataclass(frozen=True)
class InstanceState:
    """What the rule needs of one instance: its name, where it runs, its newest build and
    the first completed build among its newest ten (both denormalised on the row)."""

    name: str | None
    resource: str | None
    service_url: str | None
    latest_build: Any = None  # objects with a `.status`
    last_completed_build: Any = None
    last_error: str | None = None
    # Staleness (services/staleness.py): since when no build has completed for longer
    # than the instance's threshold, in days.
    stale_since: Any = None
    stale_after_days: int | None = None


@dataclass(frozen=True)
class SuiteState:
    name: str | None
    instances: Sequence[InstanceState]


@dataclass
class StatusResult:
    aggregate_test_status: str
    latest_builds: list[Any] = field(default_factory=list)  # one build per instance
    issues: list[str] = field(default_factory=list)
    # Shown whatever the status (a STALE instance still counts its last build).
    warnings: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        parts = list(self.issues) if self.aggregate_test_status == NOT_AVAILABLE else []
        parts.extend(self.warnings)
        return ", ".join(parts) or None


def compute(suites: Sequence[SuiteState]) -> StatusResult:
    result = StatusResult(NOT_AVAILABLE)
    if not suites:
        result.issues.append("No test suite configured for this workflow")
    state = NOT_AVAILABLE
    for suite in suites:
        if not suite.instances:
            result.issues.append(f"No test instances configured for suite {suite.name}")
        for instance in suite.instances:
            if instance.stale_since is not None:
                result.warnings.append(
                    f"STALE: instance {instance.name} has had no completed build for over "
                    f"{instance.stale_after_days or 30} days"
                )
            counted = instance.last_completed_build
            if counted is None and instance.latest_build is None:
                issue = f"No build found for instance {instance.name}"
                if instance.last_error:
                    issue = (
                        f"{instance.last_error}: Unable to get resource "
                        f"'{instance.resource}' from service '{instance.service_url}'"
                    )
                result.issues.append(issue)
                continue
            if counted is None:
                # Nothing completed recently: shown, but it does not change the status.
                result.latest_builds.append(instance.latest_build)
                continue
            result.latest_builds.append(counted)
            state = step(state, counted.status == "passed")
    result.aggregate_test_status = state
    return result
