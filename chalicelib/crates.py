"""Workflow Testing RO-Crate reading (contract §5), pure: bytes or a metadata dict in, a
`CrateInfo` out. No database, no HTTP, no Chalice; the caller writes the rows.

The zip is never extracted: only the metadata member is read, in memory, after the archive's
directory has been checked (member count, declared sizes, member paths). The metadata JSON
is then handed to `rocrate` as a dict source, so the package never touches the filesystem
or the network. `rocrate` and `zipfile` are imported inside the functions that need them:
importing this module must stay cheap on a Lambda cold start.

Supported test metadata: suites referenced from the root dataset's `mentions` or `about`, or
(legacy LifeMonitor layout) from the `about` of the `test/` dataset; `instance` → `runsOn`,
`url`, `resource`; `definition` → `conformsTo`, `engineVersion`; the Workflow Testing
RO-Crate 0.1 (inline context terms) and 0.2 (RO-Crate 1.3 context plus
`https://w3id.org/ro/terms/test`) forms.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import posixpath
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.errors import BadRequestError, LifeMonitorError, UnprocessableError

__all__ = [
    "ENGINE_TYPES",
    "MAX_BYTES",
    "MAX_MEMBERS",
    "MAX_METADATA_BYTES",
    "METADATA_NAMES",
    "SERVICE_TYPES",
    "TEST_NS",
    "CrateError",
    "CrateInfo",
    "InstanceSpec",
    "InvalidCrateError",
    "SuiteSpec",
    "UnprocessableCrateError",
    "read_crate",
    "read_metadata_only",
    "service_type_of",
]

TEST_NS = "https://w3id.org/ro/terms/test#"
MAX_BYTES = 100 * 1024 * 1024
MAX_MEMBERS = 10_000
# The metadata file is parsed in memory and stored as a JSON row: a crate's is a few KB to
# a few MB; a 98 KB zip expanding to a 20 MB metadata file is refused.
MAX_METADATA_BYTES = 8 * 1024 * 1024
# Preferred first: RO-Crate ≥ 1.1 name, then the RO-Crate 1.0 (legacy) name.
METADATA_NAMES = ("ro-crate-metadata.json", "ro-crate-metadata.jsonld")

_SERVICE_TERMS = {
    "JenkinsService": "jenkins",
    "GithubService": "github",
    "TravisService": "travis",
    # Not a WTROC term: our documented extension, in the same namespace.
    "GitlabService": "gitlab",
}
# The same term in every form we accept: the full IRI (what the 0.1 inline context and the
# 0.2 context both expand to), the compact `test:`/`wftest:` forms, and the bare term that
# the 0.2 context (`https://w3id.org/ro/terms/test`) defines.
SERVICE_TYPES: dict[str, str] = {
    form: type_
    for term, type_ in _SERVICE_TERMS.items()
    for form in (TEST_NS + term, f"test:{term}", f"wftest:{term}", term)
}
ENGINE_TYPES: dict[str, str] = {
    form: "planemo"
    for form in (
        TEST_NS + "PlanemoEngine",
        "test:PlanemoEngine",
        "wftest:PlanemoEngine",
        "PlanemoEngine",
    )
}
_ENGINE_IRI = re.compile(re.escape(TEST_NS) + r"([A-Za-z0-9]+)Engine$")


class CrateError(LifeMonitorError):
    """A crate we cannot accept; `reason` (= `detail`) says why, for problem+json."""

    @property
    def reason(self) -> str:
        return str(self)


class InvalidCrateError(CrateError, BadRequestError):
    """400: not a readable RO-Crate (not a zip, unsafe or too big, no or broken metadata)."""


class UnprocessableCrateError(CrateError, UnprocessableError):
    """422: a readable RO-Crate whose test metadata we cannot register."""


@dataclass(frozen=True)
class InstanceSpec:
    roc_instance: str | None
    name: str | None
    service_type: str
    service_url: str
    resource: str


@dataclass(frozen=True)
class SuiteSpec:
    roc_suite: str | None
    name: str | None
    # {"path": ..., "test_engine": {"type": ..., "version"?: ...}} as LifeMonitor serializes it.
    definition: dict | None
    instances: list[InstanceSpec] = field(default_factory=list)


@dataclass(frozen=True)
class CrateInfo:
    metadata: dict
    name: str | None
    version: str | None
    main_entity: str | None
    authors: list[dict]
    suites: list[SuiteSpec]
    has_tests: bool
    sha256: str
    based_on: str | None
    main_entity_name: str | None = None  # the main workflow's declared name
    root_name: str | None = None  # the root dataset's name

    @property
    def workflow_name(self) -> str | None:
        """LifeMonitor's fallback (contract §5): the main entity's name, else its @id, else
        the root dataset's name."""
        return self.main_entity_name or self.main_entity or self.root_name


