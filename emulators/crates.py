"""Small Workflow Testing RO-Crate builders, so tests do not depend on ../shared/fixtures.

`wtroc_metadata()` returns the metadata dict of a crate in the 0.1 form (RO-Crate 1.1 context
plus inline test terms) or the 0.2 form (RO-Crate 1.3 context plus the test terms context);
`zip_crate()` zips it (with optional extra members) in memory; `zip_members()` builds an
archive from raw (name, bytes) pairs, including names no sane tool would write.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Iterable, Mapping, Sequence

TEST_NS = "https://w3id.org/ro/terms/test#"
SERVICE_TERMS = {
    "jenkins": "JenkinsService",
    "github": "GithubService",
    "travis": "TravisService",
    "gitlab": "GitlabService",
}
CONTEXT_0_1 = [
    "https://w3id.org/ro/crate/1.1/context",
    {
        term: TEST_NS + term
        for term in (
            "TestSuite",
            "TestInstance",
            "TestService",
            "TestDefinition",
            "PlanemoEngine",
            "JenkinsService",
            "TravisService",
            "GithubService",
            "instance",
            "runsOn",
            "resource",
            "definition",
            "engineVersion",
        )
    },
]
CONTEXT_0_2 = ["https://w3id.org/ro/crate/1.3/context", "https://w3id.org/ro/terms/test"]
WORKFLOW = "sort-and-change-case.ga"
DEFINITION = "test/test1/sort-and-change-case-test.yml"

# (service, url, resource); service is one of SERVICE_TERMS or any runsOn @id.
# url or resource None leaves the property out.
Instance = tuple[str, str | None, str | None]
JENKINS: Instance = ("jenkins", "http://jenkins:8080/", "job/test/")


def service_id(service: str) -> str:
    return TEST_NS + SERVICE_TERMS[service] if service in SERVICE_TERMS else service


def wtroc_metadata(
    *,
    form: str = "0.1",
    name: str | None = "sort-and-change-case",
    instances: Sequence[Instance] = (JENKINS,),
    with_tests: bool = True,
    definition: bool = True,
    legacy: bool = False,
    author: str | None = "https://orcid.org/0000-0002-1825-0097",
) -> dict:
    """A Workflow Testing RO-Crate's metadata with one suite `#test1` and instances
    `#test1_1`, `#test1_2`, ... `legacy=True` references the suite from the `test/`
    dataset's `about` (older LifeMonitor crates) instead of the root's `mentions`."""
    if form not in ("0.1", "0.2"):
        raise ValueError(f"unknown form {form!r}")
    crate_version = "1.1" if form == "0.1" else "1.3"
    root: dict = {
        "@id": "./",
        "@type": "Dataset",
        "name": name,
        "license": "Apache-2.0",
        "mainEntity": {"@id": WORKFLOW},
        "hasPart": [{"@id": WORKFLOW}, {"@id": "test/"}],
        "isBasedOn": "https://github.com/crs4/sort-and-change-case",
    }
    workflow: dict = {
        "@id": WORKFLOW,
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
        "name": "sort-and-change-case",
        "version": "1.0.0",
        "programmingLanguage": {"@id": "#galaxy"},
    }
    graph: list[dict] = [
        {
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "about": {"@id": "./"},
            "conformsTo": {"@id": f"https://w3id.org/ro/crate/{crate_version}"},
        },
        root,
        workflow,
        {"@id": "#galaxy", "@type": "ComputerLanguage", "name": "Galaxy"},
        {"@id": "test/", "@type": "Dataset"},
    ]
    if form == "0.2":
        root["conformsTo"] = [{"@id": "https://w3id.org/ro/wftest/0.2"}]
    if author:
        workflow["creator"] = [{"@id": author}]
        graph.append({"@id": author, "@type": "Person", "name": "Josiah Carberry"})
    if with_tests:
        ids = [f"#test1_{i}" for i in range(1, len(instances) + 1)]
        suite: dict = {
            "@id": "#test1",
            "@type": "TestSuite",
            "name": "test1",
            "mainEntity": {"@id": WORKFLOW},
            "instance": [{"@id": id_} for id_ in ids],
        }
        graph.append(suite)
        if legacy:
            graph[4]["about"] = [{"@id": "#test1"}]
        else:
            root["mentions"] = [{"@id": "#test1"}]
        services = {}
        for id_, (service, url, resource) in zip(ids, instances, strict=True):
            instance: dict = {
                "@id": id_,
                "@type": "TestInstance",
                "name": id_.lstrip("#"),
                "runsOn": {"@id": service_id(service)},
            }
            if url is not None:
                instance["url"] = url
            if resource is not None:
                instance["resource"] = resource
            graph.append(instance)
            services[service_id(service)] = service
        for sid, service in services.items():
            graph.append(
                {
                    "@id": sid,
                    "@type": "TestService",
                    "name": service.title(),
                    "url": {"@id": f"https://{service}.example"},
                }
            )
        if definition:
            suite["definition"] = {"@id": DEFINITION}
            root["hasPart"].append({"@id": DEFINITION})
            graph += [
                {
                    "@id": DEFINITION,
                    "@type": ["File", "TestDefinition"],
                    "conformsTo": {"@id": TEST_NS + "PlanemoEngine"},
                    "engineVersion": ">=0.70",
                },
                {
                    "@id": TEST_NS + "PlanemoEngine",
                    "@type": "SoftwareApplication",
                    "name": "Planemo",
                },
            ]
    return {"@context": CONTEXT_0_1 if form == "0.1" else CONTEXT_0_2, "@graph": graph}


def zip_members(members: Iterable[tuple[str, bytes | str]]) -> bytes:
    """An archive with exactly these members (names are written as given, even `../x`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def zip_crate(
    metadata: dict | bytes | str | None,
    files: Mapping[str, bytes | str] | None = None,
    *,
    folder: str | None = None,
    metadata_name: str = "ro-crate-metadata.json",
) -> bytes:
    """Zip a crate: the metadata (a dict is JSON-encoded; None leaves it out) and `files`,
    optionally all inside one top-level `folder`."""
    prefix = f"{folder.strip('/')}/" if folder else ""
    members: list[tuple[str, bytes | str]] = []
    if metadata is not None:
        raw = json.dumps(metadata, indent=2) if isinstance(metadata, dict) else metadata
        members.append((prefix + metadata_name, raw))
    members += [(prefix + name, content) for name, content in (files or {}).items()]
    if not files:
        members.append((prefix + WORKFLOW, '{"a_galaxy_workflow": "true"}'))
    return zip_members(members)


def forge_declared_sizes(archive: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size every central-directory entry declares, as a zip bomb
    or a lying archive would."""
    data = bytearray(archive)
    offset = data.find(b"PK\x01\x02")
    while offset != -1:
        struct.pack_into("<I", data, offset + 24, size)
        offset = data.find(b"PK\x01\x02", offset + 4)
    return bytes(data)


def with_suites(metadata: dict, count: int) -> dict:
    """`metadata` with its first test suite (and its instances) repeated to `count` suites
    (`#s2`, `#s3`, ..., each instance on its own job), referenced wherever the first one is:
    large crates for size limits and submission benchmarks."""
    graph = [dict(e) for e in metadata["@graph"]]
    suite = next(e for e in graph if e.get("@type") == "TestSuite")
    by_id = {e["@id"]: e for e in graph}
    instances = [by_id[ref["@id"]] for ref in suite.get("instance", [])]
    referrers = [
        (e, key)
        for e in graph
        for key, value in e.items()
        if isinstance(value, list) and {"@id": suite["@id"]} in value
    ]
    for k in range(2, count + 1):
        copies = []
        for j, inst in enumerate(instances, 1):
            copies.append(
                {**inst, "@id": f"#s{k}_{j}", "name": f"s{k}_{j}", "resource": f"job/s{k}_{j}/"}
            )
        graph += copies
        graph.append(
            {
                **suite,
                "@id": f"#s{k}",
                "name": f"s{k}",
                "instance": [{"@id": c["@id"]} for c in copies],
            }
        )
        for entity, key in referrers:
            entity[key] = [*entity[key], {"@id": f"#s{k}"}]
    return {**metadata, "@graph": graph}
