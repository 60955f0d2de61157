"""Verified, resumable downloads and safe archive extraction.

Every file clapnb fetches (checkpoints, ESC-50, Clotho) goes through
:func:`download_file`:

* it streams into ``<dest>.part`` with a progress bar and, when a ``.part`` is
  already there, asks the server for the rest only (HTTP ``Range``); a server
  that ignores ``Range`` gets a clean restart;
* a transfer that stops early is resumed a few times before giving up;
* the size and checksum (SHA-256 or MD5), where known, are checked before the
  file is renamed into place (atomically), so the cache never holds a bad file;
* with ``CLAPNB_OFFLINE=1`` nothing is downloaded: a clear :class:`DownloadError`.

:func:`extract_archive` unpacks zip, tar(.gz/.bz2/.xz) and 7z archives into a
temporary folder, refusing any member that would land outside the target, then
renames the folder into place; a marker file makes a second call free.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm  # plain text bars: widget bars can stall headless notebook runs (nbclient#312)

from clapnb.settings import OFFLINE_ENV, offline

#: how many times a transfer that stops early is resumed before giving up
MAX_ATTEMPTS = 5
#: seconds to wait for the server to connect or send more bytes
TIMEOUT_S = 30
#: file written inside a folder by :func:`extract_archive` once it is complete
EXTRACTED_MARKER = ".clapnb-extracted"

_CHUNK = 1 << 20
_USER_AGENT = "clapnb/0.1 (Python urllib)"
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
_OFFLINE_FIX = (f"no network? Run the notebook in Colab, or set {OFFLINE_ENV}=1 "
                "to use the offline model (TinyCLAP)")


class DownloadError(RuntimeError):
    """A file could not be downloaded or verified; the message says how to fix it."""


class ArchiveError(DownloadError):
    """An archive is unreadable or unsafe (a member would leave the target folder)."""


# ---------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------
def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
                  size: int | None = None, desc: str | None = None, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` unless a good copy is already there.

    A copy at ``dest`` that passes the given checks is returned without any
    network access (also offline); one that fails them is replaced.

    Args:
        url: http(s) address of the file.
        dest: where the file ends up; its folder is created.
        sha256: expected hex digest, checked when given.
        size: expected size in bytes, checked when given.
        desc: label of the progress bar (default: the file name).
        md5: expected hex MD5, checked when given (Zenodo publishes only MD5).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: offline (``CLAPNB_OFFLINE=1``), server unreachable, HTTP
            error, transfer stopped early too often, or wrong size/checksum (the
            bad file is deleted).
    """
    dest = Path(dest)
    if dest.is_file():
        problem = _check(dest, sha256, md5, size)
        if problem is None:
            return dest
        dest.unlink()  # a stale or damaged copy: fetch it again
    if offline():
        raise DownloadError(f"not downloading {url}: {OFFLINE_ENV}=1 forbids network access. "
                            f"Unset {OFFLINE_ENV} (or run in Colab) to download it, or keep "
                            "working offline with the offline model (TinyCLAP).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for _ in range(MAX_ATTEMPTS):
        if _fetch(url, part, size, desc or dest.name):
            break
    else:
        have = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"the download of {url} stopped early {MAX_ATTEMPTS} times "
                            f"({have:,} bytes so far, kept in {part}); check the connection "
                            f"and call again to resume. {_OFFLINE_FIX}.")
    problem = _check(part, sha256, md5, size)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: {problem}; the file was deleted. Call again to retry; "
                            "if it keeps failing, the file on the server has changed.")
    os.replace(part, dest)
    return dest


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"``, ``"md5"``, ...), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, sha256: str | None, md5: str | None, size: int | None) -> str | None:
    """What is wrong with a downloaded file, or ``None`` when it matches."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"got {actual:,} bytes, expected {size:,}"
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and (digest := file_digest(path, algorithm)) != expected.lower():
            return f"{algorithm.upper()} is {digest}, expected {expected.lower()}"
    return None


def _fetch(url: str, part: Path, size: int | None, desc: str) -> bool:
    """One attempt: append what is missing to ``part``. True when it is complete."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        if offset == size:
            return True
        part.unlink()  # longer than the real file: start again
        offset = 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as e:
        if e.code == 416 and offset:  # our .part does not fit the server's file
            part.unlink()
            return False
        raise DownloadError(f"{url} answered HTTP {e.code} ({e.reason}); check the address, "
                            "or try again later if the server is busy") from e
    except (URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not reach {url} ({reason}); {_OFFLINE_FIX}.") from e
    with response:
        start, total = _response_range(response, offset)
        if start is None:  # a range we did not ask for: start again
            part.unlink()
            return False
        dropped = False
        with open(part, "ab" if start else "wb") as f, \
                tqdm(total=total, initial=start, desc=desc, unit="B", unit_scale=True,
                     unit_divisor=1024) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                dropped = True  # connection lost: the next attempt resumes
    received = part.stat().st_size
    if total is not None and received > total:
        part.unlink()
        return False
    return not dropped and (total is None or received == total)


def _response_range(response, offset: int) -> tuple[int | None, int | None]:
    """(first byte of the body, total file size or None) of a 200 or 206 response.

    The first byte is ``None`` when the server sent a range other than ``offset-``.
    """
    if response.status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if m is None or int(m[1]) != offset:
            return None, None
        return offset, None if m[2] == "*" else int(m[2])
    length = response.headers.get("Content-Length")  # 200: the whole file (Range ignored)
    return 0, int(length) if length and length.isdigit() else None


# ---------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------
def download_and_extract(url: str, archive: str | os.PathLike, target: str | os.PathLike, *,
                         sha256: str | None = None, size: int | None = None,
                         desc: str | None = None, md5: str | None = None) -> Path:
    """:func:`download_file` then :func:`extract_archive`; returns ``target``.

    Nothing is downloaded when ``target`` is already extracted. The archive is
    deleted once unpacked, and also when it turns out damaged or unsafe, so that
    the next call fetches a fresh copy.
    """
    target = Path(target)
    if (target / EXTRACTED_MARKER).is_file():
        return target
    archive = download_file(url, archive, sha256=sha256, size=size, desc=desc, md5=md5)
    try:
        extract_archive(archive, target)
    except ArchiveError:
        archive.unlink()
        raise
    archive.unlink()
    return target


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack a zip, tar(.gz/.bz2/.xz) or 7z archive into ``target``; return ``target``.

    The archive is unpacked into a temporary sibling folder that is renamed to
    ``target`` only when complete, with a marker file inside; a later call sees
    the marker and returns at once. Members with absolute paths, ``..``
    components, links pointing outside the archive, or devices are refused
    (:class:`ArchiveError`) before anything is written.
    """
    archive, target = Path(archive), Path(target)
    if (target / EXTRACTED_MARKER).is_file():
        return target
    if target.exists() and any(target.iterdir()):
        raise ArchiveError(f"{target} exists but holds no completed extraction (no "
                           f"{EXTRACTED_MARKER} inside); delete it and call again")
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            n_members = _extract_into(archive, tmp)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise ArchiveError(f"{archive} is damaged ({e}); delete it and download it again") from e
        (tmp / EXTRACTED_MARKER).write_text(json.dumps(
            {"archive": archive.name, "bytes": archive.stat().st_size, "members": n_members}))
        tmp.chmod(0o755)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _extract_into(archive: Path, folder: Path) -> int:
    """Check every member, then unpack; returns the number of members."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for m in members:
                _check_member(archive, m.filename)
                if (m.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink
                    _check_link(archive, m.filename, zf.read(m).decode(), hard=False)
            zf.extractall(folder)  # zipfile writes links as small text files, never as links
        return len(members)
    with open(archive, "rb") as f:
        if f.read(6) == _7Z_MAGIC:
            return _extract_7z(archive, folder)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(archive, m.name)
                if m.issym() or m.islnk():
                    _check_link(archive, m.name, m.linkname, hard=m.islnk())
                elif not (m.isfile() or m.isdir()):
                    raise ArchiveError(f"{archive.name}: member {m.name!r} is a device or pipe; "
                                       "refusing to extract this archive")
            # the "data" filter (Python >= 3.10.12) re-checks all of the above
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(folder, members=members, **extra)
        return len(members)
    raise ArchiveError(f"{archive} is not a zip, tar or 7z archive (damaged download?); "
                       "delete it and download it again")


def _extract_7z(archive: Path, folder: Path) -> int:
    try:
        import py7zr
    except ImportError as e:
        raise ArchiveError(f"{archive.name} is a 7z archive: install py7zr to unpack it "
                           "(pip install py7zr)") from e
    with py7zr.SevenZipFile(archive) as z:
        members = z.list()
        for m in members:
            _check_member(archive, m.filename)
            if getattr(m, "is_symlink", False):
                raise ArchiveError(f"{archive.name}: member {m.filename!r} is a symbolic link; "
                                   "refusing to extract this archive")
        try:
            z.extractall(path=folder)
        except py7zr.exceptions.ArchiveError as e:
            raise ArchiveError(f"{archive} is damaged ({e}); delete it and download it again") from e
    return len(members)


def _check_member(archive: Path, name: str) -> None:
    """Refuse a member name that is absolute or climbs out with ``..``."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or PureWindowsPath(name).drive or ".." in path.parts:
        raise ArchiveError(f"{archive.name}: member {name!r} would be written outside the "
                           "target folder; the archive is unsafe and was not extracted")


def _check_link(archive: Path, name: str, link: str, hard: bool) -> None:
    """Refuse a link whose target is absolute or resolves outside the archive root.

    Symbolic links are relative to their own folder, hard links to the archive root.
    """
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, link.replace("\\", "/")))
    if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(f"{archive.name}: link {name!r} -> {link!r} points outside the "
                           "target folder; the archive is unsafe and was not extracted")
