"""Verified, resumable downloads and safe archive extraction.

Every file clapnb fetches (checkpoints, ESC-50, Clotho) goes through
:func:`download_file`:

* it streams into ``<dest>.part`` with a progress bar and, when a ``.part`` is
  already there, asks the server for the rest only (HTTP ``Range``); a server
  that ignores ``Range`` gets a clean restart;
* a transfer that stops early is resumed a few times before giving up;
* the size and checksum (SHA-256 or MD5), where known, are checked before the
  file is renamed into place (atomically), so the cache never holds a bad file;
* the ``.part`` file is opened without following links and must be a plain
  file with one name: a link planted in a shared cache folder cannot make a
  download write into (or be renamed over) a file elsewhere;
* with ``CLAPNB_OFFLINE=1`` nothing is downloaded: a clear :class:`DownloadError`;
* with ``CLAPNB_MIRROR`` set (the rehearsal), every address goes to the local mirror
  instead (:func:`source`), and the mirror's own manifest of sizes and digests replaces
  the real ones; without it the real digests apply;
* a file with no published digest is accepted on its size alone, and the message
  says so (:class:`UnverifiedDownload`).

:func:`extract_archive` unpacks zip, tar(.gz/.bz2/.xz) and 7z archives into a
temporary folder, then renames the folder into place; a marker file makes a
second call free. Only the format the source is known to use is unpacked, and
an archive holding a link, a device, or a member that would land outside the
target is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen


from clapnb.settings import MIRROR_ENV, OFFLINE_ENV, mirror, offline, progress_bar

#: how many times a transfer that stops early is resumed before giving up
MAX_ATTEMPTS = 5
#: seconds to wait for the server to connect or send more bytes
TIMEOUT_S = 30
#: file written inside a folder by :func:`extract_archive` once it is complete
EXTRACTED_MARKER = ".clapnb-extracted"

_CHUNK = 1 << 20
_USER_AGENT = "clapnb/0.1 (Python urllib)"
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
#: archive formats :func:`extract_archive` unpacks, by file name ending
ARCHIVE_SUFFIXES = {".zip": "zip", ".7z": "7z", ".tar": "tar", ".tar.gz": "tar", ".tgz": "tar",
                    ".tar.bz2": "tar", ".tbz2": "tar", ".tar.xz": "tar", ".txz": "tar"}
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: a tar inside
#: open flags of partial downloads: never follow a link (where the OS can tell)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_OFFLINE_FIX = (f"no network? Run the notebook in Colab, or set {OFFLINE_ENV}=1 "
                "to use the offline model (TinyCLAP)")


class DownloadError(RuntimeError):
    """A file could not be downloaded or verified; the message says how to fix it."""


class UnverifiedDownload(UserWarning):
    """A file was accepted without a checksum (none is published for it): size only."""


#: the file every mirror serves at its root: ``{"host/path": {"size": N, "sha256": HEX}}``
MIRROR_MANIFEST = "manifest.json"
_manifests: dict[str, dict[str, dict]] = {}


@dataclass(frozen=True)
class Source:
    """Where a file really comes from, and what it must be.

    url: the address to fetch (the real one, or the mirror's stand-in for it).
    sha256, md5, size: the expected digests and size (``None``: not checked).
    mirrored: True when ``url`` is the local mirror's (a rehearsal).
    """

    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    mirrored: bool = False


def source(url: str, *, sha256: str | None = None, size: int | None = None,
           md5: str | None = None) -> Source:
    """Where to fetch ``url`` from, and how to check it.

    Without ``CLAPNB_MIRROR`` that is ``url`` with the given checks. With it, the mirror
    serves the same path under the host's name (``https://github.com/a/b.zip`` ->
    ``$CLAPNB_MIRROR/github.com/a/b.zip``, the query kept) and its manifest gives the
    size and SHA-256 of what it serves.
    """
    base = mirror()
    if base is None:
        return Source(url, sha256=sha256, md5=md5, size=size)
    parts = urlsplit(url)
    key = parts.netloc + parts.path
    entry = _mirror_manifest(base).get(key)
    if entry is None:
        raise DownloadError(f"the mirror at {base} ({MIRROR_ENV}) has no {key}; rebuild it "
                            "(python scripts/mirror.py build DIR) or unset CLAPNB_MIRROR to use "
                            "the real host")
    mirrored = f"{base}/{key}" + (f"?{parts.query}" if parts.query else "")
    return Source(mirrored, sha256=entry["sha256"], size=entry["size"], mirrored=True)


def _mirror_manifest(base: str) -> dict[str, dict]:
    """The mirror's manifest, fetched once per process."""
    if base not in _manifests:
        try:
            with urlopen(Request(f"{base}/{MIRROR_MANIFEST}", headers={"User-Agent": _USER_AGENT}),
                         timeout=TIMEOUT_S) as response:
                _manifests[base] = json.loads(response.read())
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise DownloadError(f"cannot read the mirror's manifest at {base}/{MIRROR_MANIFEST} "
                                f"({e}); is the mirror running? Unset {MIRROR_ENV} to use the "
                                "real hosts") from e
    return _manifests[base]


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
            error, transfer stopped early too often, wrong size/checksum (the
            bad file is deleted), or ``<dest>.part`` is a link or not a plain
            file (then nothing is written or deleted; the message says what to do).
    """
    dest = Path(dest)
    src = source(url, sha256=sha256, size=size, md5=md5)
    url, sha256, md5, size = src.url, src.sha256, src.md5, src.size
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
        raise DownloadError(f"the download of {url} stopped early {MAX_ATTEMPTS} times "
                            f"({_part_size(part):,} bytes so far, kept in {part}); check the "
                            f"connection and call again to resume. {_OFFLINE_FIX}.")
    with os.fdopen(_open_part(part, os.O_RDONLY), "rb") as f:
        problem = _check_file(f, sha256, md5, size)
        verified = os.fstat(f.fileno())
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{url}: {problem}; the file was deleted. Call again to retry; "
                            "if it keeps failing, the file on the server has changed.")
    _move_into_place(part, dest, verified)
    if sha256 is None and md5 is None:
        warnings.warn(f"{dest.name} was accepted unverified: no checksum is published for "
                      f"{url}, so only its size{'' if size is None else f' ({size:,} bytes)'} "
                      "was checked", UnverifiedDownload, stacklevel=2)
    return dest


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"``, ``"md5"``, ...), read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return _digest(f, algorithm)


def _digest(f: BinaryIO, algorithm: str) -> str:
    """Hex digest of an open file, from its first byte."""
    digest = hashlib.new(algorithm)
    f.seek(0)
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, sha256: str | None, md5: str | None, size: int | None) -> str | None:
    """What is wrong with a downloaded file, or ``None`` when it matches."""
    with open(path, "rb") as f:
        return _check_file(f, sha256, md5, size)


def _check_file(f: BinaryIO, sha256: str | None, md5: str | None, size: int | None) -> str | None:
    """:func:`_check` of an open file."""
    actual = os.fstat(f.fileno()).st_size
    if size is not None and actual != size:
        return f"got {actual:,} bytes, expected {size:,}"
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and (digest := _digest(f, algorithm)) != expected.lower():
            return f"{algorithm.upper()} is {digest}, expected {expected.lower()}"
    return None


def _check_plain(part: Path, st: os.stat_result) -> None:
    """Refuse a partial download that is a link, not a plain file, or a file with other names.

    Anyone who can write to a shared cache folder could plant such a ``.part``
    to make the next download write into a file of their choosing.
    """
    if stat.S_ISLNK(st.st_mode):
        try:
            what = f"a symbolic link (to {os.readlink(part)!r})"
        except OSError:
            what = "a symbolic link"
    elif not stat.S_ISREG(st.st_mode):
        what = "not a plain file"
    elif st.st_nlink > 1:
        what = f"a file with {st.st_nlink} names (hard links)"
    else:
        return
    raise DownloadError(f"{part} is {what}; clapnb writes downloads only into plain files of its "
                        "own, so nothing was written, moved or deleted. Someone who can write to "
                        f"{part.parent} may have put it there: check that folder, delete {part.name} "
                        "yourself (that removes the link, not what it points to) and call again.")


def _part_size(part: Path) -> int:
    """Bytes already in ``part`` (0 when there is none); refuses an unsafe ``part``."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    _check_plain(part, st)
    return st.st_size


