"""Storage by location: one set of functions for local paths, NFS paths and object-store URIs.

A location is a string: a local path (absolute, relative, `~`), a `file://` URI, an object-store
URI (`s3://bucket/key`, `gs://bucket/key`, any scheme pyarrow or fsspec knows), or
`pkg://<package>/<path>`, a file shipped inside an installed Python package (the toy artifacts,
recipes). A location stays a string until it is opened, and it is opened on the node that reads
it: a relative local path is made absolute there (never `Path.resolve()`d on the driver), and a
`pkg://` location is found in that node's copy of the package, so a config can cross nodes
whose working directories were unpacked in different places.

S3 reads the standard AWS environment: credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
a profile or an instance role), AWS_REGION / AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL for an S3-compatible store (MinIO, Ceph, a moto server on loopback).

    fs, path = storage.parse("s3://bucket/runs")        # (pyarrow FileSystem, "bucket/runs")
    storage.write_text(storage.join(run, "report.md"), text)
    local = storage.local_copy("s3://bucket/models/sd15")  # one download per node, then cached
"""

from __future__ import annotations

import fcntl
import fnmatch
import functools
import hashlib
import importlib.resources
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from rglcd.cache import CACHE_ENV, cache_dir  # noqa: F401  (CACHE_ENV: the variable callers set)

PKG_SCHEME = "pkg"
_COMPLETE = ".rglcd-complete.json"


def scheme(location: str) -> str:
    """The URI scheme of `location` ("" for a plain path; one-letter schemes are drive letters)."""
    location = str(location)
    head, sep, _ = location.partition("://")
    if not sep or not head or len(head) < 2 or not head.replace("+", "").isalnum():
        return ""
    return head.lower()


def is_local(location: str) -> bool:
    """True for a path on this node's disks (plain path, `file://`, `pkg://`), False for a URI."""
    return scheme(location) in ("", "file", PKG_SCHEME)


def is_package_location(location: str) -> bool:
    return scheme(location) == PKG_SCHEME


def package_location(package: str, *parts: str) -> str:
    """`pkg://<package>/<parts>`: a file shipped in an installed package, found on each node."""
    return f"{PKG_SCHEME}://{package}/" + "/".join(p.strip("/") for p in parts if p)


def local_path(location: str) -> str:
    """The absolute local path of a local location, made on this node (no symlinks resolved)."""
    location = str(location)
    kind = scheme(location)
    if kind == PKG_SCHEME:
        package, _, inner = location[len("pkg://"):].partition("/")
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError as err:
            raise ValueError(f"{location}: no installed package {package!r}") from err
        return os.path.join(str(root), *[p for p in inner.split("/") if p])
    if kind == "file":
        return urlparse(location).path or "/"
    if kind:
        raise ValueError(f"{location} is not a local path; copy it with local_copy() first")
    return os.path.abspath(os.path.expanduser(location))