# --------------------------------------------------------------------------- public API


def read_crate(
    data: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_members: int = MAX_MEMBERS,
    extra_service_types: Mapping[str, str] | None = None,
) -> CrateInfo:
    """Read a zipped (Workflow Testing) RO-Crate without extracting it.

    `max_bytes` bounds the total uncompressed size the archive declares, `max_members` its
    member count. `extra_service_types` adds `runsOn` terms (e.g. a test double's service)
    to `SERVICE_TYPES`. Raises `InvalidCrateError` (400) or `UnprocessableCrateError` (422).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidCrateError("Not valid RO-Crate: expected the bytes of a zip archive")
    data = bytes(data)
    raw = _read_metadata_member(data, max_bytes=max_bytes, max_members=max_members)
    metadata = _parse_json(raw)
    return _read(metadata, hashlib.sha256(data).hexdigest(), extra_service_types)


def read_metadata_only(
    metadata: dict, *, extra_service_types: Mapping[str, str] | None = None
) -> CrateInfo:
    """Read a crate given only its metadata JSON (e.g. a metadata-only fixture directory).

    Same rules as `read_crate`; `sha256` is that of the canonical JSON (sorted keys, no
    insignificant whitespace, UTF-8), so the same metadata always hashes the same.
    """
    if not isinstance(metadata, dict):
        raise InvalidCrateError("Not valid RO-Crate: the metadata is not a JSON object")
    from chalicelib import safejson

    try:
        safejson.check(metadata)
    except safejson.JSONInputError as exc:
        raise InvalidCrateError(f"Not valid RO-Crate: {exc.message}", field=exc.field) from None
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _read(
        metadata, hashlib.sha256(canonical.encode("utf-8")).hexdigest(), extra_service_types
    )


def service_type_of(
    service_id: str,
    context: Any = None,
    extra_service_types: Mapping[str, str] | None = None,
) -> str | None:
    """Our service type (`jenkins`, `github`, `travis`, `gitlab`) for a `runsOn` @id, or None.

    Besides the forms in `SERVICE_TYPES`, ids are expanded through the crate's own inline
    `@context` (a prefix such as `"wft": "https://w3id.org/ro/terms/test#"`, or a term
    mapped to one of our IRIs).
    """
    table = {**SERVICE_TYPES, **(extra_service_types or {})}
    for candidate in _expansions(service_id, context):
        if candidate in table:
            return table[candidate]
    return None


# --------------------------------------------------------------------------- zip handling


def _read_metadata_member(data: bytes, *, max_bytes: int, max_members: int) -> bytes:
    import zipfile  # lazily: only the zip path needs it
    import zlib

    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise InvalidCrateError("Not valid RO-Crate: the content is not a zip archive")
    try:
        with zipfile.ZipFile(buffer) as archive:
            infos = archive.infolist()
            _check_members(infos, max_bytes=max_bytes, max_members=max_members)
            for info in infos:
                if _is_symlink(info):
                    _check_symlink(info, archive.read(info)[:4096])
            member = _find_metadata(infos)
            limit = min(max_bytes, MAX_METADATA_BYTES)
            if member.file_size > limit:
                raise InvalidCrateError(
                    f"Not valid RO-Crate: the metadata file is {member.file_size} bytes "
                    f"(limit {limit})"
                )
            with archive.open(member) as fh:
                # ZipExtFile stops at the declared size, which was bounded just above.
                raw = fh.read(limit + 1)
            if len(raw) > limit:
                raise InvalidCrateError(f"Not valid RO-Crate: the metadata exceeds {limit} bytes")
            return raw
    except CrateError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        # Corrupt archive, bad CRC, unsupported compression, encrypted member...
        raise InvalidCrateError(f"Not valid RO-Crate: corrupt zip archive ({exc})") from exc


def _check_members(infos: list, *, max_bytes: int, max_members: int) -> None:
    if len(infos) > max_members:
        raise InvalidCrateError(
            f"Not valid RO-Crate: the archive has {len(infos)} members (limit {max_members})"
        )
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise InvalidCrateError(
            f"Not valid RO-Crate: the archive expands to {total} bytes (limit {max_bytes})"
        )
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if _unsafe_path(name):
            raise InvalidCrateError(f"Not valid RO-Crate: unsafe member path {name!r}")
        # Duplicate names make tools disagree about which copy is the crate.
        if name in seen:
            raise InvalidCrateError(f"Not valid RO-Crate: duplicate member {name!r}")
        seen.add(name)


def _unsafe_path(name: str) -> bool:
    if not name or "\x00" in name:
        return True
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[/\\]", name)


def _is_symlink(info: Any) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _check_symlink(info: Any, target: bytes) -> None:
    # We never extract, but the stored archive may be extracted by others later.
    link = target.decode("utf-8", "replace")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(info.filename), link))
    if _unsafe_path(link) or resolved == ".." or resolved.startswith("../"):
        raise InvalidCrateError(
            f"Not valid RO-Crate: member {info.filename!r} links outside the crate"
        )


def _find_metadata(infos: list) -> Any:
    """The metadata member: at the root, else in the archive's single top-level folder."""
    files: dict[tuple[str, ...], Any] = {}
    top: set[str] = set()
    for info in infos:
        parts = tuple(p for p in info.filename.split("/") if p not in ("", "."))
        if not parts or parts[0] == "__MACOSX":  # macOS Finder resource forks
            continue
        top.add(parts[0])
        if not info.is_dir():
            files[parts] = info
    for name in METADATA_NAMES:
        if (name,) in files:
            return files[(name,)]
    if len(top) == 1:
        (folder,) = top
        for name in METADATA_NAMES:
            if (folder, name) in files:
                return files[(folder, name)]
    raise InvalidCrateError(
        "Not valid RO-Crate: no ro-crate-metadata.json (or .jsonld) at the archive root "
        "or in its single top-level folder"
    )


