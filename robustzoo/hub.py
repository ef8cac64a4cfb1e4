"""Publish runs to, and pull models from, the Hugging Face Hub (or any Hub-protocol server).

Push uploads ``config.json``, ``model.safetensors``, ``aux.safetensors`` (when the run has
one), ``robustbench.json`` (with standard AutoAttack) and a rendered model card that lists the
sha256 of all of them, in one commit. Pull resolves the revision to a commit sha, downloads
fixed filenames by that sha into the Hugging Face cache and checks every file; a file that
fails a check is refused with :class:`~robustzoo.errors.IntegrityError` and its commit removed
from the cache:

* against the hash the server lists for the commit (LFS sha256, or git blob sha1): catches
  corruption in transit;
* against the sha256 list of the robustzoo model card (README.md) of the same commit: catches
  a blob swapped under a published commit even when the server announces the new hash;
* zoo aliases: against the sha256 pinned in the zoo index; scripts: ``--expect-sha256``. Only
  a pin made elsewhere also holds against a server that rewrites the card. A repo that nothing
  vouches for (a timm push) is pulled with one :class:`~robustzoo.errors.UnvouchedModelWarning`;
* only ``config.json`` (JSON), the card's YAML front matter (``yaml.safe_load``) and
  safetensors files are ever read; the architecture must be a registered robustzoo net;
  nothing from a repo is executed, and no path a server sends is joined into a local path.

Only huggingface_hub's public API is used (``HfApi``, ``hf_hub_download``,
``try_to_load_from_cache``, ``scan_cache_dir``, ``huggingface_hub.errors``): no cache layout
of its own. Once robustzoo is imported, ``timm.create_model("hf-hub:...")`` of robustzoo's
nets loads the weights through :func:`verified_weights` (the same checks). huggingface_hub
reads ``HF_ENDPOINT`` once, at import, so every call passes ``endpoint=`` and ``cache_dir=``;
for other endpoints than huggingface.co, Xet and telemetry are off during the call, and no
stored token is sent unless one is passed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import runs
from .errors import (
    HubError,
    IntegrityError,
    NotFoundError,
    RunError,
    UnvouchedModelWarning,
    UsageError,
    did_you_mean,
    first_sentence,
)
from .files import os_error
from .zoo import COMMIT_RE, PUBLISHABLE_FILES, SHA256_RE, ZooEntry, repo_id_problem, validate_entry

HUB_PREFIX = "hf-hub:"
OFFICIAL_ENDPOINT = "https://huggingface.co"
CARD_FILE = "README.md"
REQUIRED = (runs.CONFIG_FILE, runs.MODEL_FILE)
ROBUSTBENCH_FILE = "robustbench.json"
OPTIONAL = (runs.AUX_FILE, CARD_FILE, ROBUSTBENCH_FILE)
# config.json and the card are a few kB; anything far larger is not ours and is not parsed.
MAX_CONFIG_BYTES = 1_000_000
MAX_CARD_BYTES = 2_000_000
MAX_CLASSES = 100_000
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


# -- settings ------------------------------------------------------------------------------

def default_endpoint() -> str:
    """``HF_ENDPOINT`` as huggingface_hub read it at import (huggingface.co by default)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def default_cache_dir() -> str:
    """The Hugging Face cache (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_official(endpoint: str) -> bool:
    """True for huggingface.co itself."""
    return endpoint.rstrip("/") == OFFICIAL_ENDPOINT


def offline_mode() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read by huggingface_hub at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def client_settings(endpoint: str) -> Iterator[None]:
    """huggingface_hub's settings for one push or pull: its progress bars off, and for a
    non-Hub endpoint Xet and telemetry off too.

    robustzoo reports its own progress; huggingface_hub's tqdm bars would be drawn beside it
    on stderr. Xet and telemetry are read from ``huggingface_hub.constants`` at call time;
    Xet uploads answer 404 anywhere but huggingface.co, and telemetry fetches an agent
    registry from huggingface.co whatever ``endpoint=`` says. Everything is restored
    afterwards.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()
    saved = constants.HF_HUB_DISABLE_XET, constants.HF_HUB_DISABLE_TELEMETRY
    if not is_official(endpoint):
        constants.HF_HUB_DISABLE_XET = True
        constants.HF_HUB_DISABLE_TELEMETRY = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET, constants.HF_HUB_DISABLE_TELEMETRY = saved
        if not bars_were_off:
            enable_progress_bars()


def _token_for(endpoint: str, token: str | None) -> str | bool | None:
    # A stored huggingface.co token must not leak to another server: send one only if given.
    if token:
        return token
    return None if is_official(endpoint) else False


# -- hashing and small checks --------------------------------------------------------------

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)  # git's object id, an integrity check only
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _short(sha: str) -> str:
    return sha[:12]


