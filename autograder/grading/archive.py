"""Class archives (`.zip`, as an LMS or Gradescope exports them) unpacked safely for discovery.

An archive is refused as a whole, with a message naming the entry, when it tries to
write outside its folder (absolute paths, `..`, links), when it would unpack to
more than `MAX_TOTAL_BYTES` or more than `MAX_ENTRIES` files, or when an entry
expands more than `MAX_RATIO` times (a decompression bomb). Sizes are counted while
copying, so an archive that lies about them in its directory is caught too.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

MAX_ENTRIES = 20_000
MAX_TOTAL_BYTES = 2 * 2**30
MAX_RATIO = 200  # for entries over RATIO_FLOOR bytes: notebooks compress 5-20x, bombs 1000x
RATIO_FLOOR = 2**20
CHUNK = 2**20


class ArchiveError(Exception):
    """The archive is unsafe or unreadable (for TAs, English)."""


def safe_name(name: str) -> PurePosixPath:
    """The entry's path inside the archive, or ArchiveError when it would land outside it."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ArchiveError(f"entry {name!r} points outside the archive (path traversal); archive refused")
    return path


def extract(archive: Path, destination: Path) -> Path:
    """Unpack `archive` into `destination`; returns the folder that holds the submissions."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            if len(entries) > MAX_ENTRIES:
                raise ArchiveError(f"{archive.name} has {len(entries)} entries (the limit is {MAX_ENTRIES})")
            total = 0
            for info in entries:
                target = destination / safe_name(info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"entry {info.filename!r} is a symbolic link; archive refused")
                if info.flag_bits & 0x1:
                    raise ArchiveError(f"entry {info.filename!r} is encrypted; archive refused")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                total += _copy_entry(zf, info, target, budget=MAX_TOTAL_BYTES - total)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise ArchiveError(f"{archive.name} is not a readable zip archive: {exc}") from None
    return _unwrap(destination)


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, *, budget: int) -> int:
    """Copy one entry, counting real bytes against the archive's budget and the entry's ratio."""
    written = 0
    limit = min(budget, max(RATIO_FLOOR, MAX_RATIO * max(info.compress_size, 1)))
    with zf.open(info) as source, open(target, "wb") as sink:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                what = "the archive's size limit" if limit == budget else f"{MAX_RATIO}x its compressed size"
                raise ArchiveError(f"entry {info.filename!r} expands past {what} (a decompression bomb?); "
                                   "archive refused")
            sink.write(chunk)
    return written


def _unwrap(folder: Path) -> Path:
    """Skip wrapper folders: an export that holds a single folder (and maybe metadata files)."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        folders = [p for p in entries if p.is_dir()]
        files = [p for p in entries if p.is_file() and p.suffix.lower() in (".ipynb", ".py")]
        if len(folders) == 1 and not files:
            folder = folders[0]
        else:
            return folder


@contextlib.contextmanager
def unpacked(paths: list[Path]) -> Iterator[list[Path]]:
    """`paths` with every `.zip` replaced by the folder it unpacks to (removed on exit)."""
    workdir = Path(tempfile.mkdtemp(prefix="autograder-unpacked-"))
    try:
        result = []
        for i, path in enumerate(paths):
            if path.is_file() and path.suffix.lower() == ".zip":
                result.append(extract(path, workdir / str(i)))
            else:
                result.append(path)
        yield result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
