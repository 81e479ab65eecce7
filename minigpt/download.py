"""Fetch a public GPT-2 checkpoint and its tokenizer files into a local cache, with the standard library.

    https://huggingface.co/openai-community/<name>/resolve/main/<file>  ->  $MINIGPT_HOME/<name>/<file>

$MINIGPT_HOME defaults to ~/.cache/minigpt; $MINIGPT_HF_ENDPOINT replaces https://huggingface.co (a mirror, or a
test server). Each file is written to <file>.part and renamed only once complete and checked, so a file without
.part is always whole, and nothing ever loads a .part. A broken transfer resumes where it stopped (an HTTP Range
request), in the same call and in the next one.

Checks: the size (Content-Length, or the total of Content-Range, and the hub's X-Linked-Size) and, for the large
files the hub keeps in LFS, the sha256 it announces as X-Linked-Etag (or an ETag of 64 hex digits). The hub answers
those with a redirect to its CDN, so we record the headers of redirects too.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import PRESETS

HUB = "https://huggingface.co"
FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")  # small first: fail fast when offline
CHUNK = 1 << 20  # bytes per read
TIMEOUT = 60  # seconds without data before a read gives up (and the transfer resumes)
ATTEMPTS = 5  # transfers per file, each resuming where the previous one broke off
SHA256 = re.compile(r'^(?:w/)?"?([0-9a-f]{64})"?$')  # matched lowercased


class DownloadError(RuntimeError):
    pass


@dataclass
class Expected:
    size: int | None  # total bytes of the file, when the server says
    sha256: str | None  # hex digest, when the hub says


def minigpt_home() -> Path:
    return Path(os.environ.get("MINIGPT_HOME") or "~/.cache/minigpt").expanduser()


def cache_dir_for(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the files of preset `name` live: <cache_dir or $MINIGPT_HOME>/<name>/."""
    return Path(cache_dir).expanduser() / name if cache_dir else minigpt_home() / name


def is_complete(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in FILES)


def file_url(name: str, filename: str, base_url: str | None = None) -> str:
    base = base_url or os.environ.get("MINIGPT_HF_ENDPOINT") or HUB
    return f"{base.rstrip('/')}/openai-community/{name}/resolve/main/{filename}"


def download_model(name: str, cache_dir: str | Path | None = None, base_url: str | None = None) -> Path:
    """Download the four files of openai-community/<name> (those not there yet); return their directory."""
    if name not in PRESETS:
        raise ValueError(f"unknown GPT-2 checkpoint {name!r}; choose one of {', '.join(PRESETS)}")
    target = cache_dir_for(name, cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    for filename in FILES:
        if (target / filename).is_file():
            continue
        url = file_url(name, filename, base_url)
        try:
            fetch(url, target / filename)
        except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
            raise DownloadError(offline_message(name, url, e, target)) from e
    print(f"{name}: {', '.join(FILES)} are in {target}")
    return target


def offline_message(name: str, url: str, error: Exception, target: Path) -> str:
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    else:
        reason = str(getattr(error, "reason", None) or error)
    return (f"could not download {url}: {reason}.\n"
            f"To work without the network, put the files {', '.join(FILES)} of openai-community/{name} by hand "
            f"into\n    {target}{os.sep}\nor pass a model directory with --model PATH; or, with only the tokenizer "
            f"files (vocab.json, merges.txt) in a folder, train a small model from random weights: --model "
            f"scratch --tokenizer FOLDER.")


def fetch(url: str, dest: Path) -> None:
    """Download url to dest through dest.part, resuming broken transfers; check size and sha256; rename."""
    part = dest.with_name(dest.name + ".part")
    for _ in range(ATTEMPTS):
        expected = transfer(url, part)
        size = part.stat().st_size if part.exists() else 0
        if not part.exists() or (expected.size is not None and size < expected.size):
            continue  # the connection broke off (resume), or the part was unusable (start over)
        if expected.size is not None and size > expected.size:
            part.unlink()
            raise DownloadError(f"{url}: size mismatch: received {size} bytes, expected {expected.size}; "
                                f"deleted {part}")
        if expected.sha256 is not None:
            check_sha256(part, expected.sha256, url)
        os.replace(part, dest)
        return
    raise DownloadError(f"{url}: the transfer broke off {ATTEMPTS} times; {size} of {expected.size} bytes are in "
                        f"{part}. Run the download again to resume.")


def transfer(url: str, part: Path) -> Expected:
    """One HTTP GET, appending to part from its current size (a Range request) -> what the headers promise."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    redirects = RecordRedirects()
    try:
        response = urllib.request.build_opener(redirects).open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:
            raise
        # Range Not Satisfiable: part already holds the whole file (check it) or more (start over)
        total = re.search(r"/(\d+)$", e.headers.get("Content-Range", ""))
        expected = Expected(int(total.group(1)) if total else None, announced_sha256(redirects.headers + [e.headers]))
        if expected.size != offset:
            part.unlink()
        return expected
    with response:
        headers = redirects.headers + [response.headers]
        if offset and response.status != 206:
            offset = 0  # the server ignored Range and sends the whole file: start over
        elif offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise DownloadError(f"{url}: asked for bytes {offset}- but got {response.headers.get('Content-Range')}; "
                                f"deleted {part}, run again")
        expected = Expected(served_size(response), announced_sha256(headers))
        announced = next((int(h["X-Linked-Size"]) for h in headers if h.get("X-Linked-Size")), None)
        if None not in (announced, expected.size) and announced != expected.size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: size mismatch: the hub announces {announced} bytes, the server sends "
                                f"{expected.size}")
        expected.size = expected.size if expected.size is not None else announced
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=expected.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5]
        ) as bar:
            while chunk := read_chunk(response):
                f.write(chunk)
                bar.update(len(chunk))
    return expected


def read_chunk(response) -> bytes:
    """The next bytes of the body; b"" at the end or when the connection broke off (fetch() then resumes)."""
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException):
        return b""


def served_size(response) -> int | None:
    """The file's total size: the total of 'Content-Range: bytes a-b/total' (206), else Content-Length (200)."""
    if response.status == 206:
        total = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
        return int(total.group(1)) if total else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def announced_sha256(headers: list) -> str | None:
    """X-Linked-Etag of any response, or the ETag of the hub's own (first) response, when it is a sha256."""
    candidates = [h.get("X-Linked-Etag") for h in headers] + [headers[0].get("ETag")]
    for value in candidates:
        match = SHA256.match((value or "").strip().lower())
        if match:
            return match.group(1)
    return None


def check_sha256(path: Path, expected: str, url: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != expected:
        path.unlink()
        raise DownloadError(f"{url}: sha256 mismatch: got {digest.hexdigest()}, the hub says {expected}; "
                            f"deleted {path}, run again")


class RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like the default handler, keeping each redirect's headers (the hub's X-Linked-*)."""

    def __init__(self):
        self.headers = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)
