"""download.py against a stand-in for the hub: an http.server on 127.0.0.1 that the tests start."""
from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from minigpt import GPT2
from minigpt.checkpoint import load_pretrained, save_pretrained
from minigpt.download import FILES, DownloadError, cache_dir_for, download_model
from minigpt.tokenizer import write_vocab_files

from .conftest import tiny_config

PREFIX = "/openai-community/gpt2/resolve/main/"


class FakeHub:
    """Serves `files` (name -> bytes) under the hub's resolve URLs, logging (path, Range header) per request.

    cut[name] = [n1, n2, ...]: the next responses for that file send n_i bytes of the body, then drop the connection.
    redirect[name] = headers: answer with a 302 to /cdn/<name> carrying these headers (as the hub does for LFS).
    etag[name]: an ETag header on the direct answer. ignore_range: always answer 200 with the whole file.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        self.cut, self.redirect, self.etag, self.ignore_range = {}, {}, {}, False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub.handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append((h.path, h.headers.get("Range")))
        name = h.path.rsplit("/", 1)[-1]
        if h.path.startswith(PREFIX) and name in self.redirect:
            h.send_response(302)
            h.send_header("Location", f"/cdn/{name}")
            for key, value in self.redirect[name].items():
                h.send_header(key, value)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = self.files[name]
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        start = int(match.group(1)) if match and not self.ignore_range else 0
        if start >= len(data) and start > 0:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if name in self.etag:
            h.send_header("ETag", self.etag[name])
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        body = data[start:]
        if self.cut.get(name):
            body = body[: self.cut[name].pop(0)]
            h.close_connection = True
        h.wfile.write(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def model_files(tmp_path) -> dict[str, bytes]:
    """The four files of a tiny model, as the hub would serve them."""
    torch.manual_seed(0)
    tokenizer_dir = write_vocab_files(tmp_path / "tok")
    source = save_pretrained(GPT2(tiny_config()), tmp_path / "source", tokenizer_dir=tokenizer_dir)
    return {name: (source / name).read_bytes() for name in FILES}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINIGPT_HF_ENDPOINT", raising=False)
    server = FakeHub(model_files(tmp_path))
    yield server
    server.close()


def test_complete_download(hub, tmp_path):
    target = download_model("gpt2", base_url=hub.url)
    assert target == tmp_path / "home" / "gpt2" == cache_dir_for("gpt2")
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (target / name).read_bytes() == hub.files[name]
    assert hub.requests == [(PREFIX + name, None) for name in FILES]
    download_model("gpt2", base_url=hub.url)  # everything present: no new request
    load_pretrained("gpt2")  # the cached preset, without asking the network
    assert len(hub.requests) == len(FILES)


def test_transfer_cut_in_the_middle_is_resumed(hub):
    data = hub.files["model.safetensors"]
    hub.cut["model.safetensors"] = [1000]
    hub.etag["model.safetensors"] = f'"{hashlib.sha256(data).hexdigest()}"'
    target = download_model("gpt2", base_url=hub.url)
    assert (target / "model.safetensors").read_bytes() == data
    requests = [r for r in hub.requests if r[0].endswith("model.safetensors")]
    assert requests == [(PREFIX + "model.safetensors", None), (PREFIX + "model.safetensors", "bytes=1000-")]


def test_leftover_part_resumed_through_redirect_with_linked_etag(hub, monkeypatch):
    data = hub.files["model.safetensors"]
    hub.redirect["model.safetensors"] = {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                                         "X-Linked-Size": str(len(data))}
    target = cache_dir_for("gpt2")
    target.mkdir(parents=True)
    (target / "model.safetensors.part").write_bytes(data[:777])
    monkeypatch.setenv("MINIGPT_HF_ENDPOINT", hub.url)
    assert download_model("gpt2") == target
    assert (target / "model.safetensors").read_bytes() == data
    assert (PREFIX + "model.safetensors", "bytes=777-") in hub.requests
    assert ("/cdn/model.safetensors", "bytes=777-") in hub.requests  # the Range survives the redirect


def test_transfer_that_keeps_breaking_keeps_the_part_for_later(hub):
    data = hub.files["model.safetensors"]
    hub.cut["model.safetensors"] = [100] * 5
    expected = (rf"model\.safetensors: the transfer broke off 5 times; 500 of {len(data)} bytes are in "
                r".*model\.safetensors\.part\. Run the download again to resume")
    with pytest.raises(DownloadError, match=expected):
        download_model("gpt2", base_url=hub.url)
    assert download_model("gpt2", base_url=hub.url) == cache_dir_for("gpt2")  # the next call resumes and completes
    assert hub.requests[-1] == (PREFIX + "model.safetensors", "bytes=500-")
    assert (cache_dir_for("gpt2") / "model.safetensors").read_bytes() == data


def test_complete_part_is_checked_and_renamed(hub):
    """A .part that already holds every byte: the server answers 416 (nothing left to send)."""
    data = hub.files["model.safetensors"]
    hub.etag["model.safetensors"] = f'"{hashlib.sha256(data).hexdigest()}"'
    target = cache_dir_for("gpt2")
    target.mkdir(parents=True)
    (target / "model.safetensors.part").write_bytes(data)
    download_model("gpt2", base_url=hub.url)
    assert (target / "model.safetensors").read_bytes() == data and not (target / "model.safetensors.part").exists()


def test_server_ignoring_range_restarts(hub):
    data = hub.files["model.safetensors"]
    target = cache_dir_for("gpt2")
    target.mkdir(parents=True)
    (target / "model.safetensors.part").write_bytes(b"x" * 500)  # would corrupt the file if appended to
    hub.ignore_range = True
    download_model("gpt2", base_url=hub.url)
    assert (target / "model.safetensors").read_bytes() == data


def test_size_mismatch_rejected(hub):
    data = hub.files["model.safetensors"]
    hub.redirect["model.safetensors"] = {"X-Linked-Size": str(len(data) + 10)}
    with pytest.raises(DownloadError, match=rf"model\.safetensors: size mismatch: the hub announces {len(data) + 10} "
                                            rf"bytes, the server sends {len(data)}"):
        download_model("gpt2", base_url=hub.url)
    target = cache_dir_for("gpt2")
    assert not (target / "model.safetensors").exists() and not (target / "model.safetensors.part").exists()


def test_sha256_mismatch_rejected(hub):
    hub.redirect["model.safetensors"] = {"X-Linked-Etag": '"' + "0" * 64 + '"'}
    expected = r"model\.safetensors: sha256 mismatch: got [0-9a-f]{64}, the hub says 0{64}"
    with pytest.raises(DownloadError, match=expected):
        download_model("gpt2", base_url=hub.url)
    target = cache_dir_for("gpt2")
    assert not (target / "model.safetensors").exists() and not (target / "model.safetensors.part").exists()


def test_load_pretrained_never_loads_a_part_file(hub, monkeypatch):
    """A cached preset whose weights are only a .part: load_pretrained finishes the download, then loads."""
    target = cache_dir_for("gpt2")
    target.mkdir(parents=True)
    for name in ("config.json", "vocab.json", "merges.txt"):
        (target / name).write_bytes(hub.files[name])
    (target / "model.safetensors.part").write_bytes(hub.files["model.safetensors"][:2048])
    monkeypatch.setenv("MINIGPT_HF_ENDPOINT", hub.url)
    model = load_pretrained("gpt2")
    assert hub.requests == [(PREFIX + "model.safetensors", "bytes=2048-")]
    assert (target / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    assert not (target / "model.safetensors.part").exists()
    assert model.config.n_embd == tiny_config().n_embd


def test_offline_error_names_url_and_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_HOME", str(tmp_path / "home"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MINIGPT_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as err:
        load_pretrained("gpt2-medium")
    message = str(err.value)
    url = f"http://127.0.0.1:{port}/openai-community/gpt2-medium/resolve/main/config.json"
    assert f"could not download {url}: " in message and "Connection refused" in message
    assert str(tmp_path / "home" / "gpt2-medium") in message
    assert "config.json, vocab.json, merges.txt, model.safetensors" in message and "--model PATH" in message
    assert "--model scratch --tokenizer FOLDER" in message  # the way out with only the tokenizer files


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown GPT-2 checkpoint 'gpt3'; choose one of gpt2, gpt2-medium"):
        download_model("gpt3")
