"""Data integrity with real faults: corrupted downloads (served over HTTP on the loopback),
a truncated archive already in the download cache, a damaged prepared file, and the same
through `dvc repro`."""
import hashlib
import http.server
import threading

import pytest
import torch

from dpai.data import ChecksumError, load, prepare
from pipeline_repo import DVC, make_repo, ran, run
from test_data import make_cifar


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 answering each GET with the next body of `bodies`."""
    state = {"bodies": [], "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = state["bodies"][min(state["hits"], len(state["bodies"]) - 1)]
            state["hits"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_port}/cifar-10-python.tar.gz"
    yield state
    httpd.shutdown()


def test_corrupt_download_is_deleted_and_fetched_again(tmp_path, server):
    archive, truth = make_cifar(tmp_path, "cifar10")
    good = archive.read_bytes()
    server["bodies"] = [good[:len(good) // 2], good]  # a truncated transfer, then a good one
    data = load(prepare("cifar10", tmp_path / "data", url=server["url"], md5=md5(good)),
                "cifar10")
    assert server["hits"] == 2
    assert torch.equal(data.test_y, torch.from_numpy(truth["test"][1]))


def test_two_corrupt_downloads_fail_naming_file_and_checksums(tmp_path, server):
    archive, _ = make_cifar(tmp_path, "cifar10")
    good = archive.read_bytes()
    bad1, bad2 = good[:1000], good[:2000]
    server["bodies"] = [bad1, bad2]
    root = tmp_path / "data"
    with pytest.raises(ChecksumError) as err:
        prepare("cifar10", root, url=server["url"], md5=md5(good))
    text = str(err.value)
    assert "cifar-10-python.tar.gz" in text and md5(bad1) in text and md5(bad2) in text
    assert md5(good) in text and "\n" not in text
    assert not (root / "downloads/cifar-10-python.tar.gz").exists(), "a bad download must go"
    assert not (root / "cifar10").exists()


def test_truncated_archive_in_the_cache_is_never_read(tmp_path, server):
    archive, truth = make_cifar(tmp_path, "cifar10")
    good = archive.read_bytes()
    root = tmp_path / "data"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads/cifar-10-python.tar.gz").write_bytes(good[:5000])  # killed earlier
    server["bodies"] = [good]
    data = load(prepare("cifar10", root, url=server["url"], md5=md5(good)), "cifar10")
    assert server["hits"] == 1 and torch.equal(data.train_y, torch.from_numpy(truth["train"][1]))
    # a local archive that fails its check is reported, never extracted, never deleted
    local = tmp_path / "local.tar.gz"
    local.write_bytes(good[:5000])
    with pytest.raises(ChecksumError, match="md5 of .*local.tar.gz"):
        prepare("cifar10", tmp_path / "other", url=str(local), md5=md5(good))
    assert local.stat().st_size == 5000 and not (tmp_path / "other/cifar10").exists()


def test_damaged_prepared_file_is_rebuilt(tmp_path, capfd):
    folder = prepare("digits", tmp_path)
    original = (folder / "train.pt").read_bytes()
    (folder / "train.pt").unlink()
    (folder / "train.pt").write_bytes(original[:-100])  # truncated, as by a full disk
    assert prepare("digits", tmp_path) == folder
    assert "rebuilding" in capfd.readouterr().err
    assert (folder / "train.pt").read_bytes() == original


@pytest.mark.slow
def test_damaged_prepared_file_through_dvc_repro(tmp_path):
    repo = make_repo(tmp_path / "repo", "preset=tiny", "methods=[random_erk]")
    run(f"{DVC} repro train", repo)
    target = repo / "data/digits/test.pt"
    good = target.read_bytes()
    target.unlink()  # replace, not edit: the cache copy behind a link stays intact
    target.write_bytes(b"garbage")
    status = run(f"{DVC} status data", repo).stdout
    assert "modified" in status and "data/digits" in status
    out = run(f"{DVC} repro train", repo).stdout
    assert target.read_bytes() == good
    assert not [s for s in ran(out) if s.startswith(("mask@", "train@"))]