def _open_part(part: Path, flags: int) -> int:
    """A descriptor of ``part`` opened without following a link (see :func:`_check_plain`)."""
    _part_size(part)  # refuses a link also where the OS has no O_NOFOLLOW
    try:  # O_NONBLOCK: a pipe swapped in meanwhile must not hang the open (no-op for files)
        fd = os.open(part, flags | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError:
        if os.path.islink(part):  # swapped for a link after the check: O_NOFOLLOW refused it
            _check_plain(part, os.lstat(part))
        raise
    try:
        _check_plain(part, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _move_into_place(part: Path, dest: Path, verified: os.stat_result) -> None:
    """Rename the verified ``part`` to ``dest``, unless ``part`` was swapped meanwhile.

    A rename moves the name ``part`` and replaces the name ``dest``; it follows
    neither, so a link at ``dest`` is replaced, never written through.
    """
    st = os.lstat(part)
    _check_plain(part, st)
    if (st.st_dev, st.st_ino) != (verified.st_dev, verified.st_ino):
        raise DownloadError(f"{part} was replaced while it was being verified; nothing was moved "
                            f"to {dest}. Check who else writes to {part.parent}, then call again.")
    os.replace(part, dest)


def _fetch(url: str, part: Path, size: int | None, desc: str) -> bool:
    """One attempt: append what is missing to ``part``. True when it is complete."""
    offset = _part_size(part)
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
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if start else os.O_TRUNC)
        with os.fdopen(_open_part(part, flags), "ab" if start else "wb") as f, \
                progress_bar(total=total, initial=start, desc=desc, unit="B", unit_scale=True,
                     unit_divisor=1024) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                dropped = True  # connection lost: the next attempt resumes
    received = _part_size(part)
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
                         desc: str | None = None, md5: str | None = None,
                         fmt: str | None = None) -> Path:
    """:func:`download_file` then :func:`extract_archive`; returns ``target``.

    Nothing is downloaded when ``target`` is already extracted. The archive is
    deleted once unpacked, and also when it turns out damaged, unsafe or of
    another format than ``fmt`` (default: from the name of ``archive``), so that
    the next call fetches a fresh copy.
    """
    target = Path(target)
    fmt = archive_format(archive, fmt)  # a bad name fails before any download
    if (target / EXTRACTED_MARKER).is_file():
        return target
    archive = download_file(url, archive, sha256=sha256, size=size, desc=desc, md5=md5)
    try:
        extract_archive(archive, target, fmt=fmt)
    except ArchiveError:
        archive.unlink()
        raise
    archive.unlink()
    return target


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike, *,
                    fmt: str | None = None) -> Path:
    """Unpack a zip, tar(.gz/.bz2/.xz) or 7z archive into ``target``; return ``target``.

    ``fmt`` (``"zip"``, ``"tar"`` or ``"7z"``; default: from the file name, see
    :data:`ARCHIVE_SUFFIXES`) is the format the source is known to use; an
    archive whose bytes are another format is refused. The archive is unpacked
    into a temporary sibling folder that is renamed to ``target`` only when
    complete, with a marker file inside; a later call sees the marker and
    returns at once. Every member is checked before anything is written:
    absolute paths, ``..`` components, symbolic or hard links (no dataset
    clapnb downloads has any) and devices are refused (:class:`ArchiveError`).
    """
    archive, target = Path(archive), Path(target)
    fmt = archive_format(archive, fmt)
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
            n_members = _extract_into(archive, tmp, fmt)
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


