"""Getting a source archive: resolve where it is, download it, verify it, extract it.

A source is an http(s) URL (downloaded once into a cache folder), a file:// URL or a plain
local path (used in place, never copied). Downloads are written to `<name>.part` and renamed
when complete, so the cache never holds a half-downloaded archive.
"""
import hashlib
import os
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A source archive does not have the expected checksum."""


def local_path(url) -> Path | None:
    """The file that a local path or file:// URL names; None for a remote URL."""
    text = os.fspath(url)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https", "ftp"):
        return None
    return Path(text).expanduser()


def file_hashes(path: Path) -> dict:
    """md5 (what the dataset publishers give) and sha256 of a file, in one pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"checksum {path.name}", disable=None) as bar:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            bar.update(len(chunk))
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "dpai"})
    try:
        with urllib.request.urlopen(request) as response, open(part, "wb") as f:
            size = response.headers.get("Content-Length")
            bar = tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                       desc=f"download {dest.name}", disable=None)
            with bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def fetch(url: str, cache: Path, *, md5: str | None, download_ok: bool, dataset: str):
    """Return (archive path, its hashes), verified against `md5` when one is given.

    A downloaded archive that fails the check (a truncated or corrupted download, or one
    damaged in the cache since) is deleted and downloaded once more; if that copy fails too
    it is deleted and the error names the file and the checksums. A local archive that fails
    is never read: the error says so and leaves the user's file in place."""
    path = local_path(url)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"{dataset}: source archive {path} does not exist")
        hashes = file_hashes(path)
        if md5 is not None and hashes["md5"] != md5.lower():
            raise ChecksumError(f"{dataset}: md5 of {path} is {hashes['md5']}, expected {md5}; "
                                "the archive is corrupted or not the expected one (replace it, "
                                "or pass md5= for a different archive)")
        return path, hashes
    path = cache / Path(urllib.parse.urlparse(url).path).name
    seen = []
    for attempt in range(2):
        if not path.is_file():
            if not download_ok:
                raise FileNotFoundError(f"{dataset}: {path} is missing and download=False; "
                                        f"put the archive from {url} there or pass download=True")
            download(url, path)
        hashes = file_hashes(path)
        if md5 is None or hashes["md5"] == md5.lower():
            return path, hashes
        if not download_ok:  # it cannot be replaced: leave it for the user to look at
            raise ChecksumError(f"{dataset}: md5 of {path} is {hashes['md5']}, expected {md5}; "
                                "the archive is corrupted or not the expected one (delete it "
                                "and rerun, or pass md5= for a different archive)")
        seen.append(hashes["md5"])
        path.unlink()
        if attempt == 0:
            print(f"{dataset}: md5 of {path} is {hashes['md5']}, expected {md5}: deleted, "
                  f"downloading again", file=sys.stderr)
    raise ChecksumError(f"{dataset}: {path} from {url} failed its md5 check twice (got "
                        f"{', then '.join(seen)}; expected {md5}); the file was deleted: check "
                        f"the URL (data.url) or the network and rerun")


def extract(archive: Path, dest: Path, dataset: str) -> None:
    """Unpack a zip or tar(.gz) archive into `dest`, refusing members that leave `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    bar = dict(desc=f"extract {archive.name}", unit="file", disable=None)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in tqdm(zf.infolist(), **bar):
                    zf.extract(member, dest)  # zipfile drops absolute paths and '..'
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tqdm(tf, **bar):
                    tf.extract(member, dest, filter="data")
        else:
            raise ValueError(f"{dataset}: {archive} is neither a zip nor a tar archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{dataset}: cannot extract {archive}: {e}") from e
