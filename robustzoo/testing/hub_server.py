"""A small Hugging Face Hub-protocol HTTP server for tests.

The real Hub cannot be reached from our machines, yet the publish and pull code must run the
real ``huggingface_hub`` client end to end. :class:`HubServer` speaks the part of the Hub
protocol that the client uses for model repos (create repo, card check, preupload, git-lfs
batch + basic PUT upload, NDJSON commit, repo info, tree, commit list, ``resolve`` downloads)
on ``127.0.0.1``. It works at the socket level, so it does not care which HTTP stack the
client uses (requests, httpx, httpx2).

Example:
    >>> from huggingface_hub import HfApi, hf_hub_download
    >>> with HubServer() as hub:                                   # doctest: +SKIP
    ...     api = HfApi(endpoint=hub.endpoint, token="test-token")
    ...     api.create_repo("org/model")
    ...     info = api.upload_folder(repo_id="org/model", folder_path="out/")
    ...     path = hf_hub_download("org/model", "config.json", revision=info.oid,
    ...                            endpoint=hub.endpoint, cache_dir="cache/")

Clients must pass ``endpoint=hub.endpoint`` on every call (``huggingface_hub`` reads
``HF_ENDPOINT`` once, at import) and disable Xet uploads (``HF_HUB_DISABLE_XET=1`` or
``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``), which only the real Hub accepts.
Also set ``HF_HUB_DISABLE_TELEMETRY`` (or the constant): otherwise huggingface_hub 2.x fetches
an "agent harness" registry from ``constants.ENDPOINT`` (the real Hub) whatever ``endpoint=``
says. Any token is accepted.

Storage under ``root``: ``blobs/<sha256>`` holds file contents (content-addressed, shared by
all repos), ``repos/<org>/<name>.json`` holds each repo's commits and refs, and
``tampered/<sha256>`` holds bytes substituted by :meth:`HubServer.tamper`. A server made on
an existing ``root`` sees the repos stored there.

Only the standard library is needed. If PyYAML is importable (``huggingface_hub`` depends on
it), README front matter is checked by ``/api/validate-yaml`` and returned as ``cardData``
by the repo-info endpoint, as the real Hub does.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer", "LFS_EXTENSIONS", "LFS_SIZE_THRESHOLD"]

# Files with these suffixes, or larger than LFS_SIZE_THRESHOLD bytes, are stored as LFS objects
# (the real Hub decides by .gitattributes patterns and a size limit; this keeps the same shape).
LFS_EXTENSIONS: tuple[str, ...] = (".safetensors", ".bin", ".pt")
LFS_SIZE_THRESHOLD = 1_000_000

# Bounded so that a stuck client can never hang a handler thread (and so the test) for long.
_SOCKET_TIMEOUT_S = 30.0
# Upper bounds on request bodies: JSON/NDJSON bodies stay in memory, LFS bodies go to disk.
_MAX_JSON_BODY = 256 * 1024 * 1024
_MAX_LFS_BODY = 8 * 1024 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
# Same front-matter pattern as huggingface_hub.repocard.REGEX_YAML_BLOCK.
_YAML_BLOCK_RE = re.compile(
    r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))"
)

_CANONICAL_ENDPOINT = "https://huggingface.co"
_OLD_CLIENT_RE = re.compile(r"(?:^|[;\s])hf_hub/0\.")
_AUTHOR = "robustzoo-test"
_GITATTRIBUTES = (
    "".join(
        f"*{ext} filter=lfs diff=lfs merge=lfs -text\n"
        for ext in (*LFS_EXTENSIONS, ".pth", ".ckpt", ".h5")
    )
).encode()


class _HubError(Exception):
    """An error answered to the client as JSON, with the Hub's ``X-Error-Code`` header.

    Args:
        status: HTTP status code.
        message: Human-readable message (``{"error": message}`` body, ``X-Error-Message``).
        code: Value of ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
            ``EntryNotFound``), which ``hf_raise_for_status`` maps to typed errors.
        headers: Extra response headers.
        body: Extra JSON body fields.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body or {}


def _repo_not_found(repo_id: str) -> _HubError:
    return _HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


