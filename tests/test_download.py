"""download_file and extract_archive against a loopback HTTP server (no real network)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
from _loopback import LoopbackServer, unused_port

from clapnb import download
from clapnb.download import (EXTRACTED_MARKER, ArchiveError, DownloadError, download_and_extract,
                             download_file, extract_archive, file_digest)

PAYLOAD = os.urandom(300_000)  # random bytes: a wrongly joined download cannot match


@pytest.fixture
def loopback():
    """An HTTP server on 127.0.0.1 serving what the test adds; stopped afterwards."""
    with LoopbackServer() as server:
        yield server


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The suite runs with CLAPNB_OFFLINE=1; these tests talk to 127.0.0.1 only."""
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None,
             mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            payload = (data or {}).get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def make_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    link = tarfile.TarInfo(name)
    link.type, link.linkname = kind, target
    return link


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".tmp")))


def everything(folder: Path) -> list[str]:
    """Every path under a folder (links not followed), relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------
# download_file
# ---------------------------------------------------------------------------------
def test_download_verified_and_atomic(loopback, tmp_path):
    url = loopback.add("/file.bin", PAYLOAD)
    dest = tmp_path / "sub" / "file.bin"
    out = download_file(url, dest, sha256=sha(PAYLOAD), size=len(PAYLOAD), desc="test")
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == []
    # a second call finds the verified file and does not touch the network
    download_file(url, dest, sha256=sha(PAYLOAD), size=len(PAYLOAD))
    assert len(loopback.hits("/file.bin")) == 1


def test_truncated_transfer_resumes_with_range(loopback, tmp_path):
    url = loopback.add("/cut.bin", PAYLOAD, truncate=[1000, 50_000])
    dest = download_file(url, tmp_path / "cut.bin", sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert loopback.hits("/cut.bin") == [None, "bytes=1000-", "bytes=51000-"]


def test_server_ignoring_range_restarts_cleanly(loopback, tmp_path):
    url = loopback.add("/norange.bin", PAYLOAD, honor_range=False, truncate=[70_000])
    dest = download_file(url, tmp_path / "norange.bin", size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD  # not the first 70 kB twice
    assert loopback.hits("/norange.bin") == [None, "bytes=70000-"]


def test_resume_from_part_left_by_an_earlier_session(loopback, tmp_path):
    url = loopback.add("/big.bin", PAYLOAD)
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:123_456])
    dest = download_file(url, tmp_path / "big.bin", sha256=sha(PAYLOAD), size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert loopback.hits("/big.bin") == ["bytes=123456-"]


def test_stale_part_longer_than_file_is_restarted(loopback, tmp_path):
    url = loopback.add("/small.bin", PAYLOAD[:5000])
    (tmp_path / "small.bin.part").write_bytes(PAYLOAD[:9000])  # 416 from the server
    dest = download_file(url, tmp_path / "small.bin")
    assert dest.read_bytes() == PAYLOAD[:5000]
    assert loopback.hits("/small.bin") == ["bytes=9000-", None]


def test_transfer_that_always_stops_early_gives_a_clear_error(loopback, tmp_path):
    url = loopback.add("/flaky.bin", PAYLOAD, honor_range=False,
                       truncate=[10_000] * download.MAX_ATTEMPTS)
    with pytest.raises(DownloadError, match="stopped early") as err:
        download_file(url, tmp_path / "flaky.bin")
    assert url in str(err.value) and "call again" in str(err.value)
    assert not (tmp_path / "flaky.bin").exists()
    assert len(loopback.hits("/flaky.bin")) == download.MAX_ATTEMPTS


def test_wrong_checksum_deletes_the_file(loopback, tmp_path):
    url = loopback.add("/bad.bin", PAYLOAD)
    with pytest.raises(DownloadError, match="SHA256 is") as err:
        download_file(url, tmp_path / "bad.bin", sha256=sha(b"something else"))
    assert url in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_deletes_the_file(loopback, tmp_path):
    url = loopback.add("/short.bin", PAYLOAD)
    with pytest.raises(DownloadError, match="expected 300,001"):
        download_file(url, tmp_path / "short.bin", size=len(PAYLOAD) + 1)
    assert list(tmp_path.iterdir()) == []


def test_damaged_cached_file_is_downloaded_again(loopback, tmp_path):
    url = loopback.add("/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"corrupted")
    download_file(url, dest, sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and len(loopback.hits("/file.bin")) == 1


def test_offline_refuses_before_any_request(loopback, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    url = loopback.add("/file.bin", PAYLOAD)
    with pytest.raises(DownloadError, match="CLAPNB_OFFLINE=1") as err:
        download_file(url, tmp_path / "file.bin")
    assert url in str(err.value)
    assert loopback.requests == [] and list(tmp_path.iterdir()) == []


def test_offline_still_returns_an_already_verified_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)
    assert download_file("http://127.0.0.1:9/never", dest, sha256=sha(PAYLOAD)) == dest


def test_unreachable_server_names_url_and_fix(tmp_path):
    url = f"http://127.0.0.1:{unused_port()}/file.bin"
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "file.bin")
    message = str(err.value)
    assert url in message and "Colab" in message and "CLAPNB_OFFLINE=1" in message


def test_http_error_is_reported(loopback, tmp_path):
    url = loopback.add("/gone.bin", b"", status=404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(loopback.base_url + "/missing.bin", tmp_path / "x.bin")
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(url, tmp_path / "gone.bin")


def test_file_digest(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert file_digest(tmp_path / "f") == sha(PAYLOAD)
    assert file_digest(tmp_path / "f", "md5") == hashlib.md5(PAYLOAD).hexdigest()


def test_md5_is_checked_too(loopback, tmp_path):
    url = loopback.add("/file.bin", PAYLOAD)
    with pytest.raises(DownloadError, match="MD5"):
        download_file(url, tmp_path / "a.bin", md5=hashlib.md5(b"other").hexdigest())
    assert list(tmp_path.iterdir()) == []
    download_file(url, tmp_path / "b.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    assert (tmp_path / "b.bin").read_bytes() == PAYLOAD


# planted links: anyone who can write to a shared cache folder could plant them
VICTIM = b"a user's file outside the cache\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    (tmp_path / "home").mkdir()
    path = tmp_path / "home" / "notes.txt"
    path.write_bytes(VICTIM)
    return path


@pytest.mark.parametrize("size", [None, len(VICTIM)])  # the size of the victim: "already complete"
def test_planted_part_symlink_is_refused(loopback, tmp_path, victim, size):
    url = loopback.add("/file.bin", PAYLOAD)
    (tmp_path / "cache").mkdir()
    part = tmp_path / "cache" / "file.bin.part"
    part.symlink_to(victim)
    with pytest.raises(DownloadError, match=r"file\.bin\.part is a symbolic link") as err:
        download_file(url, tmp_path / "cache" / "file.bin", size=size)
    assert str(victim) in str(err.value) and "delete file.bin.part yourself" in str(err.value)
    assert victim.read_bytes() == VICTIM  # not appended to, truncated or moved
    assert part.is_symlink() and not (tmp_path / "cache" / "file.bin").exists()  # nothing deleted or moved
    assert loopback.requests == []  # refused before any request


def test_planted_dangling_part_symlink_creates_nothing_outside(loopback, tmp_path):
    url = loopback.add("/file.bin", PAYLOAD)
    part = tmp_path / "file.bin.part"
    part.symlink_to(tmp_path / "elsewhere.txt")  # plain open(part, "wb") would create this
    with pytest.raises(DownloadError, match="symbolic link"):
        download_file(url, tmp_path / "file.bin")
    assert not (tmp_path / "elsewhere.txt").exists() and part.is_symlink()


def test_planted_part_hard_link_is_refused(loopback, tmp_path, victim):
    url = loopback.add("/file.bin", PAYLOAD)
    part = tmp_path / "file.bin.part"
    os.link(victim, part)
    with pytest.raises(DownloadError, match="2 names"):
        download_file(url, tmp_path / "file.bin")
    assert victim.read_bytes() == VICTIM and loopback.requests == []


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW on this OS")
def test_part_link_planted_after_the_check_is_not_followed(loopback, tmp_path, victim, monkeypatch):
    """A link swapped in between the check and the open: O_NOFOLLOW refuses it."""
    url = loopback.add("/file.bin", PAYLOAD)
    monkeypatch.setattr(download, "_part_size", lambda part: 0)  # the check sees nothing
    (tmp_path / "file.bin.part").symlink_to(victim)
    with pytest.raises(DownloadError, match="symbolic link"):
        download_file(url, tmp_path / "file.bin")
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("swap", ["symlink", "other file"])
def test_part_swapped_before_the_rename_is_not_moved_into_place(loopback, tmp_path, victim,
                                                                 monkeypatch, swap):
    url = loopback.add("/file.bin", PAYLOAD)
    part, dest = tmp_path / "file.bin.part", tmp_path / "file.bin"
    check = download._check_file

    def check_then_swap(f, *args):
        problem = check(f, *args)  # the verified file ...
        part.unlink()  # ... is replaced before the rename
        part.symlink_to(victim) if swap == "symlink" else part.write_bytes(PAYLOAD)
        return problem

    monkeypatch.setattr(download, "_check_file", check_then_swap)
    with pytest.raises(DownloadError, match="symbolic link" if swap == "symlink" else "was replaced"):
        download_file(url, dest, sha256=sha(PAYLOAD))
    assert not dest.exists() and not dest.is_symlink() and victim.read_bytes() == VICTIM


def test_destination_symlink_is_replaced_not_written_through(loopback, tmp_path, victim):
    url = loopback.add("/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.symlink_to(victim)  # fails the checksum: fetched again
    assert download_file(url, dest, sha256=sha(PAYLOAD)) == dest
    assert not dest.is_symlink() and dest.read_bytes() == PAYLOAD
    assert victim.read_bytes() == VICTIM


# ---------------------------------------------------------------------------------
# extract_archive
# ---------------------------------------------------------------------------------
FILES = {"top/a.txt": b"alpha", "top/sub/b.bin": os.urandom(2000)}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != EXTRACTED_MARKER}


def test_download_then_extract_zip(loopback, tmp_path):
    url = loopback.add("/good.zip", make_zip(FILES))
    archive = download_file(url, tmp_path / "good.zip")
    target = extract_archive(archive, tmp_path / "out")
    assert tree(target) == FILES and (target / EXTRACTED_MARKER).is_file()
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["good.zip", "out"]


def test_extract_is_idempotent(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip(FILES))
    target = extract_archive(archive, tmp_path / "out")
    (target / "top" / "a.txt").write_bytes(b"edited")  # a re-extraction would undo this
    archive.unlink()  # and would need the archive
    assert extract_archive(archive, target) == target
    assert (target / "top" / "a.txt").read_bytes() == b"edited"


@pytest.mark.parametrize("name,mode", [("a.tar.gz", "w:gz"), ("a.tgz", "w:gz"), ("a.tar", "w"),
                                       ("a.tar.bz2", "w:bz2"), ("a.tar.xz", "w:xz")])
def test_extract_tar(tmp_path, name, mode):
    archive = tmp_path / name
    archive.write_bytes(make_tar([tarfile.TarInfo(n) for n in FILES], FILES, mode))
    target = extract_archive(archive, tmp_path / "out")
    assert tree(target) == FILES and leftovers(tmp_path) == []


def test_served_archive_with_dotdot_member_is_refused(loopback, tmp_path):
    url = loopback.add("/evil.zip", make_zip({"top/ok.txt": b"ok", "top/../../escaped.txt": b"x"}))
    archive = download_file(url, tmp_path / "dl" / "evil.zip")
    with pytest.raises(ArchiveError, match=r"\.\./\.\./escaped\.txt.*outside"):
        extract_archive(archive, tmp_path / "dl" / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "dl" / "out").exists()
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "a/../../evil", "C:\\evil", "..\\evil"])
def test_unsafe_member_names_are_refused(tmp_path, name):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar([tarfile.TarInfo(name)], {name: b"x"}))
    with pytest.raises(ArchiveError, match="outside"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind,linkname", [(tarfile.SYMTYPE, "../../outside"),
                                           (tarfile.SYMTYPE, "/etc/passwd"),
                                           (tarfile.SYMTYPE, "a.txt"),  # inside: refused too
                                           (tarfile.LNKTYPE, "../outside"),
                                           (tarfile.LNKTYPE, "top/a.txt")])
def test_tar_links_are_refused_wherever_they_point(tmp_path, kind, linkname):
    files = [tarfile.TarInfo(n) for n in FILES]  # written first in the archive ...
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar(files + [make_link("top/link", linkname, kind)], FILES))
    kind_name = "symbolic" if kind == tarfile.SYMTYPE else "hard"
    with pytest.raises(ArchiveError, match=rf"member 'top/link' is a {kind_name} link \(to "
                                           rf"'{re.escape(linkname)}'\).*not the expected dataset "
                                           r"archive.*download it again.*report it"):
        extract_archive(archive, tmp_path / "out")
    assert everything(tmp_path) == ["a.tar.gz"]  # ... yet nothing was extracted, nothing left


@pytest.mark.parametrize("data_filter", [True, False])
def test_tar_symlink_chain_cannot_write_outside(tmp_path, monkeypatch, data_filter):
    """a -> ., a/b -> .. (each harmless-looking), then a/b/escaped.txt lands next to the
    target: the link chain that escapes where tarfile has no "data" filter (3.10.0-11,
    3.11.0-3), and that, made long enough, defeats the filter (CVE-2025-4517)."""
    if not data_filter:  # play a Python without it
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    members = [make_link("a", "."), make_link("a/b", ".."), tarfile.TarInfo("a/b/escaped.txt")]
    (tmp_path / "dl").mkdir()
    archive = tmp_path / "dl" / "chain.tar"
    archive.write_bytes(make_tar(members, {"a/b/escaped.txt": b"pwned"}, mode="w"))
    with pytest.raises(ArchiveError, match=r"member 'a' is a symbolic link \(to '\.'\)"):
        extract_archive(archive, tmp_path / "dl" / "out")
    assert everything(tmp_path) == ["dl", "dl/chain.tar"]  # no escaped.txt anywhere, no out/


@pytest.mark.parametrize("linkname", ["../../secret", "a.txt"])
def test_zip_symlink_is_refused(tmp_path, linkname):
    info = zipfile.ZipInfo("top/link")
    info.external_attr = (0o120777 << 16)  # what `zip --symlinks` writes for a link
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("top/a.txt", b"alpha")  # before the link: must not be extracted either
        zf.writestr(info, linkname)
    archive = tmp_path / "a.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(ArchiveError, match=r"member 'top/link' is a symbolic link.*not the expected"):
        extract_archive(archive, tmp_path / "out")
    assert everything(tmp_path) == ["a.zip"]


def test_tar_served_as_zip_is_refused(loopback, tmp_path):
    tar = make_tar([tarfile.TarInfo(n) for n in FILES], FILES)
    url = loopback.add("/data.zip", tar)
    with pytest.raises(ArchiveError, match="data.zip is a tar archive, but a zip archive was "
                                           "expected: it is not the expected dataset archive"):
        download_and_extract(url, tmp_path / "data.zip", tmp_path / "out")
    assert everything(tmp_path) == []  # archive deleted, nothing extracted
    archive = tmp_path / "data.bin"
    archive.write_bytes(tar)
    with pytest.raises(ArchiveError, match="is a tar archive, but a zip"):
        extract_archive(archive, tmp_path / "out", fmt="zip")
    assert tree(extract_archive(archive, tmp_path / "out", fmt="tar")) == FILES  # the right format


def test_zip_saved_as_tar_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_zip(FILES))
    with pytest.raises(ArchiveError, match="is a zip archive, but a tar archive was expected"):
        extract_archive(archive, tmp_path / "out")
    assert everything(tmp_path) == ["a.tar.gz"]


def test_tar_ending_with_a_zip_is_a_tar(tmp_path):
    """zipfile.is_zipfile also finds a zip stored at the end of a tar (and zipfile would
    unpack it): the tar header is what counts."""
    inner = make_zip({"inner.txt": b"from the zip"})
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_tar([tarfile.TarInfo("inner.zip")], {"inner.zip": inner}, mode="w"))
    assert zipfile.is_zipfile(archive)
    with pytest.raises(ArchiveError, match="is a tar archive, but a zip"):
        extract_archive(archive, tmp_path / "out")
    assert tree(extract_archive(archive, tmp_path / "out", fmt="tar")) == {"inner.zip": inner}


def test_archive_format_comes_from_fmt_or_the_name(tmp_path):
    assert download.archive_format("x/ESC-50-master.zip") == "zip"
    assert download.archive_format("clotho_audio_evaluation.7z") == "7z"
    assert download.archive_format("A.TAR.GZ") == "tar" and download.archive_format("a.tgz") == "tar"
    assert download.archive_format("data.bin", "7z") == "7z"
    with pytest.raises(ValueError, match=r"data\.bin.*pass fmt="):
        extract_archive(tmp_path / "data.bin", tmp_path / "out")
    with pytest.raises(ValueError, match=r"fmt='rar'.*'7z', 'tar', 'zip'"):
        download_and_extract("http://127.0.0.1:9/never", tmp_path / "a.rar", tmp_path / "out",
                             fmt="rar")
    assert list(tmp_path.iterdir()) == []  # refused before any download


def test_corrupted_zip_is_reported_as_damaged(tmp_path):
    data = bytearray(make_zip(FILES))
    data[data.find(FILES["top/sub/b.bin"]) + 100] ^= 0xFF  # CRC no longer matches
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="damaged.*Bad CRC"):
        extract_archive(archive, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [archive]


def test_download_and_extract(loopback, tmp_path):
    url = loopback.add("/good.zip", make_zip(FILES))
    target = download_and_extract(url, tmp_path / "good.zip", tmp_path / "out")
    assert tree(target) == FILES and not (tmp_path / "good.zip").exists()  # archive removed
    assert download_and_extract(url, tmp_path / "good.zip", target) == target
    assert len(loopback.hits("/good.zip")) == 1  # extracted already: no second download


def test_download_and_extract_deletes_a_bad_archive(loopback, tmp_path):
    url = loopback.add("/evil.zip", make_zip({"../evil.txt": b"x"}))
    with pytest.raises(ArchiveError, match="outside"):
        download_and_extract(url, tmp_path / "evil.zip", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing kept: the next call downloads afresh


def test_not_an_archive(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ArchiveError, match="not a zip, tar or 7z"):
        extract_archive(archive, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [archive]


def test_existing_unmarked_target_is_not_overwritten(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip(FILES))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    with pytest.raises(ArchiveError, match="no completed extraction"):
        extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"
    (tmp_path / "out" / "mine.txt").unlink()  # an empty folder is fine
    assert tree(extract_archive(archive, tmp_path / "out")) == FILES


def test_extract_7z(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    archive = tmp_path / "a.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        for name, data in FILES.items():
            z.writestr(data, name)
    assert tree(extract_archive(archive, tmp_path / "out")) == FILES


def test_7z_with_a_symlink_is_refused(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "link").symlink_to("/etc/passwd")
    archive = tmp_path / "a.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(tmp_path / "src" / "link", "top/link")
    with pytest.raises(ArchiveError, match=r"member 'top/link' is a symbolic link.*not the expected"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_7z_saved_as_zip_is_refused(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    archive = tmp_path / "a.zip"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.writestr(b"alpha", "top/a.txt")
    with pytest.raises(ArchiveError, match="is a 7z archive, but a zip"):
        extract_archive(archive, tmp_path / "out")
    assert everything(tmp_path) == ["a.zip"]


# ---------------------------------------------------------------------------------
# The mirror (CLAPNB_MIRROR): same paths under the host's name, its own manifest
# ---------------------------------------------------------------------------------
def test_without_a_mirror_the_real_address_and_digests_apply(monkeypatch):
    monkeypatch.delenv("CLAPNB_MIRROR", raising=False)
    src = download.source("https://example.org/a.bin?download=1", sha256="ab" * 32, size=3)
    assert src == download.Source("https://example.org/a.bin?download=1", sha256="ab" * 32,
                                  size=3, mirrored=False)


def test_the_mirror_serves_each_host_under_its_name_with_its_own_digests(loopback, tmp_path,
                                                                         monkeypatch):
    payload = b"rehearsal bytes"
    digest = hashlib.sha256(payload).hexdigest()
    loopback.add("/manifest.json", json.dumps(
        {"zenodo.org/records/1/files/x.csv": {"size": len(payload), "sha256": digest}}).encode())
    loopback.add("/zenodo.org/records/1/files/x.csv", payload)
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    monkeypatch.setenv("CLAPNB_MIRROR", loopback.base_url + "/")
    monkeypatch.setattr(download, "_manifests", {})
    real = "https://zenodo.org/records/1/files/x.csv?download=1"
    src = download.source(real, sha256="0" * 64, size=999)          # the real digests give way
    assert src.mirrored and src.sha256 == digest and src.size == len(payload)
    assert src.url == loopback.base_url + "/zenodo.org/records/1/files/x.csv?download=1"
    out = download.download_file(real, tmp_path / "x.csv", sha256="0" * 64, size=999)
    assert out.read_bytes() == payload
    with pytest.raises(DownloadError, match=r"has no zenodo.org/records/2/y.csv; rebuild it"):
        download.source("https://zenodo.org/records/2/y.csv")


def test_an_unreachable_mirror_says_how_to_go_back_to_the_real_hosts(monkeypatch):
    monkeypatch.setenv("CLAPNB_MIRROR", f"http://127.0.0.1:{unused_port()}")
    monkeypatch.setattr(download, "_manifests", {})
    with pytest.raises(DownloadError, match="is the mirror running.*Unset CLAPNB_MIRROR"):
        download.source("https://github.com/a/b.zip")


def test_a_file_without_a_published_checksum_is_accepted_with_a_warning(loopback, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    url = loopback.add("/plain.bin", b"12345")
    with pytest.warns(download.UnverifiedDownload, match=r"accepted unverified.*size \(5 bytes\)"):
        download.download_file(url, tmp_path / "plain.bin", size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # a digest: no warning
        download.download_file(url, tmp_path / "again.bin", md5="827ccb0eea8a706c4c34a16891f84e7b")
