"""Download public raw dataset files from their original locations into the data root.

A dataset's fetch plan is a tuple of *alternatives*, tried in order until one succeeds; an
alternative is a tuple of steps that together produce the dataset's files:

* :class:`UrlFile` — download one file as it is (e.g. Amazon review and metadata ``.json.gz``);
* :class:`ZipMembers` — download a zip archive and extract some members (GroupLens ML-100K);
* :class:`WheelMembers` — ``python -m pip download --no-deps <requirement>`` and extract members of
  the wheel (RecBole's copy of ML-100K inside ``recbole==1.2.1``).

Every download goes to a temporary folder inside the data root and is moved into
``<root>/<name>/`` only when complete (``os.replace``), so an interrupted fetch never leaves a
truncated file under a real name. SHA-256 digests are checked where :data:`KNOWN_SHA256` knows
them and are always recorded in ``<root>/<name>/FETCHED.json``. Tests replace :func:`download`
and :func:`pip_download` with local fakes (no network).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from benchmark.integrity import file_record, record_problem, sha256_of

# Digests of files whose content is fixed (file name -> sha256 hex).
KNOWN_SHA256: dict[str, str] = {
    "recbole-1.2.1-py3-none-any.whl": "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
MANIFEST = "FETCHED.json"


class FetchError(RuntimeError):
    """A download or extraction failed; the message says what to do instead."""


def check_sha256(path: Path, expected: str | None = None) -> str:
    """The file's digest; raises FetchError when it differs from ``expected`` (or the known digest)."""
    expected = expected or KNOWN_SHA256.get(path.name)
    actual = sha256_of(path)
    if expected and actual != expected:
        raise FetchError(f"{path.name}: sha256 {actual} differs from the expected {expected}; "
                         "the download is corrupt or the file changed upstream")
    return actual


def download(url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> None:
    """Stream ``url`` into ``dest`` with a tqdm progress bar (bytes). Raises FetchError."""
    request = urllib.request.Request(url, headers={"User-Agent": "dsr-bench"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot download {url}: {reason}") from exc


def pip_download(requirement: str, dest_dir: Path) -> Path:
    """``python -m pip download --no-deps <requirement> -d dest_dir``; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", requirement, "-d", str(dest_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise FetchError(f"pip download {requirement} failed: {' '.join(tail) or 'no wheel produced'}")
    return wheels[0]


def _extract(archive: Path, members: dict[str, str], out_dir: Path, what: str) -> list[Path]:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            missing = [m for m in members if m not in names]
            if missing:
                raise FetchError(f"{what}: archive lacks {', '.join(missing)}")
            written = []
            for member, target in members.items():
                dest = out_dir / target
                with zf.open(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                written.append(dest)
            return written
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{what}: not a valid zip archive ({exc})") from exc


@dataclass(frozen=True)
class UrlFile:
    """Download ``url`` as ``filename``."""

    url: str
    filename: str
    sha256: str | None = None

    def describe(self) -> str:
        return f"{self.url} -> {self.filename}"

    def run(self, work: Path, progress: bool) -> list[Path]:
        dest = work / self.filename
        download(self.url, dest, progress=progress)
        check_sha256(dest, self.sha256)
        return [dest]


@dataclass(frozen=True)
class ZipMembers:
    """Download the zip at ``url`` and extract ``members`` (archive path -> file name)."""

    url: str
    members: dict = field(default_factory=dict)
    sha256: str | None = None

    def describe(self) -> str:
        return f"{self.url} (zip: {', '.join(self.members)})"

    def run(self, work: Path, progress: bool) -> list[Path]:
        archive = work / "download.zip.part"
        download(self.url, archive, progress=progress)
        check_sha256(archive, self.sha256)
        written = _extract(archive, self.members, work, self.url)
        archive.unlink()
        for path in written:
            check_sha256(path)
        return written


@dataclass(frozen=True)
class WheelMembers:
    """Fetch the wheel of ``requirement`` from PyPI with pip and extract ``members``."""

    requirement: str
    members: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"PyPI wheel {self.requirement} ({', '.join(self.members)})"

    def run(self, work: Path, progress: bool) -> list[Path]:
        wheel_dir = work / "wheel"
        wheel_dir.mkdir()
        wheel = pip_download(self.requirement, wheel_dir)
        check_sha256(wheel)
        written = _extract(wheel, self.members, work, wheel.name)
        shutil.rmtree(wheel_dir)
        for path in written:
            check_sha256(path)
        return written


def fetch_files(
    name: str, plan: tuple, root: Path, progress: bool = True, log=print
) -> list[Path]:
    """Run the first alternative of ``plan`` that succeeds; files land in ``<root>/<name>/``.

    Returns the paths written. Raises FetchError listing every alternative's failure."""
    if not plan:
        raise FetchError(f"dataset '{name}' has no public download; see 'bench data list' for its files")
    target = root / name
    root.mkdir(parents=True, exist_ok=True)
    failures = []
    for alternative in plan:
        work = Path(tempfile.mkdtemp(prefix=f".{name}-fetch-", dir=root))
        try:
            produced: list[Path] = []
            for step in alternative:
                log(f"fetching {step.describe()}")
                produced += step.run(work, progress)
            target.mkdir(exist_ok=True)
            final = []
            for path in produced:
                dest = target / path.name
                os.replace(path, dest)
                final.append(dest)
            _write_manifest(target, alternative, final)
            return final
        except FetchError as exc:
            failures.append(str(exc))
            log(f"  failed: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    lines = "\n".join(f"  - {f}" for f in failures)
    raise FetchError(f"could not fetch dataset '{name}':\n{lines}")


def _write_manifest(target: Path, alternative: tuple, files: list[Path]) -> None:
    record = {
        "fetched_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": [step.describe() for step in alternative],
        "files": {p.name: file_record(p) for p in files},
    }
    (target / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")


def changed_since_fetch(folder: Path, paths) -> dict[Path, str]:
    """``{file: problem}`` for each of ``paths`` (None entries ignored) that ``folder/FETCHED.json``
    lists and that no longer matches its recorded size and sha256 (an unreadable FETCHED.json is
    itself the file with the problem). Files placed by hand (not listed) are not checked."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        return {}
    try:
        listed = json.loads(manifest_path.read_text()).get("files", {})
    except (UnicodeDecodeError, ValueError, AttributeError) as exc:
        return {manifest_path: f"{manifest_path}: unreadable ({exc})"}
    problems = {p: record_problem(p, listed[p.name], manifest_path) for p in paths if p is not None and p.name in listed}
    return {p: problem for p, problem in problems.items() if problem is not None}