def _parse_json(raw: bytes) -> dict:
    from chalicelib import safejson

    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM, which json.loads(bytes) rejects
    except UnicodeDecodeError as exc:
        raise InvalidCrateError(f"Not valid RO-Crate: the metadata is not JSON ({exc})") from exc
    try:
        # No NUL, lone surrogate, NaN or deep nesting: the metadata is stored as JSON(B).
        metadata = safejson.loads(text)
    except safejson.JSONInputError as exc:
        extra = {"field": exc.field} if exc.field else {}
        raise InvalidCrateError(
            f"Not valid RO-Crate: the metadata is not JSON we can store ({exc.message})", **extra
        ) from None
    if not isinstance(metadata, dict):
        raise InvalidCrateError("Not valid RO-Crate: the metadata is not a JSON object")
    return metadata


# --------------------------------------------------------------------------- metadata


# rocrate and our walk over its model fail with these on malformed JSON-LD (a `mentions`
# that is `true`, a reference whose @id is a number, a @type that is an object...).
_MALFORMED = (KeyError, ValueError, TypeError, AttributeError, AssertionError, IndexError)


def _read(metadata: dict, sha256: str, extra_service_types: Mapping[str, str] | None) -> CrateInfo:
    crate = _load_rocrate(metadata)
    try:
        return _crate_info(crate, metadata, sha256, extra_service_types)
    except CrateError:
        raise
    except _MALFORMED as exc:
        raise InvalidCrateError(f"Not valid RO-Crate: malformed metadata ({exc})") from exc


