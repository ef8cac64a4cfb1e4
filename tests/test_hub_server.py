"""End-to-end tests of robustzoo.testing.hub_server with the real huggingface_hub client."""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import save_file

try:
    from robustzoo.testing.hub_server import HubServer
except ImportError:  # the package may be half-built while this module is developed
    _path = Path(__file__).resolve().parents[1] / "robustzoo" / "testing" / "hub_server.py"
    _spec = importlib.util.spec_from_file_location("_robustzoo_hub_server", _path)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _module
    _spec.loader.exec_module(_module)
    HubServer = _module.HubServer

TOKEN = "test-token"
FILES = ("model.safetensors", "config.json", "README.md")
CARD = (
    "---\nlibrary_name: robustzoo\nlicense: apache-2.0\ntags:\n- robustzoo\n---\n# A test model\n"
)


@pytest.fixture(scope="module", autouse=True)
def _client_settings() -> Iterator[None]:
    """Point the client at nothing but our server.

    huggingface_hub reads these settings once, at import, so patch the constants: Xet uploads
    only work on the real Hub, and with telemetry on, the client fetches an "agent harness"
    registry from the real Hub (constants.ENDPOINT) whatever `endpoint=` says.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_DISABLE_XET", "1")
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        mp.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    yield server
    server.stop()
    assert server.errors == []


def _api(server: HubServer) -> HfApi:
    return HfApi(endpoint=server.endpoint, token=TOKEN)


def _model_folder(folder: Path, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"weight": rng.standard_normal((4, 3)).astype(np.float32)},
        str(folder / "model.safetensors"),
        metadata={"robustzoo.seed": str(seed)},
    )
    (folder / "config.json").write_text(json.dumps(config or {"architecture": "resnet18_cifar"}))
    (folder / "README.md").write_text(CARD)
    return folder


def _download(server: HubServer, repo_id: str, filename: str, revision: str, cache: Path) -> bytes:
    path = hf_hub_download(
        repo_id, filename, revision=revision, endpoint=server.endpoint, cache_dir=cache, token=TOKEN
    )
    return Path(path).read_bytes()


def _raw(
    server: HubServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request, for what the client never sends on purpose."""
    port = int(server.endpoint.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        if chunked:
            conn.putrequest(method, path)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            assert body is not None
            for i in range(0, len(body), 7):
                piece = body[i : i + 7]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@dataclass
class Published:
    repo_id: str
    folder: Path
    oid: str
    requests: list[tuple[str, str]]


@pytest.fixture(scope="module")
def published(hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """org/published: the three files of a zoo entry, pushed in one upload_folder."""
    folder = _model_folder(tmp_path_factory.mktemp("model"))
    api = _api(hub)
    api.create_repo("org/published")
    start = len(hub.requests)
    info = api.upload_folder(
        repo_id="org/published", folder_path=folder, commit_message="Add model"
    )
    return Published("org/published", folder, info.oid, hub.requests[start:])


def test_create_repo_through_client(hub: HubServer) -> None:
    api = _api(hub)
    url = api.create_repo("org/created")
    assert url.repo_id == "org/created"
    assert url.startswith(hub.endpoint)
    assert len(hub.commits("org/created")) == 1  # initial commit, so `main` resolves
    assert api.list_repo_files("org/created") == [".gitattributes"]

    assert api.create_repo("org/created", exist_ok=True).repo_id == "org/created"
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("org/created")
    assert excinfo.value.response.status_code == 409
    with pytest.raises(FileExistsError):
        hub.create_repo("org/created")


def test_upload_folder_is_one_commit(hub: HubServer, published: Published) -> None:
    assert hub.commits(published.repo_id)[0] == published.oid
    assert len(hub.commits(published.repo_id)) == 2

    def kind(method: str, path: str) -> str:
        if path == "/api/validate-yaml":
            return "validate-yaml"
        if "/preupload/" in path:
            return "preupload"
        if path.endswith(".git/info/lfs/objects/batch"):
            return "lfs-batch"
        if method == "PUT":
            return "lfs-put"
        if "/commit/" in path:
            return "commit"
        return path

    kinds = [kind(method, path) for method, path in published.requests]
    # Xet off: card check (sent twice by upload_folder), preupload, LFS batch, one PUT for
    # the weights (the only LFS file), then a single commit.
    assert list(dict.fromkeys(kinds)) == [
        "validate-yaml",
        "preupload",
        "lfs-batch",
        "lfs-put",
        "commit",
    ]
    assert kinds.count("lfs-put") == 1
    assert kinds.count("commit") == 1
    assert ("POST", "/api/models/org/published/commit/main") in published.requests


@pytest.mark.parametrize("filename", FILES)
def test_download_by_branch_and_commit(
    hub: HubServer, published: Published, filename: str, tmp_path: Path
) -> None:
    expected = (published.folder / filename).read_bytes()
    by_branch = _download(hub, published.repo_id, filename, "main", tmp_path / "a")
    by_commit = _download(hub, published.repo_id, filename, published.oid, tmp_path / "b")
    assert by_branch == expected
    assert by_commit == expected


def test_model_info_and_listings(hub: HubServer, published: Published) -> None:
    api = _api(hub)
    info = api.model_info(published.repo_id)
    assert info.id == published.repo_id
    assert info.sha == published.oid
    assert info.private is False
    assert info.last_modified is not None
    assert sorted(s.rfilename for s in info.siblings) == sorted((".gitattributes", *FILES))
    assert info.card_data is not None and info.card_data.library_name == "robustzoo"
    assert "robustzoo" in info.tags

    assert api.model_info(published.repo_id, revision=published.oid).sha == published.oid
    initial = hub.commits(published.repo_id)[-1]
    assert [s.rfilename for s in api.model_info(published.repo_id, revision=initial).siblings] == [
        ".gitattributes"
    ]

    assert sorted(api.list_repo_files(published.repo_id)) == sorted((".gitattributes", *FILES))
    tree = {f.path: f for f in api.list_repo_tree(published.repo_id, recursive=True)}
    weights = (published.folder / "model.safetensors").read_bytes()
    assert tree["model.safetensors"].lfs is not None
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert tree["model.safetensors"].size == len(weights)
    config = (published.folder / "config.json").read_bytes()
    assert tree["config.json"].lfs is None
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    assert tree["config.json"].blob_id == git_sha1

    commits = api.list_repo_commits(published.repo_id)
    assert [c.commit_id for c in commits] == hub.commits(published.repo_id)
    assert commits[0].title == "Add model"


def test_missing_repo_revision_and_file_raise_typed_errors(
    hub: HubServer, published: Published, tmp_path: Path
) -> None:
    api = _api(hub)
    with pytest.raises(RepositoryNotFoundError):
        _download(hub, "org/missing", "config.json", "main", tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    for revision in ("no-such-branch", "0" * 40):
        with pytest.raises(RevisionNotFoundError):
            _download(hub, published.repo_id, "config.json", revision, tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(published.repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        _download(hub, published.repo_id, "missing.json", "main", tmp_path)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(published.repo_id, path_in_repo="missing"))


def test_pinned_download_needs_no_server(tmp_path: Path) -> None:
    server = HubServer(tmp_path / "hub").start()
    try:
        api = _api(server)
        api.create_repo("org/offline")
        folder = _model_folder(tmp_path / "model")
        oid = api.upload_folder(repo_id="org/offline", folder_path=folder).oid
        cache = tmp_path / "cache"
        first = hf_hub_download(
            "org/offline",
            "model.safetensors",
            revision=oid,
            endpoint=server.endpoint,
            cache_dir=cache,
        )
        _download(server, "org/offline", "config.json", "main", cache)
    finally:
        server.stop()
    assert server.errors == []
    seen = len(server.requests)

    again = hf_hub_download(
        "org/offline", "model.safetensors", revision=oid, endpoint=server.endpoint, cache_dir=cache
    )
    assert again == first
    assert Path(again).read_bytes() == (folder / "model.safetensors").read_bytes()
    if not huggingface_hub.__version__.startswith("0."):
        # A branch falls back to the cached ref when the server cannot be reached (0.x
        # clients get there too, but only after ~20 s of retries with backoff).
        cached = _download(server, "org/offline", "config.json", "main", cache)
        assert cached == (folder / "config.json").read_bytes()
    assert len(server.requests) == seen
    # Nobody listens any more. (An uncached download would now fail only after the client's
    # own retries with backoff, ~20 s, so check the port directly.)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(server.endpoint.rsplit(":", 1)[1])), timeout=2)


def test_tamper_changes_bytes_but_not_metadata(hub: HubServer, tmp_path: Path) -> None:
    api = _api(hub)
    api.create_repo("org/tampered")
    folder = _model_folder(tmp_path / "model")
    oid = api.upload_folder(repo_id="org/tampered", folder_path=folder).oid
    original = (folder / "model.safetensors").read_bytes()
    evil = original[:-1] + bytes([original[-1] ^ 0xFF])  # same size: only a hash tells

    hub.tamper("org/tampered", "model.safetensors", evil)
    for revision in ("main", oid):
        path = hf_hub_download(
            "org/tampered",
            "model.safetensors",
            revision=revision,
            endpoint=hub.endpoint,
            cache_dir=tmp_path / f"cache-{revision}",
        )
        assert Path(path).read_bytes() == evil
        # The cache names the blob by the ETag, which still is the recorded sha256.
        assert Path(path).resolve().name == hashlib.sha256(original).hexdigest()
    recorded = {f.path: f for f in api.list_repo_tree("org/tampered")}["model.safetensors"]
    assert recorded.lfs is not None
    assert (
        recorded.lfs.sha256
        == hashlib.sha256(original).hexdigest()
        != hashlib.sha256(evil).hexdigest()
    )

    hub.tamper("org/tampered", "config.json", b"{}")  # a regular (non-LFS) file, another size
    assert _download(hub, "org/tampered", "config.json", oid, tmp_path / "cache-cfg") == b"{}"
    with pytest.raises(KeyError):
        hub.tamper("org/tampered", "missing.bin", b"")


def test_second_upload_moves_main(hub: HubServer, tmp_path: Path) -> None:
    api = _api(hub)
    api.create_repo("org/twice")
    folder = _model_folder(tmp_path / "model", config={"architecture": "a"})
    first = api.upload_folder(repo_id="org/twice", folder_path=folder).oid
    (folder / "config.json").write_text(json.dumps({"architecture": "b"}))
    start = len(hub.requests)
    second = api.upload_folder(repo_id="org/twice", folder_path=folder).oid

    assert second != first
    assert hub.commits("org/twice")[:2] == [second, first]
    assert api.model_info("org/twice").sha == second
    # Unchanged files are recognised from the preupload oids: no LFS upload the second time.
    assert not any(method == "PUT" for method, _ in hub.requests[start:])
    assert (
        _download(hub, "org/twice", "config.json", "main", tmp_path / "c1")
        == b'{"architecture": "b"}'
    )
    assert (
        _download(hub, "org/twice", "config.json", first, tmp_path / "c2")
        == b'{"architecture": "a"}'
    )
    assert (
        _download(hub, "org/twice", "model.safetensors", second, tmp_path / "c3")
        == (folder / "model.safetensors").read_bytes()
    )


def test_delete_and_nested_paths(hub: HubServer, tmp_path: Path) -> None:
    api = _api(hub)
    api.create_repo("org/nested")
    api.upload_file(path_or_fileobj=b"deep", path_in_repo="a/b/c.txt", repo_id="org/nested")
    api.upload_file(path_or_fileobj=b"top", path_in_repo="a/top.txt", repo_id="org/nested")
    top = {f.path: type(f).__name__ for f in api.list_repo_tree("org/nested")}
    assert top == {"a": "RepoFolder", ".gitattributes": "RepoFile"}
    inside = {f.path: type(f).__name__ for f in api.list_repo_tree("org/nested", path_in_repo="a")}
    assert inside == {"a/b": "RepoFolder", "a/top.txt": "RepoFile"}
    path = hf_hub_download(
        "org/nested", "c.txt", subfolder="a/b", endpoint=hub.endpoint, cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == b"deep"

    api.delete_file("a/top.txt", repo_id="org/nested")
    assert sorted(api.list_repo_files("org/nested")) == [".gitattributes", "a/b/c.txt"]
    api.delete_folder("a", repo_id="org/nested")
    assert api.list_repo_files("org/nested") == [".gitattributes"]
    assert len(hub.commits("org/nested")) == 5


def test_snapshot_download(hub: HubServer, published: Published, tmp_path: Path) -> None:
    folder = Path(
        snapshot_download(
            published.repo_id, revision=published.oid, endpoint=hub.endpoint, cache_dir=tmp_path
        )
    )
    assert folder.name == published.oid
    for filename in FILES:
        assert (folder / filename).read_bytes() == (published.folder / filename).read_bytes()


def test_invalid_card_metadata_is_refused(hub: HubServer, tmp_path: Path) -> None:
    api = _api(hub)
    api.create_repo("org/badcard")
    folder = _model_folder(tmp_path / "model")
    (folder / "README.md").write_text("---\ntags: [unclosed\n---\n# card\n")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_folder(repo_id="org/badcard", folder_path=folder)
    assert len(hub.commits("org/badcard")) == 1


def test_lfs_upload_checks_sha256(hub: HubServer) -> None:
    hub.create_repo("org/lfs")
    data = b"weights" * 100
    oid = hashlib.sha256(data).hexdigest()
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
    status, _, body = _raw(hub, "POST", "/org/lfs.git/info/lfs/objects/batch", batch.encode())
    assert status == 200
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    assert href.startswith(hub.endpoint)
    upload_path = href[len(hub.endpoint) :]

    status, _, body = _raw(hub, "PUT", upload_path, data[:-1] + b"X")
    assert status == 400 and "sha256" in json.loads(body)["error"]
    status, _, _ = _raw(hub, "PUT", upload_path, data, chunked=True)  # as streamed files are sent
    assert status == 200

    status, _, body = _raw(hub, "POST", "/org/lfs.git/info/lfs/objects/batch", batch.encode())
    assert "actions" not in json.loads(body)["objects"][0]  # already stored: nothing to upload

    ndjson = b"\n".join(
        json.dumps(line).encode()
        for line in (
            {"key": "header", "value": {"summary": "raw commit"}},
            {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid}},
            {
                "key": "file",
                "value": {
                    "path": "n.txt",
                    "content": base64.b64encode(b"n").decode(),
                    "encoding": "base64",
                },
            },
        )
    )
    status, _, body = _raw(hub, "POST", "/api/models/org/lfs/commit/main", ndjson)
    assert status == 200
    assert json.loads(body)["commitOid"] == hub.commits("org/lfs")[0]

    status, headers, _ = _raw(hub, "HEAD", "/org/lfs/resolve/main/w.bin")
    assert status == 200
    assert headers["ETag"] == f'"{oid}"' and headers["X-Linked-Etag"] == f'"{oid}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(data))
    assert headers["X-Repo-Commit"] == hub.commits("org/lfs")[0]
    status, headers, body = _raw(
        hub, "GET", "/org/lfs/resolve/main/w.bin", headers={"Range": "bytes=7-13"}
    )
    assert status == 206 and body == data[7:14]

    unknown = "0" * 64
    bad = json.dumps({"key": "lfsFile", "value": {"path": "x.bin", "oid": unknown, "size": 1}})
    header = json.dumps({"key": "header", "value": {"summary": "bad"}})
    status, _, _ = _raw(hub, "POST", "/api/models/org/lfs/commit/main", f"{header}\n{bad}".encode())
    assert status == 422  # an LFS pointer to an object never uploaded


def test_preupload_upload_modes(hub: HubServer) -> None:
    hub.create_repo("org/modes")
    files = [
        {"path": "w.bin", "size": 10, "sample": ""},
        {"path": "w.pt", "size": 10, "sample": ""},
        {"path": "model.safetensors", "size": 10, "sample": ""},
        {"path": "notes.txt", "size": 10, "sample": ""},
        {"path": "big.txt", "size": 2_000_000, "sample": ""},
        {"path": ".gitattributes", "size": 10, "sample": ""},
    ]
    status, _, body = _raw(
        hub, "POST", "/api/models/org/modes/preupload/main", json.dumps({"files": files}).encode()
    )
    assert status == 200
    answer = {f["path"]: f for f in json.loads(body)["files"]}
    modes = {path: f["uploadMode"] for path, f in answer.items()}
    assert modes == {
        "w.bin": "lfs",
        "w.pt": "lfs",
        "model.safetensors": "lfs",
        "notes.txt": "regular",
        "big.txt": "lfs",
        ".gitattributes": "regular",
    }
    assert "oid" in answer[".gitattributes"] and "oid" not in answer["notes.txt"]


def test_unknown_requests_get_json_404_and_are_logged(hub: HubServer) -> None:
    for method, path in (
        ("GET", "/api/spaces/org/x"),
        ("DELETE", "/api/repos/delete"),
        ("GET", "/"),
    ):
        status, headers, body = _raw(hub, method, path)
        assert status == 404
        assert headers["Content-Type"] == "application/json"
        assert "error" in json.loads(body)
        assert hub.requests[-1] == (method, path)


def test_repos_persist_in_root(tmp_path: Path) -> None:
    with HubServer(tmp_path / "hub") as first:
        api = _api(first)
        api.create_repo("org/kept")
        oid = api.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="org/kept").oid
    with HubServer(tmp_path / "hub") as second:
        assert second.endpoint != "" and second.commits("org/kept")[0] == oid
        assert _download(second, "org/kept", "k.txt", oid, tmp_path / "cache") == b"kept"