def archive_format(archive: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` checked, or the format named by the ending of ``archive`` (``.zip``, ``.tgz``...)."""
    formats = sorted(set(ARCHIVE_SUFFIXES.values()))
    if fmt is not None:
        if fmt not in formats:
            raise ValueError(f"fmt={fmt!r} is not an archive format clapnb unpacks; "
                             f"pass one of {', '.join(map(repr, formats))}")
        return fmt
    name = Path(archive).name.lower()
    for suffix, found in sorted(ARCHIVE_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return found
    raise ValueError(f"cannot tell the archive format of {Path(archive).name!r} from its name; "
                     f"pass fmt= one of {', '.join(map(repr, formats))} (the format the source "
                     f"publishes), or name it with one of {', '.join(ARCHIVE_SUFFIXES)}")


def _sniff(archive: Path) -> str | None:
    """The format of ``archive`` judged from its bytes: ``"zip"``, ``"tar"``, ``"7z"`` or None."""
    with open(archive, "rb") as f:
        head = f.read(512)
    if head.startswith(_7Z_MAGIC):
        return "7z"
    # a tar before zip: a tar may end with a zip inside, which is_zipfile would find
    if head.startswith(_COMPRESSED_MAGIC) or head[257:262] == b"ustar":
        return "tar" if tarfile.is_tarfile(archive) else None
    if zipfile.is_zipfile(archive):
        return "zip"
    return "tar" if tarfile.is_tarfile(archive) else None  # an old (v7) tar has no magic


def _extract_into(archive: Path, folder: Path, fmt: str) -> int:
    """Check the format and every member, then unpack; returns the number of members."""
    found = _sniff(archive)
    if found is None:
        raise ArchiveError(f"{archive} is not a zip, tar or 7z archive (damaged download, or "
                           "an error page?); delete it and download it again")
    if found != fmt:
        raise ArchiveError(f"{archive.name} is a {found} archive, but a {fmt} archive was "
                           "expected: it is not the expected dataset archive, and nothing was "
                           "extracted. Delete it and download it again; if it happens again, "
                           "report it (the server sent something else)")
    if fmt == "7z":
        return _extract_7z(archive, folder)
    if fmt == "zip":
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for m in members:
                _check_member(archive, m.filename)
                if stat.S_ISLNK(m.external_attr >> 16):  # Unix mode in the high 16 bits
                    _refuse_link(archive, m.filename, "a symbolic link")
            zf.extractall(folder)
        return len(members)
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:  # all of them, before anything is written
            _check_member(archive, m.name)
            if m.issym() or m.islnk():
                kind = "a symbolic" if m.issym() else "a hard"
                _refuse_link(archive, m.name, f"{kind} link (to {m.linkname!r})")
            elif not (m.isfile() or m.isdir()):
                raise ArchiveError(f"{archive.name}: member {m.name!r} is a device or pipe; "
                                   "refusing to extract this archive")
        # the "data" filter (Python >= 3.10.12, 3.11.4) re-checks all of the above
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(folder, members=members, **extra)
    return len(members)


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
                _refuse_link(archive, m.filename, "a symbolic link")
        for f in getattr(z, "files", ()):  # py7zr's own entries also tell junctions and sockets
            if getattr(f, "is_junction", False) or getattr(f, "is_socket", False):
                _refuse_link(archive, f.filename, "a Windows junction or a socket")
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


def _refuse_link(archive: Path, name: str, what: str) -> None:
    """Refuse an archive holding a link, wherever it points.

    Chained links (``a -> .``, ``a/b -> ..``, then a file written through
    ``a/b/...``) escape the target even when each link looks harmless, and
    defeat tarfile's "data" filter (CVE-2025-4517) or work where it is missing
    (Python < 3.10.12 / 3.11.4); no archive clapnb downloads needs a link.
    """
    raise ArchiveError(f"{archive.name}: member {name!r} is {what}; no dataset archive clapnb "
                       "downloads holds links, so this is not the expected dataset archive and "
                       "nothing was extracted. Delete it and download it again; if it happens "
                       "again, report it (the file on the server may have been tampered with)")
