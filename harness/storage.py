"""Where results live: a local folder or an object store (`s3://bucket/prefix`, `gs://bucket/prefix`).

Every reader and writer of results goes through a :class:`Location`, built on `pyarrow.fs` (the
filesystem layer Ray Train itself uses for checkpoints). A local path keeps the behaviour of
`harness.fileio`: atomic renames, the user's umask. On an object store one PUT is atomic, so a
record is still complete or absent.

An object-store URI names its endpoint, scheme and region in its query
(`s3://b/p?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1`), else they come
from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` / `AWS_REGION` (read here: pyarrow 26 ignores
them, apache/arrow#49643). Credentials come only from the standard AWS chain (environment,
~/.aws, instance or pod role): a URI carrying one is refused, and since the filesystem is never
given keys, none is in a pickled filesystem, a record, a log or an error.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl, urlsplit

from harness.fileio import temporary_directory, write_bytes_atomic

OBJECT_SCHEMES = ("s3", "gs")
URI_OPTIONS = ("endpoint_override", "scheme", "region")
CREDENTIAL_WORDS = ("key", "secret", "token", "password", "credential", "signature")
RETRY_SECONDS = 60.0  # how long a write or read on an object store is retried while the endpoint is away
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 30.0


class StorageError(Exception):
    """A results location that cannot be used; the message is the one-line report (no credentials)."""


@dataclass(frozen=True)
class Location:
    """A file or folder of results: `scheme` '' (local) / 's3' / 'gs', `path` inside that filesystem."""

    scheme: str
    path: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def is_local(self) -> bool:
        return self.scheme == ""

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> Location:
        return Location(self.scheme, str(PurePosixPath(self.path).parent), self.options)

    def __truediv__(self, part: str) -> Location:
        return Location(self.scheme, str(PurePosixPath(self.path) / part), self.options)

    @property
    def uri(self) -> str:
        """The location as `--results` takes it (endpoint, scheme and region only: never a credential)."""
        if self.is_local:
            return self.path
        query = "&".join(f"{key}={value}" for key, value in self.options)
        return f"{self.scheme}://{self.path}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.uri

    @property
    def display(self) -> str:
        """`scheme://bucket/key` without the query, for messages naming a file in it."""
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self}: not a local path")
        return Path(self.path)

    def filesystem(self):
        return _filesystem(self.scheme, self.options)


def is_uri(text: str | os.PathLike) -> bool:
    return isinstance(text, str) and "://" in text


def _options_from_environment(scheme: str) -> dict[str, str]:
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") if scheme == "s3" else None
    if endpoint:
        parts = urlsplit(endpoint)
        options["endpoint_override"] = parts.netloc or parts.path
        if parts.scheme:
            options["scheme"] = parts.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") if scheme == "s3" else None
    if region:
        options["region"] = region
    return options


def parse_location(text: str | os.PathLike | Location) -> Location:
    """A `--results` value: a path, or an `s3://` / `gs://` URI; StorageError for anything else."""
    if isinstance(text, Location):
        return text
    if not is_uri(text):
        return Location("", str(Path(text).expanduser().absolute()))
    parts = urlsplit(str(text))
    scheme = parts.scheme.lower()
    if scheme not in OBJECT_SCHEMES:
        raise StorageError(f"--results {parts.scheme}://...: expected a path, s3://bucket/prefix or gs://bucket/prefix")
    if not parts.netloc:
        raise StorageError(f"--results {scheme}://: no bucket named (expected {scheme}://bucket/prefix)")
    if parts.username or parts.password:
        raise StorageError(f"--results {scheme}://{parts.hostname}: credentials in the URI are not accepted; "
                           "use the AWS credential chain (environment, ~/.aws, an instance or pod role)")
    given = dict(parse_qsl(parts.query, keep_blank_values=True))
    secret = [key for key in given if any(word in key.lower() for word in CREDENTIAL_WORDS)]
    if secret:
        raise StorageError(f"--results {scheme}://{parts.netloc}{parts.path}: credentials in the URI are not accepted "
                           f"({', '.join(sorted(secret))}); use the AWS credential chain (environment, ~/.aws, a role)")
    unknown = sorted(set(given) - set(URI_OPTIONS))
    if unknown:
        raise StorageError(f"--results {scheme}://{parts.netloc}{parts.path}: unknown query key(s) {', '.join(unknown)}; "
                           f"expected {', '.join(URI_OPTIONS)}")
    options = {**_options_from_environment(scheme), **given}
    if options.get("scheme") not in (None, "http", "https"):
        raise StorageError(f"--results ...?scheme={options['scheme']}: expected http or https")
    path = (parts.netloc + "/" + parts.path.strip("/")).rstrip("/")
    return Location(scheme, path, tuple((key, options[key]) for key in URI_OPTIONS if options.get(key)))


@lru_cache(maxsize=16)
def _filesystem(scheme: str, options: tuple[tuple[str, str], ...]):
    import pyarrow.fs as pafs

    given = dict(options)
    if scheme == "":
        return pafs.LocalFileSystem()
    if scheme == "s3":
        # small objects (records, logs) go up in one PUT (allow_delayed_open), large ones in parts
        return pafs.S3FileSystem(
            endpoint_override=given.get("endpoint_override"), scheme=given.get("scheme", "https"),
            region=given.get("region", "us-east-1"), allow_delayed_open=True,
            connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        )
    return pafs.GcsFileSystem(endpoint_override=given.get("endpoint_override"), scheme=given.get("scheme", "https"))


def retried(action: Callable, what: str, seconds: float | None = None):
    """`action()`, retried on OSError for up to `seconds` (an endpoint that is away for a while)."""
    deadline = time.monotonic() + (RETRY_SECONDS if seconds is None else seconds)
    delay = 0.5
    while True:
        try:
            return action()
        except FileNotFoundError:
            raise
        except OSError as err:
            if time.monotonic() >= deadline:
                raise OSError(f"{what}: {safe_error(err)}") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def safe_error(err: BaseException) -> str:
    """An error's first line with anything that looks like a credential cut out."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    for word in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        value = os.environ.get(word)
        if value:
            line = line.replace(value, "***")
    return line[:300]


