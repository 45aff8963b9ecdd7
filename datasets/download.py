"""Verified, atomic downloads and archive extraction.

The original fetched with ``urllib.urlretrieve`` straight to the final name, with no
checksum, so an interrupted download was later treated as complete. Here:

* :func:`maybe_download` tries a primary URL and its mirrors in order, streams each into
  a temporary file in the destination folder, checks its SHA-256 (or the published MD5)
  and only then renames it over the final name (``os.replace``). A file already present
  whose digest does not match (a partial or corrupt download) is fetched again.
* With no network, one :class:`DataUnavailableError` names every URL tried and the exact
  path where the file can be placed by hand; a download whose bytes do not match the
  digest raises :class:`ChecksumMismatchError` and leaves no file behind. A file already
  on disk that does not match and cannot be fetched again gives a
  :class:`ChecksumMismatchError` whose first line says that the file at that path is
  corrupt, with the expected and actual digests, and to delete it (and rerun) or replace
  it with a correct copy.
* The fetch itself is the module attribute :func:`fetch_url`, looked up at call time, so
  tests can monkeypatch it (``file://`` URLs work with ``urllib.request`` too). Setting the
  environment variable ``INFLUENCE_OFFLINE=1`` makes every fetch fail at once, as on a
  machine without network.
* :func:`extract_archive` unpacks a tar or zip archive into a temporary folder next to
  the destination and moves the result into place, so a crash mid-extraction never leaves
  a half-extracted folder that a later run would trust; tar members are filtered with
  the standard library's ``data`` filter (no absolute paths, no ``..``, no devices).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence

from influence.progress import progress_bar

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0  # seconds, per connection attempt and per read
CHUNK_SIZE = 1 << 20
# Files at least this large (or of unknown size) show progress (influence.progress: a bar on a
# terminal, a line every 30 s in a log).
PROGRESS_MIN_BYTES = 1 << 20
OFFLINE_ENV_VAR = "INFLUENCE_OFFLINE"
USER_AGENT = "group-influence-reproduction (python urllib)"


class DownloadError(RuntimeError):
    """A required data file could not be obtained.

    The first line of the message is a self-contained summary (what, why, where to put
    the file by hand); further lines list every URL tried with its error. ``reason`` is a
    short description of the first failure.
    """

    reason: str = ""


class DataUnavailableError(DownloadError):
    """No source could be reached: the message names every URL and the manual path."""


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not match the published digest (nothing was kept)."""


class ArchiveLimitError(DownloadError):
    """An archive member would expand beyond a size limit, or is nested too deeply
    (a decompression bomb, or not the expected archive)."""


# Limits on what is decompressed from an archive. The real archives are far below them
# (the hospital CSV is 19 MB, deflated about 6:1; CIFAR-10 is 180 MB uncompressed).
MAX_MEMBER_BYTES = 1 << 30  # one member read into memory (for example a nested zip or a CSV)
MAX_EXTRACT_BYTES = 8 << 30  # all members of one archive extracted to disk
# Deflate can reach ~1000:1 on constant bytes; text and images stay below 20:1.
MAX_COMPRESSION_RATIO = 200


# --------------------------------------------------------------------------- digests
def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm`` is any :mod:`hashlib` name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_digests(sha256: str | None, md5: str | None) -> dict[str, str]:
    expected = {}
    for name, value, length in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is None:
            continue
        value = value.strip().lower()
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{name} must be a {length}-digit hex digest; got {value!r}")
        expected[name] = value
    return expected


def _mismatches(path: Path, expected: dict[str, str]) -> dict[str, str]:
    """``{algorithm: actual}`` for every expected digest the file does not have."""
    bad = {}
    for algorithm, want in expected.items():
        got = file_digest(path, algorithm)
        if got != want:
            bad[algorithm] = got
    return bad