def check_architecture(cfg: Mapping[str, Any], source: str) -> None:
    """Refuse a config.json whose architecture or sizes robustzoo would not build itself."""
    from .plugins import registry

    arch = cfg.get("architecture")
    reg = registry("architectures")
    if not isinstance(arch, str) or arch not in reg:
        raise RunError(f"{source} names architecture {arch!r}, which is not a registered robustzoo "
                       f"architecture{did_you_mean(str(arch), reg.list())}; robustzoo only loads nets it "
                       f"knows (see `robustzoo list architectures`)")
    n = cfg.get("num_classes")
    margs = cfg.get("model_args", {})
    ok = (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_CLASSES
          and isinstance(margs, dict)
          and isinstance(margs.get("in_chans", 3), int) and 1 <= margs.get("in_chans", 3) <= 16
          and all(isinstance(v, (int, float)) for k in ("mean", "std", "input_size")
                  for v in margs.get(k, [0]))
          and len(margs.get("input_size", [32, 32])) == 2
          and all(0 < int(s) <= 4096 for s in margs.get("input_size", [32, 32])))
    if not ok:
        raise RunError(f"{source} has an implausible num_classes or model_args; it was not written by "
                       f"robustzoo")


def _read_config_file(path: Path, source: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise RunError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes; it was not written by robustzoo")
    cfg = runs.read_config(path.parent, timm_export=True)
    check_architecture(cfg, source)
    return cfg


# -- names ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What a NAME refers to on the Hub."""

    name: str
    repo_id: str
    revision: str
    entry: ZooEntry | None = None


def _check_revision(rev: str) -> str:
    if not _REVISION_RE.match(rev) or ".." in rev.split("/"):
        raise UsageError(f"revision {rev!r} is not a branch, tag or commit sha")
    return rev


def parse_name(name: str, revision: str | None = None) -> Target:
    """Resolve NAME (zoo alias, ``hf-hub:org/name[@rev]`` or ``org/name[@rev]``) to a Target.

    Raises:
        NotFoundError: unknown alias, or an alias with no published weights yet.
        UsageError: malformed id, or two different revisions.
    """
    from .plugins import registry

    text = str(name).strip()
    if not text.startswith(HUB_PREFIX) and "/" not in text:
        reg = registry("zoo")
        if text not in reg:
            raise NotFoundError(f"unknown zoo alias {text!r}{did_you_mean(text, reg.list())}; see "
                                f"`robustzoo list zoo`, or name a Hub model as hf-hub:org/name")
        entry: ZooEntry = reg.get(text)
        if not entry.published:
            raise NotFoundError(f"zoo entry {text!r} has no published weights yet; train it with "
                                f"`{entry.train_command}` (or train, evaluate and publish it with "
                                f"`robustzoo zoo publish {text} --org ORG`)")
        problems = validate_entry(entry)
        if problems:
            raise RunError(f"{problems[0]}; fix the entry in its plugin's zoo index "
                           f"(registered by {reg.owner(text)!r})")
        if revision and revision != entry.revision:
            raise UsageError(f"zoo alias {text!r} is pinned to commit {_short(entry.revision)}; to pull "
                             f"another revision name the repo: hf-hub:{entry.repo_id}@{revision}")
        return Target(text, entry.repo_id, entry.revision, entry)
    body = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    repo_id, _, rev = body.partition("@")
    if rev and revision and rev != revision:
        raise UsageError(f"{text!r} names revision {rev!r} but --revision says {revision!r}; give one")
    why = repo_id_problem(repo_id)
    if why:
        raise NotFoundError(f"{text} is not a run directory, a zoo alias or a Hub model id "
                            f"(hf-hub:org/name[@revision]): {why}; see `robustzoo list zoo`")
    return Target(text, repo_id, _check_revision(rev or revision or "main"))


# -- error translation ---------------------------------------------------------------------

@contextmanager
def _translate(target: str, endpoint: str, cache_dir: str | None, what: str) -> Iterator[None]:
    """Turn huggingface_hub errors into one-line robustzoo errors.

    Only huggingface_hub's own error types are caught by name; an unreachable server shows up
    as its ``errors.HTTPError`` (the transport error base class of the HTTP stack it uses) or
    as an ``OSError`` (connection refused, timeouts).
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError):
        why = "offline mode is on (HF_HUB_OFFLINE)" if offline_mode() else f"{endpoint} cannot be reached"
        if cache_dir is None:  # a push: no cache can stand in for the Hub, and `pull` would not help
            raise HubError(f"{what} needs {endpoint}, and {why}; "
                           f"{'unset HF_HUB_OFFLINE, ' if offline_mode() else ''}connect and run the same "
                           f"`robustzoo push` again") from None
        raise HubError(f"{what} is not in the cache ({cache_dir}) and {why}; connect and run "
                       f"`robustzoo pull {target}` once, then it works offline") from None
    except GatedRepoError:
        raise HubError(f"{target} is gated at {endpoint}: accept its terms on the Hub and pass --token") from None
    except RevisionNotFoundError:
        raise NotFoundError(f"{what}: no such revision at {endpoint}; check the branch, tag or commit sha "
                            f"(`robustzoo pull {target.split('@')[0]}` takes the latest)") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"no Hub repo {target} at {endpoint} (or it is private: pass --token); check "
                            f"the name, or publish a run with `robustzoo push RUN_DIR --repo-id ORG/NAME`"
                            ) from None
    except EntryNotFoundError:
        raise NotFoundError(f"{what} does not exist at {endpoint}; the repo was not published by "
                            f"`robustzoo push`") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        hint = " (pass a valid --token, or log in with `hf auth login`)" if status in (401, 403) else ""
        msg = first_sentence(getattr(exc, "server_message", None) or exc, 200)
        raise HubError(f"{endpoint} answered HTTP {status} to {what}{hint}: {msg}") from None
    except OSError as exc:
        if isinstance(exc, HTTPError) or exc.errno not in _LOCAL_ERRNOS:
            raise _unreachable(exc, endpoint, what) from None
        # The cache on this machine, not the network: a full disk, a read-only or non-folder HF_HOME.
        raise os_error(exc, exc.filename, "write", fix=(
            f"free some space or fix the permissions there, or point HF_HOME (or --cache-dir) at a "
            f"writable folder; the Hub cache is {cache_dir or 'the default one'}")) from None
    except HTTPError as exc:
        raise _unreachable(exc, endpoint, what) from None


#: OS errors of the local Hub cache (disk, permissions, paths), as opposed to the network's.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                 errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def _unreachable(exc: BaseException, endpoint: str, what: str) -> HubError:
    first = first_sentence(exc)
    return HubError(f"cannot reach {endpoint} for {what} ({type(exc).__name__}: {first}); check the "
                    f"network or --endpoint")


# -- pull ----------------------------------------------------------------------------------

@dataclass
class PullResult:
    """What ``robustzoo pull`` did.

    Attributes:
        path: local folder (cache snapshot) with config.json and model.safetensors.
        files: filename -> sha256 of every file pulled.
        checked: filename -> the checks its sha256 passed, joined by ' + ': 'pinned sha256'
            (zoo index), 'expected sha256' (``--expect-sha256``), 'server hash' (the LFS
            sha256 or git blob id the server lists for the commit) and 'card sha256' (the
            sha256 list of the robustzoo model card of the same commit).
        offline: True when the revision came from the cache because the Hub was unreachable.
        vouched_by: what the files were checked against besides the server: 'zoo pin',
            'expected sha256', 'robustzoo card' (joined by ' + '), or '' when nothing vouches
            for them (a timm push, a repo without a robustzoo card): then ``note`` says so.
    """

    name: str
    repo_id: str
    revision: str
    path: Path
    endpoint: str
    files: dict[str, str] = field(default_factory=dict)
    checked: dict[str, str] = field(default_factory=dict)
    offline: bool = False
    vouched_by: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _cached(repo_id: str, filename: str, cache: str, sha: str) -> Path | None:
    """The cached copy of ``filename`` at commit ``sha``, or None."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=sha)
    return Path(hit) if isinstance(hit, str) else None


def _scan(cache: str) -> Any:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    try:
        return scan_cache_dir(cache)
    except (CacheNotFound, CorruptedCacheException, OSError):
        return None


def _cached_commit(cache: str, repo_id: str, revision: str) -> str | None:
    """The commit a branch or tag named when it was last downloaded into the cache."""
    info = _scan(cache)
    return next((rev.commit_hash for repo in (info.repos if info else ()) for rev in repo.revisions
                 if repo.repo_type == "model" and repo.repo_id == repo_id and revision in rev.refs), None)


def _refuse(cache: str, sha: str, message: str) -> IntegrityError:
    """Remove every cached file of commit ``sha`` (so that a bad download is never served from
    the cache again) and return the error to raise."""
    info = _scan(cache)
    if info is not None:
        try:
            info.delete_revisions(sha).execute()
        except OSError:
            pass  # best effort: the error below says not to use the files
    return IntegrityError(message + "; refused and removed from the cache (the file was altered after "
                                    "publishing, or in transit: do not use it, report it)")


def _verify(path: Path, filename: str, target: Target, sha: str, cache: str, expected: Mapping[str, str],
            listing: Mapping[str, Any] | None) -> tuple[str, list[str]]:
    """sha256 of a download, checked against the zoo pin, ``--expect-sha256`` and the hash the
    server lists for the commit (the LFS sha256, else the git blob id); the commit is evicted
    from the cache on any mismatch. Returns (sha256, the checks passed)."""
    digest = sha256_file(path)
    where = f"{target.repo_id}@{_short(sha)}"
    pins = (("pinned sha256", target.entry.files if target.entry else {}, f"the zoo index pins {{}} for "
             f"{target.name!r}"), ("expected sha256", expected, "--expect-sha256 says {}"))
    checks = []
    for check, pinned, says in pins:
        if filename in pinned:
            if digest != pinned[filename]:
                raise _refuse(cache, sha, f"{filename} of {where} has sha256 {digest}, but "
                              + says.format(pinned[filename]))
            checks.append(check)
    sibling = (listing or {}).get(filename)
    lfs = getattr(getattr(sibling, "lfs", None), "sha256", None)
    blob = getattr(sibling, "blob_id", None)
    if isinstance(lfs, str) and SHA256_RE.match(lfs):
        ok, what = digest == lfs, f"the sha256 {lfs} the server announced"
    elif isinstance(blob, str) and _SHA1_RE.match(blob):
        ok, what = _git_blob_sha1(path) == blob, f"the git blob sha1 {blob} the server announced"
    else:
        return digest, checks  # offline, or served from the cache: the server lists nothing now
    if not ok:
        raise _refuse(cache, sha, f"{filename} of {where} does not match {what}")
    return digest, [*checks, "server hash"]


def card_sha256(card: Path, source: str) -> dict[str, str] | None:
    """The ``robustzoo.sha256`` list (filename -> sha256) of a model card; None when it has none.

    Only the YAML front matter is parsed (``yaml.safe_load``, through huggingface_hub); a
    card larger than :data:`MAX_CARD_BYTES` or with a malformed list is an IntegrityError.
    """
    from huggingface_hub import metadata_load

    if card.stat().st_size > MAX_CARD_BYTES:
        raise IntegrityError(f"{source} is larger than {MAX_CARD_BYTES} bytes; it was not written by robustzoo")
    try:
        meta = metadata_load(card) or {}
    except Exception as exc:  # noqa: BLE001 - yaml raises several types for bad front matter
        raise IntegrityError(f"{source} has unreadable front matter ({type(exc).__name__})") from None
    block = meta.get("robustzoo") if isinstance(meta, dict) else None
    listed = block.get("sha256") if isinstance(block, dict) else None
    if listed is None:
        return None
    if not isinstance(listed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and SHA256_RE.match(v) for k, v in listed.items()):
        raise IntegrityError(f"{source} has a malformed sha256 list (filename -> 64 hex digits)")
    return dict(listed)


def parse_expected(values: Mapping[str, str] | None) -> dict[str, str]:
    """Check ``--expect-sha256`` pairs: publishable file names, 64 lower-case hex digits each."""
    out: dict[str, str] = {}
    for filename, digest in (values or {}).items():
        if filename not in PUBLISHABLE_FILES:
            raise UsageError(f"--expect-sha256 names {filename!r}, not one of {', '.join(PUBLISHABLE_FILES)}"
                             f"{did_you_mean(filename, PUBLISHABLE_FILES)}")
        digest = str(digest).strip().lower()
        if not SHA256_RE.match(digest):
            raise UsageError(f"--expect-sha256 {filename}={digest!r} is not 64 hex digits")
        out[filename] = digest
    return out


def pull_model(name: str, *, revision: str | None = None, endpoint: str | None = None,
               cache_dir: str | Path | None = None, token: str | None = None,
               verify: bool = False, expect_sha256: Mapping[str, str] | None = None) -> PullResult:
    """Download a zoo alias or Hub model into the Hugging Face cache and check it.

    Every file is checked against the hash the server lists for the commit and, when the repo
    has a robustzoo model card (README.md with a sha256 list, as ``robustzoo push`` writes),
    against that list: a blob swapped under a published commit is refused even when the server
    announces its new hash. Zoo aliases are also checked against their pins, and
    ``expect_sha256`` pins files from a script. A repo that nothing vouches for (a timm
    ``push_to_hf_hub`` of a fine-tune, say) is pulled with one :class:`~robustzoo.errors.
    UnvouchedModelWarning` saying so.

    Args:
        name: zoo alias (``cat-cw-wrn34``), ``hf-hub:org/name[@rev]`` or ``org/name[@rev]``.
        revision: branch, tag or commit sha (zoo aliases are pinned already).
        endpoint: Hub URL (default ``HF_ENDPOINT`` / huggingface.co).
        cache_dir: Hugging Face cache (default ``HF_HUB_CACHE``).
        token: access token (private repos); only sent to other endpoints when given.
        verify: also load the weights strictly into the architecture.
        expect_sha256: filename -> sha256 the files must have (scripts pin downloads this way).

    Raises:
        NotFoundError, UsageError, HubError, IntegrityError, RunError: one-line errors.
    """
    expected = parse_expected(expect_sha256)
    try:
        result = _pull(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir, token=token,
                       verify=verify, expected=expected)
    except (NotFoundError, HubError) as exc:
        text = str(name)
        if (text.startswith(HUB_PREFIX) or "/" not in text or text.startswith(("/", ".", "~"))
                or "is not a run directory" in str(exc)):
            raise
        # 'org/name' may as well be a mistyped run directory: say both.
        raise type(exc)(f"{text} is not a run directory, and as a Hub model: {exc}") from None
    if result.note:
        warnings.warn(result.note, UnvouchedModelWarning, stacklevel=2)
    return result


def verified_weights(hf_hub_id: str, cache_dir: str | Path | None = None) -> str:
    """Pull ``org/name[@rev]`` with every check of :func:`pull_model` and return the local path
    of its model.safetensors: what ``timm.create_model("hf-hub:...")`` loads once robustzoo is
    imported (see :func:`robustzoo.models.timm_bridge.set_weights_verifier`)."""
    res = pull_model(f"{HUB_PREFIX}{hf_hub_id}", cache_dir=cache_dir)
    return str(res.path / runs.MODEL_FILE)


def _wanted(target: Target) -> list[tuple[str, bool]]:
    """(filename, required) to download, fixed names only: config.json first (a foreign
    architecture is refused before any weights are fetched), then the card."""
    if target.entry is not None:
        wanted = [(f, True) for f in target.entry.files]
    else:
        wanted = [(f, True) for f in REQUIRED] + [(f, False) for f in OPTIONAL]
    return sorted(wanted, key=lambda fr: {runs.CONFIG_FILE: 0, CARD_FILE: 1}.get(fr[0], 2))


def _complete_in_cache(target: Target, cache: str, sha: str) -> bool:
    """A pinned commit whose required files, card and every file the card lists are cached is
    served without a request."""
    names = [f for f, required in _wanted(target) if required]
    card = _cached(target.repo_id, CARD_FILE, cache, sha)
    if card is not None:
        names += list(card_sha256(card, f"README.md of {target.repo_id}@{_short(sha)}") or {})
    return card is not None and all(_cached(target.repo_id, f, cache, sha) is not None for f in names)


def _resolve(api: Any, target: Target, cache: str) -> tuple[str, dict[str, Any] | None, bool]:
    """(commit sha, the server's file listing of that commit or None, served from the cache
    because the server was unreachable). A branch or tag moves: it is resolved to a commit
    first, and everything is downloaded by that commit."""
    rev, where = target.revision, f"{target.repo_id}@{target.revision}"
    pinned = COMMIT_RE.match(rev) is not None
    if pinned and _complete_in_cache(target, cache, rev):
        return rev, None, False
    if offline_mode():
        cached = rev if pinned else _cached_commit(cache, target.repo_id, rev)
        if cached is None:
            raise HubError(f"{where} is not in the cache ({cache}) and offline mode is on "
                           f"(HF_HUB_OFFLINE); connect and run `robustzoo pull {target.name}` once")
        return cached, None, not pinned
    try:
        with _translate(target.name, api.endpoint, cache, where):
            info = api.model_info(target.repo_id, revision=rev, files_metadata=True)
    except HubError:
        cached = rev if pinned else _cached_commit(cache, target.repo_id, rev)
        if cached is None:
            raise
        return cached, None, True  # unreachable: fall back to the cached commit
    if not isinstance(info.sha, str) or not COMMIT_RE.match(info.sha):
        raise HubError(f"{api.endpoint} resolved {where} to {info.sha!r}, not a commit sha")
    return info.sha, {s.rfilename: s for s in info.siblings or []}, False


def _pull(name: str, *, revision: str | None, endpoint: str | None, cache_dir: str | Path | None,
          token: str | None, verify: bool, expected: Mapping[str, str]) -> PullResult:
    from huggingface_hub import HfApi, hf_hub_download

    from ._version import __version__

    target = parse_name(name, revision)
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    cache = str(Path(cache_dir or default_cache_dir()).expanduser().resolve())
    tok = _token_for(endpoint, token)
    with client_settings(endpoint):
        api = HfApi(endpoint=endpoint, token=tok, library_name="robustzoo", library_version=__version__)
        sha, listing, from_cache = _resolve(api, target, cache)
        where = f"{target.repo_id}@{_short(sha)}"
        wanted = _wanted(target)
        if listing is not None:
            missing = [f for f, required in wanted if required and f not in listing]
            if missing:
                raise NotFoundError(f"{where} has no {missing[0]}; it is not a model robustzoo can load (publish "
                                    f"one with `robustzoo push`, or timm's push_to_hf_hub with safetensors)")
            wanted = [(f, r) for f, r in wanted if f in listing]
        result = PullResult(name=target.name, repo_id=target.repo_id, revision=sha, path=Path(),
                            endpoint=endpoint, offline=from_cache)
        local_only = listing is None
        paths: dict[str, Path] = {}
        checks: dict[str, list[str]] = {}
        for filename, required in wanted:
            if local_only and not required and _cached(target.repo_id, filename, cache, sha) is None:
                continue  # absent, or cannot be fetched now: optional anyway
            # A branch's first file is asked for by the branch name, so that huggingface_hub
            # records branch -> commit in the cache (what an offline pull of the branch reads).
            by = target.revision if filename == runs.CONFIG_FILE and not local_only else sha
            what = f"{filename} of {where}"
            try:
                with _translate(target.name, endpoint, cache, what):
                    local = Path(hf_hub_download(target.repo_id, filename, revision=by, endpoint=endpoint,
                                                 cache_dir=cache, token=tok, local_files_only=local_only,
                                                 library_name="robustzoo", library_version=__version__))
            except (NotFoundError, HubError):
                if required:
                    raise
                continue
            if by != sha and _cached(target.repo_id, filename, cache, sha) != local:
                raise HubError(f"{target.repo_id}@{target.revision} moved to another commit while it was pulled; "
                               f"pull it again")
            result.files[filename], checks[filename] = _verify(local, filename, target, sha, cache, expected,
                                                               listing)
            paths[filename] = local
            if filename == runs.CONFIG_FILE:
                _read_config_file(local, f"config.json of {where}")
        vouched = _check_against_card(paths, result, checks, target, sha, cache, listing, expected)
        for filename in expected:
            if filename not in result.files:
                raise NotFoundError(f"--expect-sha256 names {filename}, which {where} does not have")
        result.checked = {f: " + ".join(c) or "unchecked" for f, c in checks.items()}
        result.vouched_by = " + ".join(vouched)
        if not vouched:
            result.note = (f"no robustzoo record vouches for {where}: it has no robustzoo model card (a sha256 "
                           f"list), so its files were checked against the server's hashes only; pin them with "
                           f"--expect-sha256 FILE=SHA256 if you know them")
        result.path = paths[runs.CONFIG_FILE].parent
    if verify:
        runs.load_run(result.path)
    return result


def _check_against_card(paths: Mapping[str, Path], result: PullResult, checks: dict[str, list[str]],
                        target: Target, sha: str, cache: str, listing: Mapping[str, Any] | None,
                        expected: Mapping[str, str]) -> list[str]:
    """Every pulled file but the card must have the sha256 the card of the same commit lists.

    Returns what vouched for the files: 'zoo pin', 'expected sha256', 'robustzoo card'.
    """
    where = f"{target.repo_id}@{_short(sha)}"
    vouched = (["zoo pin"] if target.entry is not None else []) + (["expected sha256"] if expected else [])
    card = paths.get(CARD_FILE)
    listed = card_sha256(card, f"README.md of {where}") if card is not None else None
    if listed is None:
        return vouched
    for filename in paths:
        if filename == CARD_FILE:
            continue
        want = listed.get(filename)
        if want is None:
            raise _refuse(cache, sha, f"{filename} of {where} is not in the sha256 list of the model card of "
                          f"the same commit")
        if result.files[filename] != want:
            raise _refuse(cache, sha, f"{filename} of {where} has sha256 {result.files[filename]}, but the "
                          f"model card (README.md) of the same commit lists {want}")
        checks[filename].append("card sha256")
    if listing is not None:
        for filename in listed:
            if filename in PUBLISHABLE_FILES and filename not in listing:
                raise IntegrityError(f"the model card of {where} lists {filename}, which the commit does "
                                     f"not have; the repo was changed after publishing: do not use it")
    return vouched + ["robustzoo card"]


def pull(name: str, *, revision: str | None = None, endpoint: str | None = None,
         cache_dir: str | Path | None = None, token: str | None = None, verify: bool = False,
         expect_sha256: Mapping[str, str] | None = None) -> Path:
    """Pull ``name`` and return the local folder with config.json and model.safetensors.

    See :func:`pull_model` for the arguments and checks.
    """
    return pull_model(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir, token=token,
                      verify=verify, expect_sha256=expect_sha256).path


# -- push ----------------------------------------------------------------------------------

@dataclass
class PushResult:
    """What ``robustzoo push`` published.

    Attributes:
        revision: the commit sha (pin it in the zoo index).
        files: filename -> {"sha256", "size"} of every file in the commit.
        zoo_entry: a ready-to-edit zoo index entry for this commit.
    """

    repo_id: str
    revision: str
    commit_url: str
    endpoint: str
    files: dict[str, dict[str, Any]]
    zoo_entry: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_eval(run_dir: Path) -> dict[str, Any]:
    """A run's evaluation record, refused unless it has clean and robust accuracy."""
    hint = f"`robustzoo eval {run_dir} --suite paper`"
    report = runs.eval_record(run_dir)
    if report is None:
        from .eval import why_no_record  # deferred: the evaluation package imports torch

        why = why_no_record(run_dir)
        raise RunError(f"{run_dir} has no {runs.EVAL_FILE}; " + (
            f"{why}: see docs/evaluation.md, then evaluate again: {hint}" if why else
            f"evaluate it before publishing: {hint}"))
    results = report.get("results")
    attacks = {r.get("attack") for r in results or [] if isinstance(r, dict)}
    if "clean" not in attacks or not attacks - {"clean"} or "eps" not in report:
        raise RunError(f"{run_dir / runs.EVAL_FILE} lacks clean and robust accuracy; run {hint}")
    return report


def evaluation_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The ``evaluation`` block of a zoo entry: suite, seed, health verdict and the counts
    (attack -> [correct, n]) behind each result."""
    health = report.get("health")
    return {
        "suite": str(report.get("suite") or ""),
        "seed": int(report.get("seed", 0)),
        "health": str(health.get("status", "")) if isinstance(health, Mapping) else "",
        "counts": {r["attack"]: [int(r["correct"]), int(r["n"])] for r in report["results"]},
    }


def zoo_entry_for(cfg: Mapping[str, Any], report: Mapping[str, Any], *, repo_id: str, revision: str,
                  files: Mapping[str, str], alias: str | None, license: str) -> dict[str, Any]:
    """The zoo index entry of a published run (numbers copied from eval.json).

    ``recipe`` is the run's recipe, or for a run trained without one the full ``robustzoo
    train`` command that reproduces it, so the entry always passes :func:`validate_entry`.
    """
    from .cards import _paper, retrain_command

    rz = cfg["robustzoo"]
    name = alias or repo_id.split("/")[-1].lower()
    train_cfg = rz.get("config", {})
    results = {r["attack"]: float(r["accuracy"]) for r in report["results"]}
    return ZooEntry(
        name=name, status="published", repo_id=repo_id, revision=revision, files=dict(files),
        architecture=cfg["architecture"], dataset=rz["dataset"],
        threat_model={"norm": rz.get("threat_model", {}).get("norm", "linf"), "eps": float(report["eps"])},
        method=rz["objective"], settings=dict(rz.get("objective_settings", {})),
        results=results, recipe=train_cfg.get("recipe") or retrain_command(train_cfg),
        card=f"model_cards/{name}.md", paper=_paper(rz["objective"]), license=license,
        evaluation=evaluation_summary(report),
    ).to_dict()


def _config_bytes(path: Path, license: str) -> bytes:
    """config.json as published: the run's bytes, with pretrained_cfg.license set to the
    licence the weights are published under when the run recorded another one."""
    data = path.read_bytes()
    cfg = json.loads(data)
    pcfg = cfg.get("pretrained_cfg")
    if isinstance(pcfg, dict) and pcfg.get("license", license) != license:
        pcfg["license"] = license
        return (json.dumps(cfg, indent=2) + "\n").encode("utf-8")
    return data


def check_publishable(report: dict[str, Any], run_dir: Path, allow_partial: bool,
                      allow_custom: bool = False) -> dict[str, Any]:
    """The report to publish: refused unless it is a real, standard protocol, or marked partial / custom.

    See :func:`robustzoo.eval.publishable` (clean and PGD-20/100, APGD or AutoAttack on the
    whole test set or at least 1,000 examples, health not failed, standard attack settings).
    A custom protocol (``allow_custom``) is published with ``custom`` set, which the card and
    the RobustBench record state.
    """
    from .eval import custom_rows, publishable  # deferred: the evaluation package imports torch

    custom = custom_rows(report)
    ok, reason = publishable(report, run_dir, allow_custom=allow_custom)
    failed = (report.get("health") or {}).get("status") == "failed"
    if not ok and (failed or (custom and not allow_custom)):
        raise RunError(reason)  # a failed health report (no-op attack, degenerate model) is never published
    if custom:
        report = dict(report, custom=custom)
    if ok:
        return report
    if not allow_partial:
        raise RunError(f"{reason}; or publish it marked partial with `robustzoo push {run_dir} --allow-partial`")
    return dict(report, partial=True)


def push(run_dir: str | Path, repo_id: str, *, endpoint: str | None = None, token: str | None = None,
         private: bool = False, alias: str | None = None, license: str = "apache-2.0",
         commit_message: str | None = None, allow_partial: bool = False,
         allow_custom: bool = False) -> PushResult:
    """Publish a run in one commit: weights, aux state, config.json, robustbench.json (when the
    run was evaluated with standard AutoAttack) and a model card rendered from config.json and
    eval.json that lists the sha256 of every other file.

    Args:
        run_dir: a trained and evaluated run directory.
        repo_id: ``org/name`` (created if missing).
        endpoint: Hub URL (default ``HF_ENDPOINT`` / huggingface.co).
        token: write token (default: huggingface_hub's stored token, sent to huggingface.co only).
        private: create the repo private.
        alias: zoo alias recorded in the card and the suggested zoo entry.
        license: licence of the weights (card metadata and config.json).
        allow_partial: publish a canonical record that is not a real protocol anyway; the
            card and its metadata mark it partial.
        allow_custom: publish a canonical record whose attacks used custom settings; the card
            and the RobustBench record say which.

    Raises:
        RunError: no eval.json, a partial protocol (without ``allow_partial``), or weights that
            do not load into the architecture.
        UsageError, HubError: bad repo id, upload failures.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from ._version import __version__
    from .cards import render_run_card
    from .robustbench import has_autoattack, robustbench_record
    from .zoo import ALIAS_RE

    run_dir = Path(run_dir)
    why = repo_id_problem(repo_id or "")
    if why:
        raise UsageError(f"--repo-id {why}; e.g. my-org/cat-cw-wrn34")
    if alias is not None and not ALIAS_RE.match(alias):
        raise UsageError(f"--alias {alias!r} must be lower-case words joined by '-', e.g. cat-cw-wrn34")
    cfg = runs.read_config(run_dir)
    check_architecture(cfg, str(run_dir / runs.CONFIG_FILE))
    report = read_eval(run_dir)
    if report.get("dataset", cfg["robustzoo"]["dataset"]) != cfg["robustzoo"]["dataset"]:
        raise RunError(f"{run_dir}/eval.json is for dataset {report.get('dataset')!r}, not the run's "
                       f"{cfg['robustzoo']['dataset']!r}; re-run `robustzoo eval {run_dir} --suite paper`")
    report = check_publishable(report, run_dir, allow_partial, allow_custom)
    runs.load_run(run_dir)  # publish only weights that load strictly into the architecture
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    blobs: dict[str, bytes | Path] = {runs.CONFIG_FILE: _config_bytes(run_dir / runs.CONFIG_FILE, license)}
    blobs.update({f: run_dir / f for f in (runs.MODEL_FILE, runs.AUX_FILE) if (run_dir / f).is_file()})
    if has_autoattack(report):  # RobustBench ranks by it: without it, no record (its records have no nulls)
        blobs[ROBUSTBENCH_FILE] = (json.dumps(robustbench_record(cfg, report), indent=2) + "\n").encode("utf-8")
    files = {f: ({"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} if isinstance(b, bytes)
                 else {"sha256": sha256_file(b), "size": b.stat().st_size}) for f, b in blobs.items()}
    card = render_run_card(cfg, report, repo_id=repo_id, files={f: v["sha256"] for f, v in files.items()},
                           alias=alias, license=license, endpoint=endpoint,
                           metrics=runs.read_metrics(run_dir))
    blobs[CARD_FILE] = card.encode("utf-8")
    files[CARD_FILE] = {"sha256": hashlib.sha256(blobs[CARD_FILE]).hexdigest(), "size": len(blobs[CARD_FILE])}

    rz = cfg["robustzoo"]
    title = commit_message or f"robustzoo push: {rz['objective']} {cfg['architecture']} on {rz['dataset']}"
    with client_settings(endpoint):
        api = HfApi(endpoint=endpoint, token=_token_for(endpoint, token), library_name="robustzoo",
                    library_version=__version__)
        with _translate(repo_id, endpoint, None, f"pushing to {repo_id}"):
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.model_info(repo_id)
            present = {s.rfilename for s in (info.siblings or [])}
            ops: list[Any] = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=b if isinstance(b, bytes)
                                                 else str(b)) for f, b in blobs.items()]
            # A file of an earlier push that this run lacks (e.g. aux.safetensors) would be stale.
            ops += [CommitOperationDelete(path_in_repo=f) for f in PUBLISHABLE_FILES
                    if f in present and f not in files]
            commit = api.create_commit(
                repo_id, ops, commit_message=title,
                commit_description=f"Published with robustzoo {__version__} from {run_dir.name}.",
                parent_commit=info.sha if isinstance(info.sha, str) and COMMIT_RE.match(info.sha) else None)
    sha = commit.oid
    if not isinstance(sha, str) or not COMMIT_RE.match(sha):
        raise HubError(f"{endpoint} answered the commit with {sha!r}, not a commit sha")
    entry = zoo_entry_for(cfg, report, repo_id=repo_id, revision=sha,
                          files={f: v["sha256"] for f, v in files.items()}, alias=alias, license=license)
    return PushResult(repo_id=repo_id, revision=sha, commit_url=str(commit.commit_url), endpoint=endpoint,
                      files=files, zoo_entry=entry)
