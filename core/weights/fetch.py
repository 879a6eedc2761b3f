"""Download checkpoints listed in the manifest (only ever on the user's explicit request).

* Hugging Face Hub files (``hf: {repo, filename, revision}``) go through
  ``huggingface_hub.hf_hub_download`` into a staging folder beside the destination (its
  own resume applies), are checked, then renamed into place.
* Plain URLs are fetched over HTTPS into ``<dest>.part``; an interrupted download resumes
  from the part with an HTTP ``Range`` request. A download cut short (the server closed
  early, the connection was reset) keeps the part and says to run the command again to
  resume. The finished part is checked (size, then sha256 when the manifest knows them)
  and renamed atomically; a part larger than the manifest's size, or with the wrong hash,
  is deleted and said so. Several URLs are mirrors tried in order.

Nothing here runs at import time or without an explicit call.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import HashMismatchError, WeightsError
from .manifest import WeightEntry, WeightFile
from .store import _hash_file, remember_sha256, safe_join, verify_file

USER_AGENT = "comfyui-gendeg (weights fetch)"
CHUNK = 1 << 20

#: ``report(message)``: where fetch prints what it does (the command line passes ``print``).
Reporter = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    disable = (not enabled) or os.environ.get("GENDEG_NO_PROGRESS") == "1"
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=disable)


def _incomplete(part: Path, actual: int, size: int | None, origin: str, why: str = "") -> WeightsError:
    of = f"{actual} of {size} bytes" if size is not None else f"{actual} bytes"
    return WeightsError(
        f"{part.name}: incomplete download ({of}) from {origin}{why}; the partial file {part} is kept: "
        "run the same command again to resume"
    )


def _check_part(part: Path, sha256: str | None, size: int | None, origin: str, *, resumable: bool = False) -> str:
    """Size and sha256 of a finished download; returns the digest.

    A part shorter than ``size`` is kept when ``resumable`` (:class:`WeightsError`: run again
    to resume); a longer one, or a hash mismatch, deletes ``part`` (:class:`HashMismatchError`).
    """
    actual = part.stat().st_size
    if resumable and size is not None and actual < size:
        raise _incomplete(part, actual, size, origin)
    if size is not None and actual != size:
        part.unlink(missing_ok=True)
        raise HashMismatchError(
            f"{part.name}: downloaded {actual} bytes from {origin}, the manifest says {size}; "
            "the partial file was deleted. Run the fetch command again (or report a changed file)."
        )
    digest = _hash_file(part)
    if sha256 and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise HashMismatchError(
            f"{part.name}: sha256 {digest} of the file downloaded from {origin} does not match the "
            f"manifest's {sha256}; the download was deleted. The file on the server differs from the "
            "published one (or was corrupted on the way): try again, or report it."
        )
    return digest


def download_url(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    report: Reporter = _quiet,
) -> str:
    """Fetch ``url`` to ``dest`` with resume (``dest.part`` + HTTP Range); returns the sha256.

    Only ``https://`` (and ``http://`` for local mirrors) URLs are accepted. A download cut
    short (fewer bytes than ``size`` or the server's Content-Length, a reset connection)
    keeps ``dest.part`` and raises :class:`WeightsError` (run again to resume). A part
    larger than ``size`` or with the wrong hash is deleted and :class:`HashMismatchError`
    raised; ``dest`` only ever appears complete and checked (atomic rename).
    """
    dest = Path(dest)
    if not url.startswith(("https://", "http://")):
        raise WeightsError(f"{url}: only https:// URLs can be fetched")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked above
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send: the part is (claimed) complete
                response = None
                if size is not None and have < size:  # the server's file is shorter than the manifest's
                    part.unlink(missing_ok=True)
                    raise HashMismatchError(
                        f"{dest.name}: {url} has at most {have} bytes, the manifest says {size}; the partial "
                        "file was deleted. Run the fetch command again (or report a changed file)."
                    ) from exc
            else:
                raise WeightsError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            raise WeightsError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); check the network and try again") from exc
        if response is not None:
            with response:
                status = getattr(response, "status", 200)
                if have and status == 206:
                    content_range = response.headers.get("Content-Range", "")
                    if not content_range.startswith(f"bytes {have}-"):
                        raise WeightsError(f"{url}: the server resumed at the wrong offset ({content_range!r}); delete {part} and retry")
                    mode = "ab"
                    report(f"resuming {dest.name} at {have} bytes")
                else:
                    mode, have = "wb", 0  # no resume support: start over
                length = response.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else size
                got = have
                try:
                    with open(part, mode) as fh, _progress_bar(total, have, dest.name, progress) as bar:
                        while block := response.read(CHUNK):
                            fh.write(block)
                            got += len(block)
                            bar.update(len(block))
                        fh.flush()
                        os.fsync(fh.fileno())
                except (OSError, http.client.HTTPException) as exc:
                    # a reset or timed-out connection: what arrived stays in the part, to resume from
                    raise _incomplete(part, got, size if size is not None else total, url, f": {type(exc).__name__}: {exc}") from exc
                if length and length.isdigit() and got < total:
                    # the server closed before sending what it announced (urllib does not notice)
                    raise _incomplete(part, got, size if size is not None else total, url, ": the server closed the connection early")
    digest = _check_part(part, sha256, size, url, resumable=True)
    os.replace(part, dest)
    remember_sha256(dest, digest)
    return digest


def download_hf(
    wfile: WeightFile,
    dest: str | Path,
    *,
    progress: bool = True,
    report: Reporter = _quiet,
) -> str:
    """Fetch a Hugging Face Hub file with ``hf_hub_download`` into ``.hf-staging-<name>`` beside ``dest``, check it, move it to ``dest``."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise WeightsError("huggingface_hub is needed to fetch Hub files: pip install huggingface_hub") from exc
    dest = Path(dest)
    # one staging folder per file: fetches of other files into the same folder keep theirs
    staging = dest.parent / f".hf-staging-{dest.name}"
    staging.mkdir(parents=True, exist_ok=True)
    origin = f"https://huggingface.co/{wfile.hf_repo} ({wfile.hf_filename})"
    if not progress or os.environ.get("GENDEG_NO_PROGRESS") == "1":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        got = Path(hf_hub_download(repo_id=wfile.hf_repo, filename=wfile.hf_filename, revision=wfile.hf_revision, local_dir=staging))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many classes
        raise WeightsError(f"{origin}: download failed ({type(exc).__name__}: {exc})") from exc
    try:
        got.resolve().relative_to(staging.resolve())
    except ValueError:
        # a hub cache outside the staging folder: copy rather than move the user's cache file
        copy = staging / (dest.name + ".part")
        shutil.copyfile(got, copy)
        got = copy
    digest = _check_part(got, wfile.sha256, wfile.size, origin)
    os.replace(got, dest)
    remember_sha256(dest, digest)
    shutil.rmtree(staging, ignore_errors=True)
    return digest


def fetch_file(
    entry: WeightEntry,
    wfile: WeightFile,
    folder: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    report: Reporter = _quiet,
) -> Path:
    """Make sure ``folder/wfile.path`` is present and matches the manifest; download it if not."""
    dest = safe_join(folder, wfile.path)
    if dest.exists() and not force:
        try:
            verify_file(dest, wfile.sha256, wfile.size)
        except HashMismatchError as exc:
            raise HashMismatchError(f"{exc} (or run `gendeg weights fetch {entry.id} --force` to replace it)") from exc
        report(f"{entry.id}: {wfile.path} is already there ({dest})")
        return dest
    if not wfile.downloadable:
        raise WeightsError(
            f"{entry.id}: {wfile.path} has no download link; get it by hand from {entry.source} "
            f"and put it at {dest}." + (f" {entry.notes.strip()}" if entry.notes else "")
        )
    errors: list[WeightsError] = []
    if wfile.hf_repo and wfile.hf_filename:
        report(f"{entry.id}: fetching {wfile.hf_repo}/{wfile.hf_filename} -> {dest}")
        try:
            digest = download_hf(wfile, dest, progress=progress, report=report)
            _report_digest(report, entry, wfile, digest)
            return dest
        except WeightsError as exc:
            errors.append(exc)
    for url in wfile.urls:
        report(f"{entry.id}: fetching {url} -> {dest}")
        try:
            digest = download_url(url, dest, sha256=wfile.sha256, size=wfile.size, progress=progress, report=report)
            _report_digest(report, entry, wfile, digest)
            return dest
        except WeightsError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    cls = HashMismatchError if all(isinstance(e, HashMismatchError) for e in errors) else WeightsError
    raise cls(f"{entry.id}: every source failed:\n  " + "\n  ".join(str(e) for e in errors))


def _report_digest(report: Reporter, entry: WeightEntry, wfile: WeightFile, digest: str) -> None:
    if wfile.sha256:
        report(f"{entry.id}: {wfile.path} OK (sha256 {digest} matches the manifest)")
    else:
        report(f"{entry.id}: {wfile.path} downloaded, sha256 {digest} (the manifest has no hash to check it against)")


def fetch_entry(
    entry: WeightEntry,
    folder: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    report: Reporter = _quiet,
) -> list[Path]:
    """Fetch every file of ``entry`` into ``folder`` (its model folder, ``<models>/<kind>``)."""
    return [fetch_file(entry, f, folder, force=force, progress=progress, report=report) for f in entry.files]