def _crate_info(
    crate: Any, metadata: dict, sha256: str, extra_service_types: Mapping[str, str] | None
) -> CrateInfo:
    root = crate.root_dataset
    main = crate.mainEntity
    main_entity = _id_of(main)
    main_entity_obj = main if _is_entity(main) else None
    suites = [
        _suite_spec(suite, metadata.get("@context"), extra_service_types)
        for suite in _ordered_suites(crate)
    ]
    _check_lengths(suites)
    return CrateInfo(
        metadata=metadata,
        # Declared names only: rocrate invents one for a ComputationalWorkflow without any.
        name=_text(root.get("name")) or _text(_declared(metadata, main_entity, "name")),
        version=_text(_get(main_entity_obj, "version")) or _text(root.get("version")),
        main_entity=main_entity,
        authors=_authors(main_entity_obj, root),
        suites=suites,
        has_tests=bool(suites),
        sha256=sha256,
        based_on=_id_of(root.get("isBasedOn")),
        main_entity_name=_text(_declared(metadata, main_entity, "name")),
        root_name=_text(root.get("name")),
    )


def _check_lengths(suites: list[SuiteSpec]) -> None:
    """What will be stored must fit its column (422 naming the crate's field and entity)."""
    from chalicelib import http
    from chalicelib.models import TestingService, TestInstance, TestSuite
    from chalicelib.models.limits import check_length

    def fits(value: str | None, attribute: Any, field: str, entity: str | None) -> None:
        check_length(value, attribute, field, error=UnprocessableCrateError, entity=entity)

    for suite in suites:
        fits(suite.roc_suite, TestSuite.roc_suite, "@id", (suite.roc_suite or "")[:64])
        fits(suite.name, TestSuite.name, "name", suite.roc_suite)
        for inst in suite.instances:
            where = (inst.roc_instance or "")[:64]
            fits(inst.roc_instance, TestInstance.roc_instance, "@id", where)
            fits(inst.name, TestInstance.name, "name", where)
            fits(inst.service_url, TestingService.url, "url", where)
            try:
                # A service we could never fetch from (file://, gopher://, user:password@)
                # is refused now rather than failing at every refresh.
                http.check_url(inst.service_url)
            except http.BlockedURLError as exc:
                raise UnprocessableCrateError(
                    f"Test instance {where!r}: service url refused: {exc.reason}",
                    field="url",
                    entity=where,
                ) from None
            fits(inst.resource, TestInstance.resource, "resource", where)


def _load_rocrate(metadata: dict) -> Any:
    graph = metadata.get("@graph")
    if "@context" not in metadata or not isinstance(graph, list):
        raise InvalidCrateError("Not valid RO-Crate: the metadata must have @context and @graph")
    for entity in graph:
        if not isinstance(entity, dict) or not isinstance(entity.get("@id"), str):
            raise InvalidCrateError("Not valid RO-Crate: a @graph entity has no @id")
        if "@type" not in entity:
            raise InvalidCrateError(f"Not valid RO-Crate: entity {entity['@id']!r} has no @type")

    from rocrate.rocrate import ROCrate  # lazily: a slow import, needed only here

    # rocrate pops keys out of the entity dicts it is given: keep the caller's metadata intact.
    source = copy.deepcopy(metadata)
    try:
        _link_orphan_data_entities(source)
        with warnings.catch_warnings():
            # e.g. "looks like a data entity but it's not listed in hasPart": not our concern.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"rocrate\b")
            return ROCrate(source=source)
    except _MALFORMED as exc:
        raise InvalidCrateError(f"Not valid RO-Crate: {exc}") from exc


