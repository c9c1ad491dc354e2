"""The checks we run on every submitted RO-Crate, listed at `/workflows/issues`.

LifeMonitor lists the repository checks of its GitHub App there; we list what our
submission path actually verifies (contract §1.5 `Issue` shape)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    identifier: str
    name: str
    description: str  # HTML
    labels: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "identifier": self.identifier,
            "name": self.name,
            "description": self.description,
            "labels": list(self.labels),
            "depends_on": list(self.depends_on),
        }


ISSUES = [
    Issue(
        "crate.InvalidArchive",
        "The RO-Crate is not a valid zip archive",
        "<p>The submitted file (or the file at <code>roc_link</code>) must be a zip "
        "archive within the size limits, with no absolute or <code>..</code> paths.</p>",
        ["crate", "error"],
    ),
    Issue(
        "crate.MissingMetadataFile",
        "The RO-Crate has no metadata file",
        "<p>The archive must contain <code>ro-crate-metadata.json</code> at its root "
        "(or in its single top-level folder).</p>",
        ["crate", "error"],
        ["crate.InvalidArchive"],
    ),
    Issue(
        "crate.InvalidMetadata",
        "The RO-Crate metadata cannot be read",
        "<p><code>ro-crate-metadata.json</code> must be JSON-LD that the RO-Crate library "
        "can load.</p>",
        ["crate", "error"],
        ["crate.MissingMetadataFile"],
    ),
    Issue(
        "metadata.MissingWorkflowName",
        "The workflow has no name",
        "<p>Give a <code>name</code> in the request, or a <code>name</code> on the crate's "
        "main entity or root dataset.</p>",
        ["metadata"],
        ["crate.InvalidMetadata"],
    ),
    Issue(
        "testing.UnsupportedTestService",
        "A test instance runs on an unsupported service",
        "<p>Each <code>TestInstance</code> must have <code>runsOn</code> one of "
        "<code>JenkinsService</code>, <code>GithubService</code>, <code>TravisService</code> "
        "or <code>GitlabService</code> (our extension), in the "
        "<code>https://w3id.org/ro/terms/test#</code> namespace.</p>",
        ["testing", "error"],
        ["crate.InvalidMetadata"],
    ),
    Issue(
        "testing.IncompleteTestInstance",
        "A test instance lacks its url or resource",
        "<p>Each <code>TestInstance</code> needs the CI base <code>url</code> and the "
        "<code>resource</code> (job path, workflow file, project) below it.</p>",
        ["testing", "error"],
        ["crate.InvalidMetadata"],
    ),
    Issue(
        "testing.NoTestSuites",
        "The crate declares no test suites",
        "<p>The workflow is registered, but its status stays <code>not_available</code> "
        "until a <code>TestSuite</code> is listed in the root dataset's "
        "<code>mentions</code>.</p>",
        ["testing", "warning"],
        ["crate.InvalidMetadata"],
    ),
]


def list_issues() -> list[Issue]:
    return list(ISSUES)
