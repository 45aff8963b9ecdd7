"""maybe_download: verified, atomic, re-fetching corrupt files, one clear error offline."""
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
import zipfile

import pytest

from datasets import download
from datasets.download import (
    ChecksumMismatchError,
    DataUnavailableError,
    DownloadError,
    download_all,
    extract_archive,
    maybe_download,
)
from tests.datasets.helpers import REAL_FETCH, no_temp_files, write_tar_gz

DATA = bytes(range(256)) * 9000  # 2.3 MB: large enough for the progress-bar code path
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    return src


def test_downloads_file_url_through_urllib_and_verifies_sha256(tmp_path, source, server):
    dest = tmp_path / "dl"
    path = maybe_download([source.as_uri()], "blob.bin", dest, sha256=SHA)
    assert path == dest / "blob.bin"
    assert path.read_bytes() == DATA
    assert server.calls == [source.as_uri()]
    assert no_temp_files(dest)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0600


def test_verifies_md5(tmp_path, source):
    path = maybe_download(source.as_uri(), "blob.bin", tmp_path / "dl", md5=MD5)
    assert path.read_bytes() == DATA
    with pytest.raises(ChecksumMismatchError):
        maybe_download(source.as_uri(), "other.bin", tmp_path / "dl", md5="0" * 32)
    assert not (tmp_path / "dl" / "other.bin").exists()


def test_intact_existing_file_is_not_fetched_again(tmp_path, server):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "blob.bin").write_bytes(DATA)
    path = maybe_download(["http://unreachable.invalid/blob.bin"], "blob.bin", dest, sha256=SHA)
    assert path.read_bytes() == DATA
    assert server.calls == []


def test_partial_existing_file_is_fetched_again(tmp_path, source, server):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "blob.bin").write_bytes(DATA[:1000])  # an interrupted earlier download
    path = maybe_download([source.as_uri()], "blob.bin", dest, sha256=SHA)
    assert path.read_bytes() == DATA
    assert len(server.calls) == 1


def test_without_digest_an_existing_file_is_trusted(tmp_path, server):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "x.npz").write_bytes(b"anything")
    assert maybe_download(["http://unreachable.invalid/x.npz"], "x.npz", dest).read_bytes() == b"anything"
    assert server.calls == []


def test_mismatching_download_raises_and_leaves_no_file(tmp_path, source):
    dest = tmp_path / "dl"
    with pytest.raises(ChecksumMismatchError) as info:
        maybe_download([source.as_uri()], "blob.bin", dest, sha256="ab" * 32)
    assert isinstance(info.value, RuntimeError)
    assert "checksum mismatch" in str(info.value) and SHA in str(info.value)
    assert list(dest.iterdir()) == []


def test_a_mirror_is_used_when_the_primary_fails_or_mismatches(tmp_path, source, server):
    wrong = tmp_path / "src" / "wrong.bin"
    wrong.write_bytes(b"an HTML error page")
    urls = ["http://primary.invalid/blob.bin", wrong.as_uri(), source.as_uri()]
    path = maybe_download(urls, "blob.bin", tmp_path / "dl", sha256=SHA)
    assert path.read_bytes() == DATA
    assert server.calls == urls
    assert no_temp_files(tmp_path / "dl")


def test_no_network_gives_one_error_naming_every_url_and_the_manual_path(tmp_path):
    urls = ["http://primary.invalid/a.zip", "https://mirror.invalid/a.zip"]
    dest = tmp_path / "dl"
    with pytest.raises(DataUnavailableError) as info:
        maybe_download(urls, "a.zip", dest, sha256=SHA, source="test data")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, DownloadError)
    for url in urls:
        assert url in message
    assert str((dest / "a.zip").resolve()) in message
    assert SHA in message and "test data" in message
    assert "network disabled in tests" in info.value.reason
    assert list(dest.iterdir()) == []


def test_corrupt_file_and_no_network_keeps_the_file_and_says_so_in_the_first_line(tmp_path):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "blob.bin").write_bytes(b"partial")
    actual = hashlib.sha256(b"partial").hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        maybe_download(["http://primary.invalid/blob.bin"], "blob.bin", dest, sha256=SHA)
    first_line = str(info.value).splitlines()[0]
    # The file at that path is corrupt (both digests), and what to do: not "place it at <path>".
    assert first_line.startswith(f"{(dest / 'blob.bin').resolve()} is corrupt (")
    assert f"sha256 {actual}, expected {SHA}" in first_line
    assert "delete it and rerun to download it again, or replace it with a correct copy" in first_line
    assert "network disabled in tests" in first_line and "by hand" not in first_line
    assert "Note:" not in str(info.value)
    assert "is corrupt" in info.value.reason
    assert (dest / "blob.bin").read_bytes() == b"partial"


def test_corrupt_file_in_a_group_of_downloads_is_named_in_the_first_line(tmp_path):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "one").write_bytes(b"overwritten")
    items = [(["http://a.invalid/one"], "one", SHA, None), (["http://a.invalid/two"], "two", None, None)]
    with pytest.raises(ChecksumMismatchError) as info:
        download_all(items, dest, "test set")
    first_line = str(info.value).splitlines()[0]
    assert f"{(dest / 'one').resolve()} is corrupt (sha256 " in first_line and SHA in first_line
    assert "delete any corrupt file" in first_line and "one, two" in first_line