def write_bytes(location: Location, data: bytes) -> None:
    """The whole file at once: renamed into place locally, one PUT (or completed upload) remotely."""
    if location.is_local:
        write_bytes_atomic(location.local_path(), data)
        return
    fs = location.filesystem()

    def put() -> None:
        with fs.open_output_stream(location.path) as out:
            out.write(data)

    retried(put, f"writing {location}")


def write_text(location: Location, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def read_bytes(location: Location, retry: float | None = None) -> bytes:
    """The file's bytes; FileNotFoundError when it is absent."""
    if location.is_local:
        return location.local_path().read_bytes()
    fs = location.filesystem()

    def get() -> bytes:
        with fs.open_input_stream(location.path) as stream:
            return stream.read()

    return retried(get, f"reading {location}", retry)


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def file_size(location: Location) -> int | None:
    """Size of a file, None when there is none."""
    import pyarrow.fs as pafs

    info = retried(lambda: location.filesystem().get_file_info(location.path), f"looking up {location}")
    return info.size if info.type == pafs.FileType.File else None


def is_file(location: Location) -> bool:
    return file_size(location) is not None


def list_files(location: Location) -> dict[str, int]:
    """{path relative to `location`: size} of every file below it (none when it does not exist)."""
    import pyarrow.fs as pafs

    if location.is_local:
        root = location.local_path()
        if not root.is_dir():
            return {}
        return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    selector = pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
    infos = retried(lambda: location.filesystem().get_file_info(selector), f"listing {location}")
    prefix = location.path.rstrip("/") + "/"
    return {i.path[len(prefix):]: i.size for i in infos if i.type == pafs.FileType.File and i.path.startswith(prefix)}


def delete_tree(location: Location) -> None:
    if location.is_local:
        shutil.rmtree(location.local_path(), ignore_errors=True)
        return
    fs = location.filesystem()
    if list_files(location):
        retried(lambda: fs.delete_dir_contents(location.path, missing_dir_ok=True), f"deleting {location}")


def delete_file(location: Location) -> None:
    if location.is_local:
        location.local_path().unlink(missing_ok=True)
        return
    try:
        retried(lambda: location.filesystem().delete_file(location.path), f"deleting {location}")
    except FileNotFoundError:
        pass


def download_tree(location: Location, target: Path, select: Callable[[str], bool] = lambda name: True) -> list[str]:
    """Copy the files below `location` that `select` accepts (by relative path) into `target`."""
    names = [name for name in list_files(location) if select(name)]
    for name in names:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(read_bytes(location / name))
    return names


def upload_file(source: Path, location: Location) -> None:
    write_bytes(location, Path(source).read_bytes())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@contextmanager
def staged(location: Location, select: Callable[[str], bool] = lambda name: True) -> Iterator[Path]:
    """A local folder holding `location`'s selected files; files written or changed there go back up
    at the end. A local location is used in place."""
    if location.is_local:
        yield location.local_path()
        return
    with temporary_directory("idrbench-stage-") as parent:
        folder = parent / location.name  # the experiment's name, as tables and the report title it
        folder.mkdir()
        download_tree(location, folder, select)
        before = _snapshot(folder)
        yield folder
        for name, stamp in sorted(_snapshot(folder).items()):
            if before.get(name) != stamp:
                upload_file(folder / name, location / name)


RESULT_FILES = ("record.json", "train.log", "model.pt")


def is_result_file(name: str) -> bool:
    """Whether a path below an experiment's results is a cell's record, log or final model (what
    tables, plots and the report read)."""
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == "cells" and parts[2] in RESULT_FILES


def results_folder(text: str) -> Location:
    """An existing experiment's results (`results/<experiment>` or its URI); StorageError otherwise."""
    location = parse_location(text)
    if location.is_local:
        if not location.local_path().is_dir():
            raise StorageError(f"{text}: no such results folder")
        return location
    try:
        found = list_files(location / "cells")
    except OSError as err:
        raise StorageError(describe_failure(location, err)) from None
    if not found:
        raise StorageError(f"{location}: no results there (no cells/ under it)")
    return location


def check_reachable(location: Location) -> None:
    """Write, read back and delete a probe object under `location`; StorageError (one line) if that fails."""
    if location.is_local:
        return
    import uuid

    probe = location / f".idrbench-probe-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex.encode()
    try:
        location.filesystem().get_file_info(probe.path)  # a read first: refused, nothing is written
        write_bytes_once(probe, token)
        seen = read_bytes(probe, retry=0)
    except OSError as err:
        try:
            location.filesystem().delete_file(probe.path)
        except OSError:
            pass
        raise StorageError(describe_failure(location, err)) from None
    delete_file(probe)
    if seen != token:
        raise StorageError(f"--results {location}: a probe object read back different bytes")


def write_bytes_once(location: Location, data: bytes) -> None:
    fs = location.filesystem()
    with fs.open_output_stream(location.path) as out:
        out.write(data)


# an endpoint that never answered: checked first, since its message can hold any number
# ("Failed to connect to HOST after 403 ms")
UNREACHABLE_WORDS = ("network_connection", "curlcode", "could not connect", "couldn't connect", "failed to connect",
                     "could not resolve", "resolve host", "timed out", "timeout")
REFUSED_WORDS = ("access denied", "accessdenied", "access_denied", "forbidden", "invalidaccesskeyid",
                 "signaturedoesnotmatch", "credentials", "expiredtoken")
HTTP_403 = re.compile(r"(status|code)\D{0,3}403\b")


def describe_failure(location: Location, err: BaseException) -> str:
    """One line saying why an object store cannot be used: endpoint, bucket or credentials."""
    text = safe_error(err)
    lowered = text.lower()
    endpoint = dict(location.options).get("endpoint_override", "the default endpoint")
    bucket = location.path.split("/", 1)[0]
    if any(word in lowered for word in UNREACHABLE_WORDS):
        return f"--results {location}: cannot reach the endpoint {endpoint} (connection failed)"
    if any(word in lowered for word in ("nosuchbucket", "no_such_bucket", "bucket does not exist")):
        return f"--results {location}: bucket {bucket!r} does not exist at {endpoint}"
    if any(word in lowered for word in REFUSED_WORDS) or HTTP_403.search(lowered):
        return (f"--results {location}: the endpoint {endpoint} refused the request: missing or invalid credentials "
                "(taken from the AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, a role)")
    if any(word in lowered for word in ("connect", "resolve", "network", "curl")):
        return f"--results {location}: cannot reach the endpoint {endpoint} (connection failed)"
    return f"--results {location}: cannot use it ({text})"