def parse(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of `location`; the path is what pyarrow calls take."""
    location = str(location)
    kind = scheme(location)
    if is_local(location):
        return pafs.LocalFileSystem(), local_path(location)
    if kind in ("s3", "s3a"):
        return _s3_filesystem(), _bucket_path(location)
    try:
        return pafs.FileSystem.from_uri(location)
    except Exception:  # noqa: BLE001 - pyarrow does not know the scheme: fsspec may
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _bucket_path(location: str) -> str:
    parsed = urlparse(location)
    return (parsed.netloc + parsed.path).rstrip("/")


def _s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem configured from the standard AWS environment variables (one
    per configuration: creating one resolves credentials, which may ask the instance role)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _s3_for(region, endpoint, os.environ.get("AWS_ACCESS_KEY_ID"))


@functools.lru_cache(maxsize=8)
def _s3_for(region: str | None, endpoint: str | None, key_id: str | None) -> pafs.S3FileSystem:
    options: dict = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options = {"endpoint_override": parsed.netloc, "scheme": parsed.scheme}
        # An S3-compatible store rarely answers the region lookup; any region signs for it.
        region = region or "us-east-1"
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def join(location: str, *parts: str) -> str:
    """`location` with `parts` appended, keeping its kind (path stays a path, URI a URI)."""
    location = str(location)
    parts = tuple(str(p) for p in parts if str(p))
    if not scheme(location):
        return os.path.join(location, *parts)
    return posixpath.join(location.rstrip("/") + "/", *parts)


def basename(location: str) -> str:
    return posixpath.basename(str(location).rstrip("/"))


def exists(location: str) -> bool:
    fs, path = parse(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(location: str) -> bool:
    fs, path = parse(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def is_file(location: str) -> bool:
    fs, path = parse(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def list_files(location: str, pattern: str = "*", recursive: bool = False) -> list[str]:
    """Sorted locations of the files under folder `location` whose name matches `pattern`.

    Returned locations keep `location`'s form (a URI stays a URI), so they can be handed on.
    A missing folder lists as empty.
    """
    fs, root = parse(location)
    selector = pafs.FileSelector(root, recursive=recursive, allow_not_found=True)
    found = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not fnmatch.fnmatch(info.base_name, pattern):
            continue
        relative = posixpath.relpath(info.path, root) if root not in ("", "/") else info.path
        found.append(join(location, relative))
    return sorted(found)


def makedirs(location: str) -> None:
    fs, path = parse(location)
    fs.create_dir(path, recursive=True)


def remove(location: str) -> None:
    """Delete a file or a folder with its contents; a missing location is not an error."""
    fs, path = parse(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type != pafs.FileType.NotFound:
        fs.delete_file(path)


def open_input(location: str):
    """A readable binary stream (random access where the filesystem allows)."""
    fs, path = parse(location)
    return fs.open_input_file(path)


def open_output(location: str):
    """A writable binary stream; its parent folders are created first."""
    fs, path = parse(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    return fs.open_output_stream(path)


def read_bytes(location: str) -> bytes:
    with open_input(location) as stream:
        return stream.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file so readers never see half of it.

    Local: into a temporary file beside it, then renamed over it. Object stores publish an
    object only when its upload completes, which is atomic already.
    """
    fs, path = parse(location)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
        return
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def append_text(location: str, text: str) -> None:
    """Append to a local file; an object store has no append, so the object is rewritten."""
    fs, path = parse(location)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
        return
    old = read_bytes(location) if exists(location) else b""
    write_bytes(location, old + text.encode("utf-8"))


def upload_dir(local_dir: str | os.PathLike, location: str) -> None:
    """Copy a local folder's contents to `location` (a folder; created if missing)."""
    fs, path = parse(location)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(
        os.path.abspath(local_dir), path,
        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs,
    )


def download_dir(location: str, local_dir: str | os.PathLike) -> None:
    """Copy the folder at `location` into local folder `local_dir` (created if missing)."""
    fs, path = parse(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{location} is not a folder")
    os.makedirs(local_dir, exist_ok=True)
    pafs.copy_files(
        path, os.path.abspath(local_dir),
        source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem(),
    )


def upload_file(local_file: str | os.PathLike, location: str) -> None:
    fs, path = parse(location)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(local_file, path)
        return
    fs.create_dir(posixpath.dirname(path), recursive=True)
    pafs.copy_files(
        os.path.abspath(local_file), path,
        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs,
    )


def cache_root() -> str:
    """Node-local cache folder (rglcd/cache.py), absolute on this node."""
    return os.path.abspath(cache_dir())


def local_copy(location: str, cache_dir: str | None = None) -> str:
    """A local path holding the folder (or file) at `location`: itself if local, else a copy.

    A remote folder is downloaded once per node into `<cache root>/storage/<key>`, keyed by
    its URI; workers on the same node wait on a file lock instead of downloading again. The
    copy is refreshed when the remote listing (names and sizes) no longer matches it. A remote
    file is cached the same way, in a folder of its own; its local path is returned.
    """
    if is_local(location):
        return local_path(location)
    if is_file(location):
        folder = posixpath.dirname(str(location).rstrip("/"))
        name = basename(location)
        return os.path.join(_cached_folder(folder, cache_dir, only=name), name)
    return _cached_folder(location, cache_dir)


def _cached_folder(location: str, cache_dir: str | None, only: str | None = None) -> str:
    key = hashlib.sha256(f"{location}|{only or ''}".encode()).hexdigest()[:16]
    name = only or basename(location)
    target = os.path.join(cache_dir or cache_root(), "storage", f"{key}-{name}")
    listing = _listing(location)
    if only is not None:
        listing = {k: v for k, v in listing.items() if k == only}
    if not listing:
        raise FileNotFoundError(f"{location}: no such folder, or it is empty")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _file_lock(target + ".lock"):
        if _cached_listing(target) == listing:
            return target
        staging = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(target))
        try:
            if only is None:
                download_dir(location, staging)
            else:
                _download_file(join(location, only), os.path.join(staging, only))
            with open(os.path.join(staging, _COMPLETE), "w") as handle:
                json.dump({"location": str(location), "files": listing}, handle)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _download_file(location: str, local_file: str) -> None:
    fs, path = parse(location)
    pafs.copy_files(path, local_file, source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())


def _listing(location: str) -> dict[str, int]:
    fs, root = parse(location)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return {
        posixpath.relpath(info.path, root): info.size
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    }


def _cached_listing(target: str) -> dict[str, int] | None:
    try:
        with open(os.path.join(target, _COMPLETE)) as handle:
            return json.load(handle)["files"]
    except (OSError, ValueError, KeyError):
        return None


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def staged_dir(location: str) -> Iterator[Path]:
    """A local folder to write into; on exit its contents land at `location`.

    A local `location` is written in place; a remote one through a temporary folder that is
    uploaded when the block ends without error.
    """
    if is_local(location):
        path = Path(local_path(location))
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="rglcd-stage-") as temp:
        yield Path(temp)
        upload_dir(temp, location)


@contextmanager
def staged_file(location: str) -> Iterator[Path]:
    """A local file path to write; on exit the file lands at `location` (as staged_dir)."""
    if is_local(location):
        path = Path(local_path(location))
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="rglcd-stage-") as temp:
        path = Path(temp) / basename(location)
        yield path
        if path.exists():
            upload_file(path, location)


def list_dirs(location: str, pattern: str = "*") -> list[str]:
    """Sorted locations of the sub-folders of `location` whose name matches `pattern`."""
    fs, root = parse(location)
    selector = pafs.FileSelector(root, recursive=False, allow_not_found=True)
    return sorted(
        join(location, info.base_name)
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory and fnmatch.fnmatch(info.base_name, pattern)
    )