# --------------------------------------------------------------------------- fetching
def fetch_url(url: str, out: IO[bytes], progress: bool = True, desc: str | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> int:
    """Stream ``url`` into the open binary file ``out``; return the number of bytes.

    Raises ``OSError`` (``urllib.error.URLError`` is one) or ``http.client.HTTPException``
    on any network problem, including a body shorter than its ``Content-Length``.
    Monkeypatch this attribute to serve files in tests.
    """
    if os.environ.get(OFFLINE_ENV_VAR, "").strip() not in ("", "0"):
        raise urllib.error.URLError(f"network disabled by {OFFLINE_ENV_VAR}")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        bar = None
        if progress and (total is None or total >= PROGRESS_MIN_BYTES):
            bar = progress_bar(None, desc or url.rsplit("/", 1)[-1] or url, total, progress, unit="B",
                               unit_scale=True, unit_divisor=1024)
        n = 0
        try:
            for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                out.write(chunk)
                n += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and n != total:
        raise OSError(f"incomplete download: got {n} of {total} bytes")
    return n


def count(n: int, noun: str) -> str:
    """``1 URL``, ``2 URLs``: a number and its noun, plural when it is not 1."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe_expected(expected: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in expected.items()) if expected else "no published digest"


def maybe_download(urls: str | Sequence[str], filename: str, download_dir: str | os.PathLike,
                   sha256: str | None = None, md5: str | None = None, progress: bool = True,
                   fetch: Callable[..., int] | None = None, source: str | None = None) -> Path:
    """Make sure ``<download_dir>/<filename>`` exists and is intact; return its path.

    Parameters
    ----------
    urls : str or sequence of str
        The primary URL followed by mirrors; tried in order until one yields a file with
        the expected digest.
    filename : str
        Name of the file inside ``download_dir``.
    sha256, md5 : str, optional
        Published digest(s). With a digest, an existing file that does not match (partial
        or corrupt) is fetched again; without one an existing file is trusted as is.
    progress : bool
        Show progress of large downloads (:func:`influence.progress.progress_bar`).
    fetch : callable, optional
        ``fetch(url, fileobj, progress=..., desc=...)``; defaults to :func:`fetch_url`,
        looked up when called so that tests can monkeypatch it.
    source : str, optional
        A short description of where the file comes from, added to error messages.

    Raises
    ------
    DataUnavailableError
        No URL could be fetched (no network, HTTP error, ...). The message names every
        URL with its error and the exact path where the file can be placed by hand.
    ChecksumMismatchError
        At least one URL answered but no answer matched the digest (no file is kept), or
        the file on disk does not match and could not be fetched again (it is kept; the
        first line of the message says it is corrupt, with both digests and what to do).
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list or not all(isinstance(u, str) and u for u in url_list):
        raise ValueError(f"urls must be a non-empty URL or list of URLs; got {urls!r}")
    if not filename or os.sep in filename or filename in (".", ".."):
        raise ValueError(f"filename must be a plain file name; got {filename!r}")
    expected = _expected_digests(sha256, md5)
    directory = Path(download_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename

    corrupt = ""  # the digests of an existing file that does not match, for the message
    if path.is_file():
        bad = _mismatches(path, expected)
        if not bad:
            return path
        corrupt = "; ".join(f"{k} {got}, expected {expected[k]}" for k, got in bad.items())
        logger.warning("%s is partial or corrupt (%s); fetching it again", path, corrupt)
    elif path.exists():
        raise DownloadError(f"{path} exists but is not a regular file; remove it and retry")

    do_fetch = fetch if fetch is not None else fetch_url
    failures: list[tuple[str, str]] = []
    mismatched = False
    for url in url_list:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=directory)
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as f:
                    logger.info("downloading %s -> %s", url, path)
                    do_fetch(url, f, progress=progress, desc=filename)
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # ValueError: urllib's "unknown url type"; the rest are network errors.
                failures.append((url, f"{type(exc).__name__}: {exc}"))
                continue
            bad = _mismatches(tmp, expected)
            if bad:
                mismatched = True
                failures.append((url, f"checksum mismatch (expected {_describe_expected(expected)}; "
                                      f"got {', '.join(f'{k} {v}' for k, v in bad.items())})"))
                continue
            # mkstemp creates the file 0600; give it the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_current_umask())
            os.replace(tmp, path)
            logger.info("saved %s (%s verified)", path, _describe_expected(expected))
            return path
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    what = f"{filename} ({source})" if source else filename
    reason = failures[0][1] if len(failures) == 1 else f"first error: {failures[0][1]}"
    where = path.resolve()
    if corrupt:
        # The first line must not tell the user to put the file where it already is: say
        # that the file there is corrupt, with both digests, and the two ways out.
        first = (f"{where} is corrupt ({corrupt}) and downloading {what} again failed ({reason}): "
                 f"delete it and rerun to download it again, or replace it with a correct copy")
        error_reason = f"{where} is corrupt ({corrupt})"
    else:
        first = (f"could not download {what} from {count(len(url_list), 'URL')} ({reason}); place a correct copy "
                 f"by hand at {where} ({_describe_expected(expected)})")
        error_reason = failures[0][1]
    lines = [first, "URLs tried:"] + [f"  - {url}: {why}" for url, why in failures]
    error = (ChecksumMismatchError if mismatched or corrupt else DataUnavailableError)("\n".join(lines))
    error.reason = error_reason
    raise error


def combine_errors(errors: Sequence[DownloadError], what: str, directory: str | os.PathLike,
                   names: Sequence[str]) -> DownloadError:
    """One error for several files that could not be downloaded.

    The first line names the files and the folder to place them in; each file's own
    message (its URLs and errors) follows. A :class:`ChecksumMismatchError` if any file
    had one, else a :class:`DataUnavailableError`.
    """
    reason = errors[0].reason or str(errors[0]).splitlines()[0]
    mismatched = any(isinstance(e, ChecksumMismatchError) for e in errors)
    if mismatched:
        first = (f"could not obtain {len(names)} file(s) of {what} ({reason}): {', '.join(names)}; delete "
                 f"any corrupt file in {Path(directory).resolve()} and rerun to download it again, or "
                 "place correct copies there")
    else:
        first = (f"could not download {len(names)} file(s) of {what} ({reason}): {', '.join(names)}; "
                 f"place them by hand in {Path(directory).resolve()}")
    message = "\n".join([first] + [str(e) for e in errors])
    error = (ChecksumMismatchError if mismatched else DataUnavailableError)(message)
    error.reason = reason
    return error


def download_all(items: Sequence[tuple[Sequence[str], str, str | None, str | None]],
                 download_dir: str | os.PathLike, what: str, progress: bool = True) -> list[Path]:
    """:func:`maybe_download` for each ``(urls, filename, sha256, md5)``; one error for all failures."""
    paths, errors, failed = [], [], []
    for urls, filename, sha256, md5 in items:
        try:
            paths.append(maybe_download(urls, filename, download_dir, sha256=sha256, md5=md5,
                                        progress=progress, source=what))
        except DownloadError as exc:
            errors.append(exc)
            failed.append(filename)
    if errors:
        raise combine_errors(errors, what, download_dir, failed)
    return paths


# --------------------------------------------------------------------------- extraction
def check_zip_member(info: zipfile.ZipInfo, where: str, max_bytes: int | None = None,
                     max_ratio: float | None = None) -> None:
    """Refuse a zip member whose declared size exceeds ``max_bytes`` (default
    ``MAX_MEMBER_BYTES``) or whose compression ratio exceeds ``max_ratio`` (default
    ``MAX_COMPRESSION_RATIO``): :class:`ArchiveLimitError`, before anything is decompressed."""
    max_bytes = MAX_MEMBER_BYTES if max_bytes is None else max_bytes
    max_ratio = MAX_COMPRESSION_RATIO if max_ratio is None else max_ratio
    if info.file_size > max_bytes:
        raise ArchiveLimitError(
            f"{where}: member {info.filename!r} would expand to {info.file_size} bytes, more than the "
            f"limit of {max_bytes} bytes; this is not the expected archive: delete it and retry")
    if info.file_size > (1 << 20) and info.file_size > max_ratio * max(info.compress_size, 1):
        raise ArchiveLimitError(
            f"{where}: member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}:1 "
            f"({info.compress_size} -> {info.file_size} bytes), above the limit of {max_ratio:.0f}:1 "
            "(a decompression bomb?); this is not the expected archive: delete it and retry")


def read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str,
                    max_bytes: int | None = None, max_ratio: float | None = None) -> bytes:
    """The bytes of one zip member, read with :func:`check_zip_member`'s limits.

    At most ``max_bytes + 1`` bytes are ever decompressed, even if the member's declared
    size were false.
    """
    max_bytes = MAX_MEMBER_BYTES if max_bytes is None else max_bytes
    check_zip_member(info, where, max_bytes, max_ratio)
    with zf.open(info) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ArchiveLimitError(f"{where}: member {info.filename!r} expands beyond the limit of {max_bytes} "
                                "bytes (its declared size is false); delete the archive and retry")
    return data


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike,
                    members: Iterable[str] | None = None) -> list[Path]:
    """Extract a ``.tar*``/``.tgz`` or ``.zip`` archive into ``dest_dir`` atomically.

    Everything is first unpacked into a temporary folder inside ``dest_dir``; then each
    top-level entry replaces any existing entry of the same name. ``members`` optionally
    restricts extraction to those archive paths. Returns the top-level paths created.
    Members may not expand beyond ``MAX_EXTRACT_BYTES`` in total, nor (zip) beyond
    ``MAX_COMPRESSION_RATIO`` each (:class:`ArchiveLimitError`).
    """
    archive, dest = Path(archive), Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist() if members is None else list(members)
                infos = [zf.getinfo(name) for name in names]
                for info in infos:
                    check_zip_member(info, str(archive), MAX_EXTRACT_BYTES)
                _check_total(archive, sum(info.file_size for info in infos))
                for name in names:
                    target = (tmp / name).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise DownloadError(f"{archive}: unsafe path in archive: {name!r}")
                    zf.extract(name, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                selected = tf.getmembers() if members is None else [tf.getmember(m) for m in members]
                _check_total(archive, sum(m.size for m in selected if m.isfile()))
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=selected, filter="data")
                else:  # Python < 3.11.4: the same checks by hand
                    for member in selected:
                        target = (tmp / member.name).resolve()
                        if (not target.is_relative_to(tmp.resolve()) or member.issym() or member.islnk()
                                or member.isdev()):
                            raise DownloadError(f"{archive}: unsafe member in archive: {member.name!r}")
                    tf.extractall(tmp, members=selected)
        else:
            raise DownloadError(f"{archive} is neither a tar nor a zip archive (corrupt download?); "
                                "delete it and retry")
        created = []
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
            created.append(target)
        return created
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DownloadError(f"cannot extract {archive}: {type(exc).__name__}: {exc}; "
                            "delete it and retry") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_total(archive: Path, total: int) -> None:
    if total > MAX_EXTRACT_BYTES:
        raise ArchiveLimitError(f"{archive}: its members would expand to {total} bytes, more than the limit "
                                f"of {MAX_EXTRACT_BYTES} bytes; this is not the expected archive: delete it "
                                "and retry")