def _link_orphan_data_entities(metadata: dict) -> None:
    """Add data entities that no `hasPart` reaches to the root's `hasPart` (in our copy).

    rocrate rejects such crates when it reads them as RO-Crate ≥ 1.2, which includes every
    crate whose descriptor has no `conformsTo` (it defaults to 1.3), e.g. RO-Crate 1.0
    crates. LifeMonitor only needs the test metadata, so we do not fail on that.
    """
    graph = metadata["@graph"]
    by_id = {e["@id"]: e for e in graph}
    descriptor = by_id.get(METADATA_NAMES[0]) or by_id.get(METADATA_NAMES[1])
    about = descriptor.get("about") if isinstance(descriptor, dict) else None
    root = by_id.get(about.get("@id")) if isinstance(about, dict) else None
    if root is None:
        return  # rocrate will say what is wrong
    linked = {
        ref["@id"]
        for entity in graph
        for ref in _as_list(entity.get("hasPart"))
        if isinstance(ref, dict) and isinstance(ref.get("@id"), str)
    }
    skip = {root["@id"], descriptor["@id"], "ro-crate-preview.html"}
    orphans = [
        {"@id": e["@id"]}
        for e in graph
        if e["@id"] not in linked
        and e["@id"] not in skip
        and not e["@id"].startswith("#")
        and {"File", "Dataset"} & {t for t in _as_list(e.get("@type")) if isinstance(t, str)}
    ]
    if orphans:
        root["hasPart"] = [*_as_list(root.get("hasPart")), *orphans]


def _ordered_suites(crate: Any) -> list:
    """rocrate's `test_suites` (root mentions/about, legacy test/ about), in document order.

    rocrate returns them through a set: the order would change from run to run.
    """
    from rocrate.model import TestSuite

    wanted = set(crate.test_suites)
    refs = [
        *_as_list(crate.root_dataset.get("mentions")),
        *_as_list(crate.root_dataset.get("about")),
    ]
    if crate.test_dir is not None:
        refs += _as_list(crate.test_dir.get("about"))
    ordered: list = []
    seen: set[str] = set()  # by id: a list membership test made big crates quadratic
    for ref in refs:
        if isinstance(ref, TestSuite) and ref in wanted and ref.id not in seen:
            seen.add(ref.id)
            ordered.append(ref)
    return ordered


def _suite_spec(
    suite: Any, context: Any, extra_service_types: Mapping[str, str] | None
) -> SuiteSpec:
    from rocrate.model import TestInstance

    instances = []
    for ref in _as_list(suite.get("instance")):
        if not isinstance(ref, TestInstance):
            what = "a missing entity" if isinstance(ref, str) else f"a {_type_text(ref)}"
            raise UnprocessableCrateError(
                f"Test suite {suite.id!r}: instance {_id_of(ref)!r} is {what}, not a TestInstance",
                roc_suite=suite.id,
            )
        instances.append(_instance_spec(suite, ref, context, extra_service_types))
    return SuiteSpec(
        roc_suite=suite.id,
        name=_text(suite.get("name")),
        definition=_definition(suite, context),
        instances=instances,
    )


def _instance_spec(
    suite: Any, inst: Any, context: Any, extra_service_types: Mapping[str, str] | None
) -> InstanceSpec:
    where = f"Test instance {inst.id!r} of suite {suite.id!r}"
    runs_on = _single(inst.get("runsOn"))
    service_id = _id_of(runs_on)
    if not service_id:
        raise UnprocessableCrateError(f"{where} has no runsOn service", roc_instance=inst.id)
    service_type = service_type_of(service_id, context, extra_service_types)
    if service_type is None:
        raise UnprocessableCrateError(
            f"{where} runs on an unknown service type {service_id!r} "
            f"(supported: {', '.join(sorted(set(_SERVICE_TERMS)))})",
            roc_instance=inst.id,
            service=service_id,
        )
    url = _id_of(_single(inst.get("url")))
    if not url or not url.strip():
        raise UnprocessableCrateError(f"{where} has no url", roc_instance=inst.id)
    resource = _text(inst.get("resource"))
    if not resource or not resource.strip():
        raise UnprocessableCrateError(f"{where} has no resource", roc_instance=inst.id)
    return InstanceSpec(
        roc_instance=inst.id,
        name=_text(inst.get("name")),
        service_type=service_type,
        service_url=url.strip(),
        resource=resource.strip(),
    )


