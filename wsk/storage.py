"""Where wsk reads and writes: a local path, or any URL that fsspec reads (``gs://``, ``s3://``,
``memory://``, ...).

Every function here takes either. A local path (or a ``file://`` URL, which ``absolute`` turns
into one) goes straight to ``os``/``open``, with no fsspec in the way; only a URL goes through
fsspec (imported on first use). ``wsk.io`` builds its readers and its atomic writes on these.

**Atomic writes on object stores.** Renaming an object is a copy then a delete, so the local
"write a temporary, rename it over the file" is not atomic there. A URL is written instead by
making the whole file in a local temporary folder, then uploading it with one ``put``: a single
PUT (S3, GCS and Azure alike; a large file's multipart upload is completed in one call too), and
an object store shows an object whole or not at all. A process killed mid-write leaves nothing
under the URL, only its local temporary (in the system's temporary folder), so resumption reads
exactly the outputs that were finished.

Listings of an object store are read afresh each time (fsspec's listing cache is dropped before
each check): another worker may have written since.
"""

import contextlib
import hashlib
import os
import re
import shutil
import tempfile

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path):
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def absolute(path):
    """A local path made absolute; a ``file://`` URL as its local path; any other URL as it is."""
    if path is None:
        return None
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if is_url(path):
        return path.rstrip("/")
    return os.path.abspath(path)


def filesystem(url):
    """``(fsspec filesystem, path within it)`` of a URL, listings cache dropped for that path."""
    import fsspec

    fs, inner = fsspec.core.url_to_fs(url)
    fs.invalidate_cache(inner)
    return fs, inner


def exists(path):
    if not is_url(path):
        return os.path.exists(path)
    fs, inner = filesystem(path)
    return fs.exists(inner)


def isfile(path):
    if not is_url(path):
        return os.path.isfile(path)
    fs, inner = filesystem(path)
    return fs.isfile(inner)


def isdir(path):
    if not is_url(path):
        return os.path.isdir(path)
    fs, inner = filesystem(path)
    return fs.isdir(inner)


def listdir(path):
    """The names in a folder (files and folders, unsorted as ``os.listdir``); a missing folder is a
    ``FileNotFoundError``."""
    if not is_url(path):
        return os.listdir(path)
    fs, inner = filesystem(path)
    if not fs.isdir(inner):
        raise FileNotFoundError(path)
    return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(inner, detail=False)]


def walk_files(folder):
    """The paths (or URLs) of every file under ``folder``, in its subfolders too."""
    if not is_url(folder):
        for parent, _, names in os.walk(folder):
            for name in names:
                yield os.path.join(parent, name)
        return
    fs, inner = filesystem(folder)
    if not fs.isdir(inner):
        return
    prefix = folder.rstrip("/")
    for found in fs.find(inner):
        yield prefix + "/" + found[len(inner.rstrip("/")) + 1:]


def makedirs(path):
    """Create a folder and its parents (an object store has no folders: nothing to do there)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, inner = filesystem(path)
    with contextlib.suppress(OSError, NotImplementedError, ValueError):
        fs.makedirs(inner, exist_ok=True)


def remove(path):
    """Delete a file; a missing one is a ``FileNotFoundError``."""
    if not is_url(path):
        os.remove(path)
        return
    fs, inner = filesystem(path)
    if not fs.isfile(inner):
        raise FileNotFoundError(path)
    fs.rm_file(inner)


def rmtree(path):
    """Delete a folder and everything in it (nothing when it is missing)."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def open_file(path, mode="rb", encoding=None, newline=None):
    """``open`` for a path or a URL (reading; writing goes through ``wsk.io.atomic_path``)."""
    if not is_url(path):
        return open(path, mode, encoding=encoding, newline=newline)
    import fsspec

    if not exists(path):   # fsspec raises its own errors for a missing object; say it the usual way
        raise FileNotFoundError(path)
    return fsspec.open(path, mode, encoding=encoding, newline=newline).open()


def read_bytes(path):
    with open_file(path, "rb") as f:
        return f.read()


# The content digest of each local file read so far, keyed by what ``os.stat`` says of it: a file is read once a
# process while it is unchanged (a write changes its ctime, which nothing can set back; an atomic one its inode)
_DIGESTS = {}
# what a URL's ``info`` calls its content's checksum, the preferred first; a store that gives none has its
# modification time instead, which a copy changes
_CHECKSUM_KEYS = ("md5Hash", "crc32c", "ETag", "etag", "checksum")
_TIME_KEYS = ("mtime", "LastModified", "updated", "created")


def sha256_of(path):
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open_file(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_digest(path, info):
    key = (os.path.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = sha256_of(path)[:24]
    return digest


def stamp(path):
    """What a file holds, as a short text: ``"size:sha256 prefix"`` of a local file, or
    ``"missing"``. It changes when the file's content does, and only then: a work directory
    copied or moved (``cp -r``, a sync to a bucket) keeps its stamps, so its stages resume.

    A URL gives the size and the checksum its store keeps (``md5Hash``, ``crc32c``, ``ETag``),
    or its modification time where the store keeps no checksum.
    """
    if not is_url(path):
        try:
            info = os.stat(path)
            return f"{info.st_size}:{_content_digest(path, info)}"
        except OSError:
            return "missing"
    fs, inner = filesystem(path)
    try:
        info = fs.info(inner)
    except (OSError, ValueError):
        return "missing"
    version = next((info[key] for key in _CHECKSUM_KEYS + _TIME_KEYS if info.get(key) is not None), "")
    return f"{info.get('size')}:{version}"


def upload(local, url):
    """Copy the local file ``local`` to ``url`` in one ``put`` (module docstring)."""
    fs, inner = filesystem(url)
    fs.put_file(local, inner)


def download(url, local):
    """Copy ``url`` to the local file ``local``."""
    fs, inner = filesystem(url)
    fs.get_file(inner, local)


@contextlib.contextmanager
def local_copy(path):
    """A local path holding the file ``path``: ``path`` itself when local, else a downloaded
    temporary copy (removed afterwards), for readers that need a real file (Keras, OpenCV)."""
    if not is_url(path):
        yield path
        return
    if not exists(path):
        raise FileNotFoundError(path)
    folder = tempfile.mkdtemp(prefix="wsk-")
    try:
        local = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])
        download(path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sync_down(url, local):
    """Copy every file under the folder ``url`` into the local folder ``local`` (made if needed);
    returns how many."""
    count = 0
    for found in walk_files(url):
        target = os.path.join(local, *found[len(url.rstrip("/")) + 1:].split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        download(found, target)
        count += 1
    return count


@contextlib.contextmanager
def local_folder(folder):
    """A local folder standing for ``folder``, for writers that need one (Keras ``fit``'s backups and
    logs, a SavedModel): ``folder`` itself when local; for a URL a temporary local folder holding a
    copy of its files (``sync_down``, so a resumed run finds its last backup), removed afterwards.
    What should last is uploaded by the caller (``sync_up``)."""
    if not is_url(folder):
        yield folder
        return
    local = tempfile.mkdtemp(prefix="wsk-folder-")
    try:
        sync_down(folder, local)
        yield local
    finally:
        shutil.rmtree(local, ignore_errors=True)


def sync_up(local, url):
    """Upload every file under the local folder ``local`` to the folder ``url``, one ``put`` each;
    returns how many."""
    count = 0
    for found in walk_files(local):
        relative = os.path.relpath(found, local).replace(os.sep, "/")
        upload(found, url.rstrip("/") + "/" + relative)
        count += 1
    return count