def test_interrupted_transfer_leaves_no_partial_file(tmp_path):
    def flaky(url, out, **kwargs):
        out.write(DATA[:5000])
        raise ConnectionResetError("connection reset by peer")

    dest = tmp_path / "dl"
    with pytest.raises(DataUnavailableError, match="connection reset"):
        maybe_download(["http://x.invalid/blob.bin"], "blob.bin", dest, sha256=SHA, fetch=flaky)
    assert list(dest.iterdir()) == []


def test_body_shorter_than_content_length_is_rejected(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": "100"}

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Response(b"x" * 60))
    with pytest.raises(DataUnavailableError, match="incomplete download: got 60 of 100 bytes"):
        maybe_download(["http://x.invalid/a"], "a", tmp_path / "dl", fetch=REAL_FETCH)
    assert list((tmp_path / "dl").iterdir()) == []


def test_offline_environment_variable_blocks_the_real_fetch(tmp_path, source, monkeypatch):
    monkeypatch.setenv(download.OFFLINE_ENV_VAR, "1")
    with pytest.raises(DataUnavailableError, match=download.OFFLINE_ENV_VAR):
        maybe_download([source.as_uri()], "blob.bin", tmp_path / "dl", fetch=REAL_FETCH)


@pytest.mark.parametrize("kwargs, match", [({"sha256": "abc"}, "sha256 must be"), ({"md5": "z" * 32}, "md5 must be")])
def test_malformed_digest_is_rejected(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        maybe_download(["file:///nonexistent"], "a", tmp_path, **kwargs)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="urls must be"):
        maybe_download([], "a", tmp_path)
    with pytest.raises(ValueError, match="filename must be"):
        maybe_download(["file:///x"], "../a", tmp_path)


def test_download_all_reports_every_missing_file_in_one_error(tmp_path, source):
    items = [([source.as_uri()], "ok.bin", SHA, None),
             (["http://a.invalid/one"], "one", None, None),
             (["http://a.invalid/two"], "two", None, "0" * 32)]
    with pytest.raises(DataUnavailableError) as info:
        download_all(items, tmp_path / "dl", "test set")
    first_line = str(info.value).splitlines()[0]
    assert "one, two" in first_line and str((tmp_path / "dl").resolve()) in first_line
    assert "http://a.invalid/one" in str(info.value) and "http://a.invalid/two" in str(info.value)
    assert (tmp_path / "dl" / "ok.bin").read_bytes() == DATA


def test_extract_tar_is_atomic_and_replaces_old_content(tmp_path):
    archive = write_tar_gz(tmp_path / "a.tar.gz", {"top/x.txt": b"new", "top/sub/y.txt": b"y"})
    dest = tmp_path / "out"
    (dest / "top").mkdir(parents=True)
    (dest / "top" / "stale.txt").write_text("from a crashed run")
    created = extract_archive(archive, dest)
    assert created == [dest / "top"]
    assert (dest / "top" / "x.txt").read_bytes() == b"new"
    assert (dest / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert not (dest / "top" / "stale.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["top"]  # no leftover temporary folder


def test_extract_refuses_paths_outside_the_destination(tmp_path):
    archive = write_tar_gz(tmp_path / "evil.tar.gz", {"../evil.txt": b"x"})
    with pytest.raises(DownloadError, match="cannot extract"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok/a.txt", "a")
    assert extract_archive(zpath, tmp_path / "zout") == [tmp_path / "zout" / "ok"]


def test_extract_corrupt_archive_raises(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DownloadError):
        extract_archive(bad, tmp_path / "out")


def test_real_fetch_reads_file_urls(tmp_path, source):
    out = io.BytesIO()
    assert REAL_FETCH(source.as_uri(), out, progress=False) == len(DATA)
    assert out.getvalue() == DATA
    with pytest.raises(urllib.error.URLError):
        REAL_FETCH((tmp_path / "missing").as_uri(), io.BytesIO())


def test_tarfile_helper_writes_real_tar(tmp_path):
    archive = write_tar_gz(tmp_path / "t.tar.gz", {"a/b.txt": b"hello"})
    with tarfile.open(archive) as tf:
        assert tf.extractfile("a/b.txt").read() == b"hello"


def _zip_with(path, name, data, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr(name, data)
    return path


def test_zip_member_limits_refuse_large_and_bomb_like_members(tmp_path):
    archive = _zip_with(tmp_path / "a.zip", "big.bin", bytes(4 << 20))  # 4 MiB of zeros, ~1000:1
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("big.bin")
        with pytest.raises(download.ArchiveLimitError, match=r"expands \d+:1 .*decompression bomb"):
            download.read_zip_member(zf, info, str(archive))
        with pytest.raises(download.ArchiveLimitError,
                           match="would expand to 4194304 bytes, more than the limit of 1000"):
            download.read_zip_member(zf, info, str(archive), max_bytes=1000, max_ratio=1e9)
        assert download.read_zip_member(zf, info, str(archive), max_ratio=1e9) == bytes(4 << 20)


def test_extract_refuses_an_archive_beyond_the_total_limit(tmp_path, monkeypatch):
    archive = write_tar_gz(tmp_path / "a.tar.gz", {"top/x.bin": bytes(3000)})
    monkeypatch.setattr(download, "MAX_EXTRACT_BYTES", 2000)
    with pytest.raises(download.ArchiveLimitError, match="would expand to 3000 bytes"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "top").exists()