def _now_iso() -> str:
    """Current UTC time in the Hub's format (``2024-01-31T12:00:00.000Z``)."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_EXTENSIONS) or size > LFS_SIZE_THRESHOLD


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].strip().lower() in ("1", "true", "yes")


def _check_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME_RE.match(p) for p in parts) or repo_id.endswith(".git"):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    return parts[0], parts[1]


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _parse_front_matter(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a README's YAML front matter.

    Returns:
        ``(metadata, error)``: metadata is None when there is no front matter or PyYAML is
        missing; error is a message when the front matter is not a YAML mapping.
    """
    match = _YAML_BLOCK_RE.match(text)
    if match is None:
        return None, None
    try:
        import yaml  # optional: huggingface_hub depends on PyYAML, the server itself does not
    except ImportError:
        return None, None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return None, f"Invalid YAML in README.md front matter: {exc}"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, "README.md front matter must be a YAML mapping"
    return data, None


class _Store:
    """Repos, commits and blobs on disk; every method is thread-safe.

    A repo is a JSON-able dict: ``{"id", "private", "createdAt", "refs": {branch: sha},
    "commits": {sha: commit}, "tampered": {sha: {path: sha256 of substitute bytes}}}``; a
    commit is ``{"sha", "parent", "title", "message", "date", "files": {path: entry}}`` and
    an entry is ``{"sha256", "size", "lfs", "oid", "pointerSize"}``. Commits are never
    changed once made, so readers may use them outside the lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.repos_dir = root / "repos"
        self.tampered_dir = root / "tampered"
        for folder in (self.blobs, self.repos_dir, self.tampered_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._repos: dict[str, dict[str, Any]] = {}
        for path in sorted(self.repos_dir.glob("*/*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            self._repos[data["id"]] = data

    # -- blobs -------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_bytes(self, data: bytes, folder: Path | None = None) -> str:
        """Store bytes content-addressed; returns their sha256."""
        sha = hashlib.sha256(data).hexdigest()
        target = (folder or self.blobs) / sha
        if not target.is_file():
            tmp = target.with_name(f".{sha}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return sha

    def put_stream(self, chunks: Iterator[bytes], expected_sha256: str) -> int:
        """Store a streamed LFS upload after checking its sha256.

        Raises:
            _HubError: 400 when the content does not hash to ``expected_sha256``.
        """
        tmp = self.blobs / f".{expected_sha256}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            if digest.hexdigest() != expected_sha256:
                raise _HubError(
                    400,
                    f"sha256 of uploaded content is {digest.hexdigest()}, expected {expected_sha256}",
                )
            os.replace(tmp, self.blob_path(expected_sha256))
        finally:
            tmp.unlink(missing_ok=True)
        return size

    # -- repos ---------------------------------------------------------------------------

    def _save(self, repo: dict[str, Any]) -> None:
        org, name = repo["id"].split("/")
        path = self.repos_dir / org / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(repo, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)  # atomic, so a reader never sees half a file

    def get(self, repo_id: str) -> dict[str, Any]:
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None:
            raise _repo_not_found(repo_id)
        return repo

    def create_repo(self, repo_id: str, private: bool = False) -> bool:
        """Create a repo with an initial commit holding ``.gitattributes``.

        Returns:
            True if created, False if it already existed.
        """
        _check_repo_id(repo_id)
        with self._lock:
            if repo_id in self._repos:
                return False
            repo: dict[str, Any] = {
                "id": repo_id,
                "private": bool(private),
                "createdAt": _now_iso(),
                "refs": {},
                "commits": {},
                "tampered": {},
            }
            # An initial commit so that `main` resolves at once, as on the real Hub.
            entry = self._entry_for_regular(self.put_bytes(_GITATTRIBUTES), _GITATTRIBUTES)
            self._add_commit(repo, "main", None, "initial commit", "", {".gitattributes": entry})
            self._repos[repo_id] = repo
            self._save(repo)
            return True

    @staticmethod
    def _entry_for_regular(sha256: str, data: bytes) -> dict[str, Any]:
        return {
            "sha256": sha256,
            "size": len(data),
            "lfs": False,
            "oid": _git_blob_sha1(data),
            "pointerSize": None,
        }

    @staticmethod
    def _entry_for_lfs(sha256: str, size: int) -> dict[str, Any]:
        pointer = _lfs_pointer(sha256, size)
        return {
            "sha256": sha256,
            "size": size,
            "lfs": True,
            "oid": _git_blob_sha1(pointer),
            "pointerSize": len(pointer),
        }

    @staticmethod
    def _add_commit(
        repo: dict[str, Any],
        branch: str,
        parent: str | None,
        title: str,
        message: str,
        files: dict[str, dict[str, Any]],
    ) -> str:
        # Deterministic: the same history gives the same shas on every run, and the repo id
        # and parent make every commit sha unique.
        digest_input = json.dumps(
            {
                "repo": repo["id"],
                "parent": parent,
                "title": title,
                "message": message,
                "files": sorted((path, entry["sha256"]) for path, entry in files.items()),
            },
            sort_keys=True,
        )
        sha = hashlib.sha1(digest_input.encode()).hexdigest()
        repo["commits"][sha] = {
            "sha": sha,
            "parent": parent,
            "title": title,
            "message": message,
            "date": _now_iso(),
            "files": files,
        }
        repo["refs"][branch] = sha
        return sha

    def resolve(self, repo_id: str, revision: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Resolve a branch name or (possibly abbreviated) commit sha.

        Returns:
            ``(repo, commit)``.

        Raises:
            _HubError: RepoNotFound or RevisionNotFound.
        """
        revision = revision or "main"
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                raise _repo_not_found(repo_id)
            sha = repo["refs"].get(revision)
            if sha is None and _HEX_RE.match(revision):
                matches = [c for c in repo["commits"] if c.startswith(revision)]
                sha = matches[0] if len(matches) == 1 else None
            if sha is None:
                raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return repo, repo["commits"][sha]

    def history(self, repo: dict[str, Any], sha: str) -> list[dict[str, Any]]:
        """Commits from ``sha`` back to the first one, newest first."""
        out = []
        with self._lock:
            cursor: str | None = sha
            while cursor is not None:
                commit = repo["commits"][cursor]
                out.append(commit)
                cursor = commit["parent"]
        return out

    def commit(
        self,
        repo_id: str,
        branch: str,
        header: dict[str, Any],
        operations: list[tuple[str, dict[str, Any]]],
    ) -> str:
        """Apply NDJSON commit operations on top of ``branch``; returns the new commit sha.

        Raises:
            _HubError: unknown repo/branch, stale ``parentCommit``, missing LFS object or
                deleted path, malformed operation.
        """
        # Decode and store regular contents before taking the lock: blobs are
        # content-addressed, so storing one that ends up unused is harmless.
        prepared: list[tuple[str, str, dict[str, Any] | None]] = []
        for key, value in operations:
            if not isinstance(value, dict):
                raise _HubError(400, f"Malformed '{key}' operation")
            path = value.get("path")
            if key == "deletedFolder":
                if not isinstance(path, str) or not path.strip("/"):
                    raise _HubError(400, f"Invalid folder path: {path!r}")
                prepared.append((key, path.strip("/"), None))
                continue
            path = _check_path(path)
            if key == "file":
                content = value.get("content")
                if not isinstance(content, str):
                    raise _HubError(400, f"Missing content for {path}")
                if value.get("encoding", "base64") == "base64":
                    try:
                        data = base64.b64decode(content, validate=True)
                    except ValueError as exc:
                        raise _HubError(400, f"Invalid base64 content for {path}") from exc
                else:
                    data = content.encode()
                prepared.append((key, path, self._entry_for_regular(self.put_bytes(data), data)))
            elif key == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if (
                    value.get("algo", "sha256") != "sha256"
                    or not isinstance(oid, str)
                    or not _SHA256_RE.match(oid)
                ):
                    raise _HubError(400, f"Invalid LFS oid for {path}: {oid!r}")
                if not self.has_blob(oid):
                    raise _HubError(422, f"LFS object {oid} for {path} was never uploaded")
                stored = self.blob_path(oid).stat().st_size
                if size is not None and size != stored:
                    raise _HubError(422, f"LFS object {oid} has size {stored}, commit says {size}")
                prepared.append((key, path, self._entry_for_lfs(oid, stored)))
            elif key == "deletedFile":
                prepared.append((key, path, None))
            else:
                raise _HubError(400, f"Unknown commit operation: {key!r}")

        summary = header.get("summary")
        if not isinstance(summary, str) or not summary:
            raise _HubError(400, "Commit summary is required")
        description = header.get("description") or ""
        parent_commit = header.get("parentCommit")

        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                raise _repo_not_found(repo_id)
            head = repo["refs"].get(branch)
            if head is None:
                # One can only commit on top of a branch (not a commit sha), as on the Hub.
                raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if parent_commit is not None and not head.startswith(str(parent_commit)):
                raise _HubError(
                    412, f"A commit has happened since {parent_commit}: {branch} is at {head}"
                )
            files = dict(repo["commits"][head]["files"])
            for key, path, entry in prepared:
                if key in ("file", "lfsFile"):
                    assert entry is not None
                    files[path] = entry
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise _HubError(
                            404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                        )
                else:
                    doomed = [p for p in files if p.startswith(path + "/")]
                    if not doomed:
                        raise _HubError(
                            404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                        )
                    for p in doomed:
                        del files[p]
            sha = self._add_commit(repo, branch, head, summary, description, files)
            self._save(repo)
            return sha

    def served_file(self, repo: dict[str, Any], commit: dict[str, Any], path: str) -> Path:
        """Where the bytes served for ``path`` at ``commit`` live (tampered ones if any)."""
        with self._lock:
            substitute = repo["tampered"].get(commit["sha"], {}).get(path)
        if substitute is not None:
            return self.tampered_dir / substitute
        return self.blob_path(commit["files"][path]["sha256"])

    def tamper(self, repo_id: str, path: str, data: bytes, announce: bool = False) -> None:
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                raise KeyError(f"no repo {repo_id!r}")
            head = repo["refs"]["main"]
            if path not in repo["commits"][head]["files"]:
                raise KeyError(f"no file {path!r} in {repo_id}@{head}")
            key = self.put_bytes(data, folder=self.tampered_dir)
            repo["tampered"].setdefault(head, {})[path] = key
            announced = repo.setdefault("announced", {}).setdefault(head, [])
            if announce and path not in announced:
                announced.append(path)
            elif not announce and path in announced:
                announced.remove(path)
            self._save(repo)

    def announced_hash(self, repo: dict[str, Any], commit: dict[str, Any], path: str) -> str | None:
        """sha256 of the substitute bytes when :meth:`tamper` was told to announce them."""
        with self._lock:
            if path in repo.get("announced", {}).get(commit["sha"], []):
                return repo["tampered"][commit["sha"]][path]
        return None


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Threaded server that knows its :class:`HubServer` and its open connections."""

    daemon_threads = True  # a stuck handler never keeps the test process alive
    hub: HubServer

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds on a machine without DNS; the name is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record unexpected handler errors instead of printing them; ignore dropped clients."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.hub.errors.append(traceback.format_exc())

    def close_connections(self) -> None:
        """Cut connections still open, so that nothing is served after stop()."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes one request to the Hub endpoint it names."""

    server: _HTTPServer
    # HTTP/1.0: one request per connection, so stop() leaves no keep-alive connection that
    # could still be served from, and every response is delimited by Content-Length.
    protocol_version = "HTTP/1.0"
    server_version = "robustzoo-hub-server/1.0"
    timeout = _SOCKET_TIMEOUT_S

    # (methods, pattern on the raw, still percent-encoded path, handler method name).
    # Matching before unquoting matters: the client encodes '/' in revisions and tree paths
    # as %2F, so that they stay one path segment.
    _ROUTES: tuple[tuple[frozenset[str], re.Pattern[str], str], ...] = tuple(
        (frozenset(methods.split()), re.compile(pattern), name)
        for methods, pattern, name in (
            ("POST", r"^/api/repos/create/?$", "_create_repo"),
            ("POST", r"^/api/validate-yaml/?$", "_validate_yaml"),
            ("POST", r"^/api/models/([^/]+)/([^/]+)/preupload/([^/]+)$", "_preupload"),
            ("POST", r"^/api/models/([^/]+)/([^/]+)/commit/([^/]+)$", "_commit"),
            ("GET HEAD", r"^/api/models/([^/]+)/([^/]+)/?$", "_model_info"),
            ("GET HEAD", r"^/api/models/([^/]+)/([^/]+)/revision/([^/]+)$", "_model_info"),
            ("GET HEAD", r"^/api/models/([^/]+)/([^/]+)/tree/([^/]+)(?:/(.*))?$", "_tree"),
            ("GET HEAD", r"^/api/models/([^/]+)/([^/]+)/commits/([^/]+)$", "_commits"),
            ("POST", r"^/([^/]+)/([^/]+)\.git/info/lfs/objects/batch$", "_lfs_batch"),
            ("PUT", r"^/([^/]+)/([^/]+)\.git/info/lfs/objects/upload/([0-9a-f]{64})$", "_lfs_put"),
            ("GET HEAD", r"^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$", "_resolve"),
        )
    )

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: HubServer.requests is the log tests look at."""

    def do_GET(self) -> None:
        """Serve any method through the route table."""
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- plumbing ------------------------------------------------------------------------

    @property
    def _store(self) -> _Store:
        return self.server.hub._store

    def _base_url(self) -> str:
        # URLs handed back (repo url, LFS href) use the host the client dialled, so they
        # match its `endpoint` even if it spelled it "localhost".
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.hub.endpoint

    def _dispatch(self) -> None:
        self._responded = False
        self._body_read = False
        split = urlsplit(self.path)
        self._query = parse_qs(split.query, keep_blank_values=True)
        self.server.hub.requests.append((self.command, split.path))
        try:
            for methods, pattern, name in self._ROUTES:
                match = pattern.match(split.path)
                if match and self.command in methods:
                    args = [unquote(g) if g is not None else None for g in match.groups()]
                    getattr(self, name)(*args)
                    return
            raise _HubError(
                404, f"No such endpoint on this test server: {self.command} {split.path}"
            )
        except _HubError as exc:
            self._send_error(exc)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # report server bugs to the client and the test, never crash silently
            self.server.hub.errors.append(traceback.format_exc())
            self._send_error(_HubError(500, "Internal error in the test hub server"))

    def _iter_body(self, limit: int) -> Iterator[bytes]:
        """Yield the request body, plain (Content-Length) or chunked, at most ``limit`` bytes."""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _HubError(400, "Truncated chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise _HubError(400, "Malformed chunked body") from exc
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return
                total += size
                if total > limit:
                    raise _HubError(413, "Request body too large")
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, _COPY_CHUNK))
                    if not piece:
                        raise _HubError(400, "Truncated chunked body")
                    remaining -= len(piece)
                    yield piece
                self.rfile.readline(1024)  # CRLF after each chunk
        else:
            try:
                remaining = int(self.headers.get("Content-Length") or 0)
            except ValueError as exc:
                raise _HubError(400, "Bad Content-Length") from exc
            if remaining > limit:
                raise _HubError(413, "Request body too large")
            while remaining > 0:
                piece = self.rfile.read(min(remaining, _COPY_CHUNK))
                if not piece:
                    raise _HubError(400, "Truncated body")
                remaining -= len(piece)
                yield piece

    def _read_body(self, limit: int = _MAX_JSON_BODY) -> bytes:
        return b"".join(self._iter_body(limit))

    def _read_json(self) -> Any:
        try:
            return json.loads(self._read_body() or b"null")
        except ValueError as exc:
            raise _HubError(400, f"Body is not valid JSON: {exc}") from exc

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._responded = True
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(
        self, status: int, obj: Any, headers: dict[str, str] | None = None, content_type: str = ""
    ) -> None:
        self._send(status, json.dumps(obj).encode(), content_type or "application/json", headers)

    def _send_error(self, exc: _HubError) -> None:
        if self._responded:  # too late for a status line: drop the connection instead
            self.close_connection = True
            return
        if not self._body_read:
            # Read what the client sent so it does not see a reset while still writing.
            try:
                for _ in self._iter_body(_MAX_JSON_BODY):
                    pass
            except Exception:
                self.close_connection = True
        headers = dict(exc.headers)
        if exc.code:
            headers["X-Error-Code"] = exc.code
        # Header values must be latin-1 and one line.
        headers["X-Error-Message"] = (
            exc.message.encode("latin-1", "replace").decode("latin-1").splitlines()[0]
        )
        self._send_json(exc.status, {"error": exc.message, **exc.body}, headers)

    def _reject_pr(self) -> None:
        if _truthy(self._query.get("create_pr")):
            raise _HubError(400, "Pull requests are not supported by the test hub server")

    # -- endpoints -----------------------------------------------------------------------

    def _create_repo(self) -> None:
        payload = self._read_json()
        if not isinstance(payload, dict):
            raise _HubError(400, "Expected a JSON object")
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise _HubError(
                400, f"Only model repos are supported by the test hub server, not {repo_type!r}"
            )
        org, name = payload.get("organization"), payload.get("name")
        if not org:
            # The real Hub would use the token's user; this server has no users.
            raise _HubError(
                400, "Give the repo id as 'org/name': the test hub server has no user namespace"
            )
        repo_id = f"{org}/{name}"
        try:
            _check_repo_id(repo_id)
        except ValueError as exc:
            raise _HubError(400, str(exc)) from exc
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{self._base_url()}/{repo_id}"
        if not self._store.create_repo(repo_id, private=private):
            # create_repo(exist_ok=True) swallows exactly this 409.
            raise _HubError(409, "You already created this model repo", body={"url": url})
        self._send_json(
            200,
            {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]},
        )

    def _validate_yaml(self) -> None:
        payload = self._read_json()
        content = payload.get("content") if isinstance(payload, dict) else None
        if not isinstance(content, str):
            raise _HubError(
                400, "Missing 'content'", body={"errors": [{"message": "Missing 'content'"}]}
            )
        _, error = _parse_front_matter(content)
        if error is not None:
            # The client reads "errors" from the body and raises ValueError("Invalid metadata...").
            self._send_json(400, {"error": error, "errors": [{"message": error}], "warnings": []})
            return
        self._send_json(200, {"errors": [], "warnings": []})

    def _preupload(self, org: str, name: str, revision: str) -> None:
        self._reject_pr()
        payload = self._read_json()
        _, commit = self._store.resolve(f"{org}/{name}", revision)
        files = payload.get("files") if isinstance(payload, dict) else None
        if not isinstance(files, list):
            raise _HubError(400, "Expected {'files': [...]}")
        out = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise _HubError(400, "Each file needs a 'path'")
            path, size = item["path"], int(item.get("size") or 0)
            answer: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if _is_lfs(path, size) else "regular",
                "shouldIgnore": False,
            }
            existing = commit["files"].get(path)
            if existing is not None:
                # The client skips files whose local oid equals this one (sha256 for LFS,
                # git-blob sha1 otherwise), which avoids empty commits.
                answer["oid"] = existing["sha256"] if existing["lfs"] else existing["oid"]
            out.append(answer)
        self._send_json(200, {"files": out, "commitOid": commit["sha"]})

    def _lfs_batch(self, org: str, name: str) -> None:
        repo_id = f"{org}/{name}"
        payload = self._read_json()
        self._store.get(repo_id)
        if not isinstance(payload, dict) or payload.get("operation") != "upload":
            raise _HubError(400, "Only the 'upload' operation of the LFS batch API is supported")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise _HubError(400, "Expected 'objects'")
        out = []
        for obj in objects:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            if (
                not isinstance(oid, str)
                or not _SHA256_RE.match(oid)
                or not isinstance(size, int)
                or size < 0
            ):
                out.append(
                    {
                        "oid": str(oid),
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "Invalid oid or size"},
                    }
                )
                continue
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self._store.has_blob(oid, size):
                # No "actions" means "already stored": the client then skips the upload.
                href = f"{self._base_url()}/{repo_id}.git/info/lfs/objects/upload/{oid}"
                answer["actions"] = {"upload": {"href": href, "expires_in": 3600}}
            out.append(answer)
        self._send_json(
            200,
            {"transfer": "basic", "objects": out, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, org: str, name: str, oid: str) -> None:
        self._store.get(f"{org}/{name}")
        # The client streams the file, often chunked (no Content-Length): _iter_body handles both.
        self._store.put_stream(self._iter_body(_MAX_LFS_BODY), oid)
        self._send(200, b"")

    def _commit(self, org: str, name: str, revision: str) -> None:
        self._reject_pr()
        repo_id = f"{org}/{name}"
        body = self._read_body()
        self._store.get(repo_id)
        lines = [line for line in body.splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except ValueError as exc:
            raise _HubError(400, f"Commit body is not NDJSON: {exc}") from exc
        if not items or not isinstance(items[0], dict) or items[0].get("key") != "header":
            raise _HubError(400, "The first NDJSON line must be the commit header")
        header = items[0].get("value") or {}
        operations = []
        for item in items[1:]:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                raise _HubError(400, "Each NDJSON line needs 'key' and 'value'")
            operations.append((item["key"], item.get("value")))
        sha = self._store.commit(repo_id, revision, header, operations)
        base = self._base_url()
        if _OLD_CLIENT_RE.search(self.headers.get("User-Agent", "")):
            # huggingface_hub 0.x parses commitUrl against constants.ENDPOINT, ignoring the
            # endpoint= it was given, and fails on any other host; 1.x maps the canonical
            # host to endpoint= (and from 1.3.2 also parses the URL against endpoint=). The
            # real Hub answers with the canonical host too.
            base = _CANONICAL_ENDPOINT
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{base}/{repo_id}/commit/{sha}",
                "hookOutput": "",
            },
        )

    def _model_info(self, org: str, name: str, revision: str | None = None) -> None:
        repo_id = f"{org}/{name}"
        repo, commit = self._store.resolve(repo_id, revision)
        files = commit["files"]
        siblings = []
        for path in sorted(files):
            entry = files[path]
            sibling: dict[str, Any] = {
                "rfilename": path,
                "size": entry["size"],
                "blobId": entry["oid"],
            }
            if entry["lfs"]:
                sibling["lfs"] = {
                    "size": entry["size"],
                    # tamper(announce=True): the substitute's hash is announced here too
                    "sha256": self._store.announced_hash(repo, commit, path) or entry["sha256"],
                    "pointerSize": entry["pointerSize"],
                }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": org,
            "sha": commit["sha"],
            "lastModified": commit["date"],
            "createdAt": repo["createdAt"],
            "private": repo["private"],
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e["size"] for e in files.values()),
        }
        if "README.md" in files:
            card, _ = _parse_front_matter(
                self._store.served_file(repo, commit, "README.md").read_text(
                    encoding="utf-8", errors="replace"
                )
            )
            if card:
                # Like the Hub: the card's metadata as cardData, and tags derived from it.
                info["cardData"] = card
                for key in ("library_name", "pipeline_tag"):
                    if isinstance(card.get(key), str):
                        info[key] = card[key]
                card_tags = card.get("tags")
                tags = (
                    [t for t in card_tags if isinstance(t, str)]
                    if isinstance(card_tags, list)
                    else []
                )
                if isinstance(card.get("library_name"), str):
                    tags.insert(0, card["library_name"])
                datasets = card.get("datasets")
                for dataset in [datasets] if isinstance(datasets, str) else datasets or []:
                    tags.append(f"dataset:{dataset}")
                if isinstance(card.get("license"), str):
                    tags.append(f"license:{card['license']}")
                info["tags"] = list(dict.fromkeys(tags))
        if any(p.endswith(".safetensors") for p in files) and "safetensors" not in info["tags"]:
            info["tags"].append("safetensors")
        self._send_json(200, info)

    def _tree(self, org: str, name: str, revision: str, path: str | None) -> None:
        repo, commit = self._store.resolve(f"{org}/{name}", revision)
        files: dict[str, dict[str, Any]] = commit["files"]
        prefix = (path or "").strip("/")
        recursive = _truthy(self._query.get("recursive"))
        expand = _truthy(self._query.get("expand"))
        base = f"{prefix}/" if prefix else ""
        under = {p: e for p, e in files.items() if p.startswith(base)}
        if prefix and not under:
            raise _HubError(404, f"{prefix} does not exist on {commit['sha']}", "EntryNotFound")

        folders: set[str] = set()
        for p in under:
            parts = p[len(base) :].split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folders.add(base + "/".join(parts[:i]))

        def visible(p: str) -> bool:
            return recursive or "/" not in p[len(base) :]

        entries: list[dict[str, Any]] = []
        for folder in sorted(f for f in folders if visible(f)):
            content = sorted(
                (p, e["sha256"]) for p, e in files.items() if p.startswith(folder + "/")
            )
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(json.dumps(content).encode()).hexdigest(),
                "size": 0,
                "path": folder,
            }
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, folder)
            entries.append(entry)
        for p in sorted(p for p in under if visible(p)):
            e = under[p]
            entry = {"type": "file", "oid": e["oid"], "size": e["size"], "path": p}
            if e["lfs"]:
                entry["lfs"] = {
                    "oid": e["sha256"],
                    "size": e["size"],
                    "pointerSize": e["pointerSize"],
                }
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, p)
            entries.append(entry)
        self._send_json(200, entries)

    def _last_commit(
        self, repo: dict[str, Any], commit: dict[str, Any], path: str
    ) -> dict[str, str]:
        """The oldest commit in the unbroken run, back from ``commit``, where ``path`` is unchanged."""

        def state(c: dict[str, Any]) -> Any:
            return sorted(
                (p, e["sha256"])
                for p, e in c["files"].items()
                if p == path or p.startswith(path + "/")
            )

        history = self._store.history(repo, commit["sha"])
        current, last = state(history[0]), history[0]
        for older in history[1:]:
            if state(older) != current:
                break
            last = older
        return {"id": last["sha"], "title": last["title"], "date": last["date"]}

    def _commits(self, org: str, name: str, revision: str) -> None:
        repo, commit = self._store.resolve(f"{org}/{name}", revision)
        self._send_json(
            200,
            [
                {
                    "id": c["sha"],
                    "title": c["title"],
                    "message": c["message"],
                    "authors": [{"user": _AUTHOR}],
                    "date": c["date"],
                }
                for c in self._store.history(repo, commit["sha"])
            ],
        )

    def _resolve(self, org: str, name: str, revision: str, path: str) -> None:
        repo, commit = self._store.resolve(f"{org}/{name}", revision)
        entry = commit["files"].get(path)
        if entry is None:
            # X-Repo-Commit lets the client cache the file's absence for this commit.
            raise _HubError(
                404,
                f"Entry not found: {path} at {commit['sha']}",
                "EntryNotFound",
                headers={"X-Repo-Commit": commit["sha"]},
            )
        source = self._store.served_file(repo, commit, path)
        size = source.stat().st_size  # follows tamper(): the client checks sizes, not hashes
        # What the client names the cached blob by: sha256 for LFS, git-blob sha1 otherwise
        # (of the substitute bytes when a tamper() is announced, as a compromised store would).
        announced = self._store.announced_hash(repo, commit, path)
        if announced is not None:
            etag = announced if entry["lfs"] else _git_blob_sha1(source.read_bytes())
        else:
            etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "X-Repo-Commit": commit["sha"],
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
        }
        if entry["lfs"]:
            # On the Hub these come with the redirect to the CDN; the client prefers them.
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            match = _RANGE_RE.match(range_header)
            if match is None or (match.group(1) == "" and match.group(2) == ""):
                raise _HubError(
                    416,
                    f"Unsupported range {range_header!r}",
                    headers={"Content-Range": f"bytes */{size}"},
                )
            first, last = match.group(1), match.group(2)
            if first == "":
                start = max(size - int(last), 0)
            else:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                raise _HubError(
                    416,
                    f"Range {range_header!r} not satisfiable",
                    headers={"Content-Range": f"bytes */{size}"},
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(end - start + 1, 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for header, value in headers.items():
            self.send_header(header, value)
        self.end_headers()
        self._responded = True
        if self.command == "HEAD":
            return
        with open(source, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining:
                piece = f.read(min(remaining, _COPY_CHUNK))
                if not piece:
                    break
                self.wfile.write(piece)
                remaining -= len(piece)


class HubServer:
    """A Hugging Face Hub-protocol server on ``127.0.0.1`` for tests.

    Args:
        root: Folder to store repos and blobs in. A temporary folder, removed when the
            server object is garbage-collected, if None.

    Attributes:
        endpoint: ``"http://127.0.0.1:PORT"`` once started ("" before; kept after stop()).
        requests: ``(method, path)`` of every request received, in order; ``path`` is the
            raw (percent-encoded) URL path without the query string.
        errors: Tracebacks of server-side bugs (answered with 500); should stay empty.
        root: The storage folder.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="robustzoo-hub-")
            root = self._tmpdir.name
        self.root = Path(root)
        self._store = _Store(self.root)
        self.endpoint = ""
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        """Bind a free port and serve from a daemon thread.

        Returns:
            self, so that ``hub = HubServer().start()`` works.

        Raises:
            RuntimeError: If already started.
        """
        if self._httpd is not None:
            raise RuntimeError("HubServer is already running")
        httpd = _HTTPServer(self)
        self.endpoint = f"http://127.0.0.1:{httpd.server_port}"
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"HubServer:{httpd.server_port}",
            daemon=True,
        )
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving and close the port; a no-op if not running. Stored repos stay."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()  # returns within poll_interval
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def create_repo(self, repo_id: str) -> None:
        """Create a model repo directly, with its initial ``.gitattributes`` commit.

        Args:
            repo_id: ``"org/name"``.

        Raises:
            ValueError: If ``repo_id`` is not ``org/name``.
            FileExistsError: If the repo exists.
        """
        if not self._store.create_repo(repo_id):
            raise FileExistsError(f"repo {repo_id!r} already exists")

    def commits(self, repo_id: str) -> list[str]:
        """Commit shas of ``main``, newest first.

        Raises:
            KeyError: If there is no such repo.
        """
        try:
            repo, head = self._store.resolve(repo_id, "main")
        except _HubError as exc:
            raise KeyError(repo_id) from exc
        return [c["sha"] for c in self._store.history(repo, head["sha"])]

    def tamper(self, repo_id: str, path: str, data: bytes, announce: bool = False) -> None:
        """Serve ``data`` for ``path`` in the newest commit of ``main``, keeping its metadata.

        The recorded sha256, git oid, tree and repo-info entries stay as they were; only the
        bytes (and so Content-Length / X-Linked-Size) served by ``resolve`` change. The
        client checks sizes only, so it accepts the bytes and only a sha256 check of the
        download can catch them. Use data of the original length to mimic silent corruption.

        Args:
            announce: also announce the substitute's hash, in the ``ETag`` and the repo-info
                listing (a blob swapped in the server's storage, under the same commit sha): a
                check against the server's hash then passes, and only a hash recorded
                elsewhere (the model card of the commit, a pin) catches the swap.

        Raises:
            KeyError: If there is no such repo or file.
        """
        self._store.tamper(repo_id, path, data, announce=announce)