def _definition(suite: Any, context: Any) -> dict | None:
    ref = _single(suite.get("definition"))
    if ref is None:
        return None
    if not _is_entity(ref):
        raise UnprocessableCrateError(
            f"Test suite {suite.id!r}: definition {_id_of(ref)!r} is a missing entity",
            roc_suite=suite.id,
        )
    engine_id = _id_of(_single(ref.get("conformsTo")))
    engine: dict[str, Any] = {"type": _engine_type(engine_id, context)}
    version = _text(ref.get("engineVersion"))
    if version is not None:
        engine["version"] = version
    return {"path": ref.id, "test_engine": engine}


def _engine_type(engine_id: str | None, context: Any) -> str:
    if not engine_id:
        return "unknown"  # what LifeMonitor stores for an engine it does not know
    for candidate in _expansions(engine_id, context):
        if candidate in ENGINE_TYPES:
            return ENGINE_TYPES[candidate]
        match = _ENGINE_IRI.match(candidate)
        if match:  # a future <X>Engine term of the test vocabulary
            return match.group(1).lower()
    return engine_id  # keep the IRI rather than losing it


def _expansions(term: str, context: Any) -> Iterable[str]:
    """`term` as written, then as expanded by the crate's inline context definitions."""
    yield term
    mapping: dict[str, Any] = {}
    for part in _as_list(context):
        if isinstance(part, dict):
            mapping.update(part)

    def iri(value: Any) -> str | None:
        if isinstance(value, dict):
            value = value.get("@id")
        return value if isinstance(value, str) else None

    if term in mapping and (expanded := iri(mapping[term])):
        yield expanded
    prefix, sep, suffix = term.partition(":")
    if sep and not suffix.startswith("//") and (base := iri(mapping.get(prefix))):
        yield base + suffix


def _authors(main: Any, root: Any) -> list[dict]:
    """`{name, url}` per author/creator of the main workflow, else of the root dataset."""
    for holder in (main, root):
        people = _as_list(_get(holder, "author")) or _as_list(_get(holder, "creator"))
        if people:
            return [_person(p) for p in people if p is not None]
    return []


def _person(person: Any) -> dict:
    if _is_entity(person):
        id_ = person.id
        name = _text(person.get("name"))
        url = id_ if id_.startswith(("http://", "https://")) else _id_of(_single(person.get("url")))
    else:  # a bare string, or a reference to an entity the graph lacks
        id_ = str(person)
        name, url = None, id_ if id_.startswith(("http://", "https://")) else None
    return {"name": name or id_.lstrip("#"), "url": url}


# --------------------------------------------------------------------------- small helpers


def _is_entity(value: Any) -> bool:
    return hasattr(value, "id") and hasattr(value, "properties")


def _declared(metadata: dict, entity_id: str | None, key: str) -> Any:
    """A property as written in the metadata, not as rocrate's model defaults it."""
    for entity in metadata["@graph"]:
        if entity.get("@id") == entity_id:
            return entity.get(key)
    return None


def _get(entity: Any, key: str) -> Any:
    return entity.get(key) if _is_entity(entity) else None


def _id_of(value: Any) -> str | None:
    """The @id of an entity, a dangling reference (rocrate gives its id string) or a string."""
    value = _single(value)
    if _is_entity(value):
        return value.id
    if isinstance(value, dict):
        value = value.get("@id")
    return value if isinstance(value, str) else None


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _single(value: Any) -> Any:
    """First of a list (nf-core writes `"name": ["nf-core/demo"]`), else the value."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(value: Any) -> str | None:
    value = _single(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str | int | float):
        return str(value)
    return _id_of(value)


def _type_text(entity: Any) -> str:
    return "/".join(str(t) for t in _as_list(entity.type)) if _is_entity(entity) else "value"
