"""Run directories: atomic writes, safetensors checkpoints, strict loading.

Layout::

    RUN_DIR/
      config.json          timm-compatible (architecture, num_classes, pretrained_cfg,
                           model_args) plus a ``robustzoo`` block with every setting
      model.safetensors    best checkpoint by validation clean + PGD accuracy
      last.safetensors     checkpoint of the last finished epoch
      aux.safetensors      the objective's extra modules and per-example state (if any)
      metrics.jsonl        one JSON object per epoch
      eval.json            evaluation results
      state/resume.pt      optimiser states etc. for --resume (local only, tensors only)
      .robustzoo.lock      the writer's lock (robustzoo.files.run_lock)
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import NotFoundError, RunError, close_matches, first_sentence
from .files import atomic_path, os_error, write_json, write_text  # noqa: F401 - handed on (runs.write_json)
from .models import build_model

FORMAT_VERSION = "1"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
AUX_FILE = "aux.safetensors"
CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.jsonl"
RESUME_FILE = "state/resume.pt"


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Rewrite a JSON-lines file with one more row (atomic: never a half line on disk)."""
    path = Path(path)
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    write_text(path, old + json.dumps(row) + "\n")


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Save tensors as safetensors with ``robustzoo.*`` string metadata, atomically.

    The same tensors and metadata always give the same bytes (so the same sha256): the
    header's metadata is written in sorted key order (:func:`_canonical_header`).
    """
    meta = {f"robustzoo.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta["format"] = "pt"
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(clean, str(tmp), metadata=meta)
        except Exception as exc:  # noqa: BLE001 - safetensors wraps the OS error in its own type
            raise _os_error_of(exc) from None
        _canonical_header(tmp)


def _os_error_of(exc: Exception) -> BaseException:
    """safetensors reports a failed write as ``SafetensorError: ... Os { code: 28, ... }`` (the
    Debug form) or ``... I/O error: No space left on device (os error 28)`` (0.8's Display
    form): the OSError it was (atomic_path names the file and the cause), or ``exc`` itself."""
    m = re.search(r"Os \{ code: (\d+)|\(os error (\d+)\)", str(exc))
    if not m:
        return exc
    code = int(m.group(1) or m.group(2))
    return OSError(code, os.strerror(code))


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted, in place.

    safetensors (0.8) keeps the metadata in a hash map whose order changes from process to
    process, so two identical runs wrote weights that differ in bytes. The header is JSON
    after an 8-byte little-endian length; the tensors' offsets count from the end of the
    header, so a header of the same length (the same keys and values, reordered) leaves the
    data untouched; it is padded with spaces, as safetensors pads it.
    """
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > n:  # never: the same characters in another order
            raise RunError(f"{path}: the reordered safetensors header is longer than the original")
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def link_file(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` hold the bytes of ``src`` without writing them again, atomically.

    A hard link (a copy where the filesystem has none). Safe because files here are only
    ever replaced by a rename, never rewritten in place: the next write of ``src`` gives it
    a new file and leaves ``dst`` as it was.
    """
    with atomic_path(dst) as tmp:
        tmp.unlink(missing_ok=True)  # atomic_path may hand over an existing empty file
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network and FAT filesystems)
            shutil.copyfile(src, tmp)


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` resumable state (tensors, numbers and strings only: it is
    read back with ``weights_only=True``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # A file object, not a path: a full disk is then an OSError (ENOSPC) that atomic_path
        # reports, not torch's "enforce fail at inline_container.cc" ...
        try:
            torch.save(state, f)
        except RuntimeError as exc:
            # ... except when the disk fills part-way through a write: torch's writer sees a
            # short write and fails its position check. Say what it was when the disk is full.
            if "inline_container" not in str(exc) and "unexpected pos" not in str(exc):
                raise
            full = shutil.disk_usage(Path(tmp).parent).free < 1 << 20  # under 1 MiB left
            raise (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if full else
                   OSError(errno.EIO, f"torch could not write the file ({first_sentence(exc, 80)})")) from None


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a corrupt or truncated file is a :class:`RunError`."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise RunError(f"{path} is not a readable safetensors file ({type(exc).__name__}: "
                       f"{first_sentence(exc)}); re-download it or retrain the run") from None
    return tensors, meta


def load_state_strict(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``module``: same keys, shapes and dtypes, or a one-line RunError."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise RunError(f"{source} does not match the architecture: {what} "
                       f"({len(missing)} missing, {len(extra)} unexpected keys)")
    for k, ref in expected.items():
        t = tensors[k]
        if t.shape != ref.shape:
            raise RunError(f"{source} does not match the architecture: {k} has shape "
                           f"{tuple(t.shape)}, expected {tuple(ref.shape)}")
        if t.dtype != ref.dtype:
            raise RunError(f"{source}: {k} has dtype {t.dtype}, expected {ref.dtype}")
    module.load_state_dict(tensors, strict=True)


# -- reading run files -------------------------------------------------------------------------
# One reader for every file of a run directory: a file that is missing, not valid JSON or
# holds a field of the wrong type is one RunError naming the file, the field, what was
# expected and what to do, never a KeyError or a TypeError from deep inside a command.

_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "is missing"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"is {text if len(text) <= 60 else text[:57] + '...'}"


def field_error(path: str | Path, field: str, value: Any, expected: str, fix: str) -> RunError:
    """``PATH: FIELD is VALUE; expected EXPECTED; FIX`` as a RunError."""
    return RunError(f"{path}: {field} {_show(value)}; expected {expected}; {fix}")


def is_int(v: Any, lo: int | None = None) -> bool:
    """An int (not a bool), at least ``lo``."""
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo)


def is_number(v: Any, lo: float | None = None, hi: float | None = None) -> bool:
    """A finite int or float (not a bool) within [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def _read_text(path: Path, fix: str) -> str:
    """A run file's text, or a RunError naming it (not UTF-8) / the OS error, with ``fix``."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunError(f"{path} is not UTF-8 text (a damaged or binary file); {fix}") from None
    except OSError as exc:
        raise os_error(exc, path, "read") from None


def read_json(path: str | Path, fix: str) -> Any:
    """A JSON file, or a RunError naming it (not UTF-8, not JSON: line and column)."""
    path = Path(path)
    text = _read_text(path, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {fix}") from None


def read_jsonl(path: str | Path, fix: str) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file: each non-blank line one JSON object, or a RunError naming
    the file and the line."""
    path = Path(path)
    text = _read_text(path, fix)
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path} line {i} is not valid JSON ({exc.msg}: {line.strip()[:40]!r}); {fix}") from None
        if not isinstance(row, dict):
            raise RunError(f"{path} line {i} is {_show(row)[3:]}, expected a JSON object; {fix}")
        rows.append(row)
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of RUN_DIR/metrics.jsonl ([] when there are none).

    Raises:
        RunError: a line that is not a JSON object, or an ``epoch`` that is not a number >= 1,
            naming the file and the line.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    fix = "metrics.jsonl holds one JSON object per finished epoch: delete the damaged line (it is rewritten " \
          "when that epoch is trained again with --resume)"
    rows = read_jsonl(path, fix)
    for i, row in enumerate(rows, 1):
        if "epoch" in row and not is_int(row["epoch"], 1):
            raise field_error(path, f"row {i} 'epoch'", row["epoch"], "an integer >= 1", fix)
    return rows


def check_eval_report(report: Any, path: str | Path, fix: str) -> dict[str, Any]:
    """An evaluation record as robustzoo writes it (eval.json, evals/*.json), or a RunError
    naming the file and the first field that is not (what cards, the leaderboard, the
    RobustBench record and push read)."""
    if not isinstance(report, dict):
        raise RunError(f"{path} {_show(report)[3:] if not isinstance(report, list) else 'is a list'}, expected an "
                       f"evaluation record (a JSON object); {fix}")
    if not is_number(report.get("eps", _MISSING), 0.0, 1.0):
        raise field_error(path, "eps", report.get("eps", _MISSING), "a number in [0, 1]", fix)
    for key in ("n", "seed"):
        if key in report and not is_int(report[key], 0):
            raise field_error(path, key, report[key], "an integer >= 0", fix)
    results = report.get("results", _MISSING)
    if not isinstance(results, list):
        raise field_error(path, "results", results, "a list of attack rows", fix)
    for i, r in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(r, dict):
            raise field_error(path, where, r, "an object with attack, accuracy, correct and n", fix)
        _check_row(r, path, where, fix, attack=True)
    wc = report.get("worst_case")
    if wc is not None:
        if not isinstance(wc, dict):
            raise field_error(path, "worst_case", wc, "an object with accuracy, correct and n", fix)
        _check_row(wc, path, "worst_case", fix, attack=False)
    for key in ("health", "examples"):
        if key in report and report[key] is not None and not isinstance(report[key], dict):
            raise field_error(path, key, report[key], "an object", fix)
    return report


def _check_row(r: dict[str, Any], path: str | Path, where: str, fix: str, attack: bool) -> None:
    if attack and not (isinstance(r.get("attack"), str) and r["attack"]):
        raise field_error(path, f"{where}.attack", r.get("attack", _MISSING), "an attack name", fix)
    name = f"{where} ({r['attack']})" if attack else where
    if not is_number(r.get("accuracy", _MISSING), 0.0, 1.0):
        raise field_error(path, f"{name}.accuracy", r.get("accuracy", _MISSING), "a number in [0, 1]", fix)
    if not is_int(r.get("n", _MISSING), 0):
        raise field_error(path, f"{name}.n", r.get("n", _MISSING), "an integer >= 0", fix)
    if not is_int(r.get("correct", _MISSING), 0) or r["correct"] > r["n"]:
        raise field_error(path, f"{name}.correct", r.get("correct", _MISSING), f"an integer in [0, n = {r['n']}]",
                          fix)
    ci = r.get("ci95")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(is_number(x, 0.0, 1.0) for x in ci)):
        raise field_error(path, f"{name}.ci95", ci, "two numbers in [0, 1]", fix)


def eval_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The evaluation record of a run (its eval.json), or None when it has none.

    Cards, the RobustBench record, the zoo entry of a push and the leaderboard read a run's
    results through this one function, so the choice of which evaluation speaks for a run
    lives in one place.

    Raises:
        RunError: eval.json exists but is not JSON, or a field is missing or of the wrong
            type (named, with the file).
    """
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    fix = f"re-run `robustzoo eval {run_dir}` (it rewrites eval.json from the run's history)"
    return check_eval_report(read_json(path, fix), path, fix)


def read_config(run_dir: str | Path, *, timm_export: bool = False) -> dict[str, Any]:
    """Read and check a run's config.json (the fields loading, evaluating and publishing read).

    With ``timm_export``, the config.json of a timm export of one of robustzoo's nets (timm's
    ``save_for_hf`` folder or ``push_to_hf_hub`` repo: ``architecture``, ``num_classes``,
    ``pretrained_cfg``, no ``robustzoo`` block) is taken too, completed by
    :func:`export_config`; only loading a model needs no more than that.

    Raises:
        NotFoundError: not a directory, or no config.json.
        RunError: not JSON, or a field missing or of the wrong type (named, with the file).
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise NotFoundError(missing_run_dir(run_dir))
    if not cfg_path.is_file():
        raise NotFoundError(f"{run_dir} is not a robustzoo run (no {CONFIG_FILE}); "
                            f"create one with `robustzoo train --out {run_dir}`")
    fix = "restore config.json as `robustzoo train` wrote it (or pull the model again)"
    cfg = read_json(cfg_path, fix)
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        raise RunError(f"{cfg_path} lacks 'architecture' or the 'robustzoo' block; it was not "
                       f"written by robustzoo")
    if "robustzoo" not in cfg:
        if timm_export:
            return export_config(cfg, str(cfg_path))
        raise RunError(f"{cfg_path} has no 'robustzoo' block: it is a timm export (save_for_hf or "
                       f"push_to_hf_hub), not a robustzoo run; `robustzoo eval` and robustzoo.load take it, "
                       f"this command needs a run written by `robustzoo train`")
    check_config_fields(cfg, cfg_path, fix)
    return cfg


def check_config_fields(cfg: dict[str, Any], path: str | Path, fix: str) -> None:
    """The typed fields of a run's config.json, or a RunError naming the first that is not."""
    def need(field: str, value: Any, ok: bool, expected: str) -> None:
        if not ok:
            raise field_error(path, field, value, expected, fix)

    need("architecture", cfg["architecture"], isinstance(cfg["architecture"], str) and bool(cfg["architecture"]),
         "an architecture name")
    need("num_classes", cfg.get("num_classes", _MISSING), is_int(cfg.get("num_classes"), 1), "an integer >= 1")
    margs = cfg.get("model_args", {})
    need("model_args", margs, isinstance(margs, dict), "an object (in_chans, input_size, mean, std)")
    if "in_chans" in margs:
        need("model_args.in_chans", margs["in_chans"], is_int(margs["in_chans"], 1), "an integer >= 1")
    if "input_size" in margs:
        size = margs["input_size"]
        need("model_args.input_size", size, isinstance(size, list) and len(size) == 2
             and all(is_int(v, 1) for v in size), "[height, width] in pixels")
    for key in ("mean", "std"):
        if key in margs:
            v = margs[key]
            need(f"model_args.{key}", v, isinstance(v, list) and bool(v) and all(
                is_number(x, 0.0 if key == "mean" else 1e-12) for x in v), "a list of numbers"
                 + (" > 0" if key == "std" else ""))
    rz = cfg["robustzoo"]
    need("robustzoo", rz, isinstance(rz, dict), "an object (dataset, objective, threat_model, config)")
    for key in ("dataset", "objective"):
        need(f"robustzoo.{key}", rz.get(key, _MISSING), isinstance(rz.get(key), str) and bool(rz.get(key)), "a name")
    tm = rz.get("threat_model", _MISSING)
    need("robustzoo.threat_model", tm, isinstance(tm, dict), "an object with eps")
    need("robustzoo.threat_model.eps", tm.get("eps", _MISSING), is_number(tm.get("eps"), 0.0, 1.0),
         "a number in [0, 1] (the pixel scale)")
    if "config" in rz:
        need("robustzoo.config", rz["config"], isinstance(rz["config"], dict), "an object of training settings")


RESUME_FIELDS = {"epoch": "an integer >= 0", "model": "a state dict", "optimizer": "an optimiser state dict",
                 "best_score": "a number", "best_epoch": "an integer"}


def read_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The resume state (tensors, numbers and strings only: ``weights_only=True``), checked.

    Raises:
        RunError: unreadable (truncated, damaged) or a field missing or of the wrong type,
            naming the file and how to go on.
    """
    path = Path(path)
    run = path.parent.parent if path.parent.name == "state" else path.parent
    fix = (f"the resume state is damaged; {run} keeps its last weights ({LAST_FILE}), but the run cannot "
           f"continue exactly: start a new run with `robustzoo train --out DIR`")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        first = first_sentence(exc)
        raise RunError(f"{path} is not a readable resume state ({type(exc).__name__}: {first}); {fix}") from None
    if not isinstance(blob, dict):
        raise RunError(f"{path} {_show(blob)[3:]}, expected a resume state (a dictionary); {fix}")
    for key, expected in RESUME_FIELDS.items():
        v = blob.get(key, _MISSING)
        ok = {"epoch": is_int(v, 0), "model": isinstance(v, dict), "optimizer": isinstance(v, dict),
              "best_score": is_number(v), "best_epoch": is_int(v)}[key]
        if not ok:
            raise field_error(path, key, v if not isinstance(v, dict) else "{...}", expected, fix)
    for key in ("extra", "extra_optim", "state"):
        if not isinstance(blob.get(key, {}), dict):
            raise field_error(path, key, blob[key], "a dictionary", fix)
    return blob


def missing_run_dir(path: str | Path, hint: str = "") -> str:
    """'no such run directory P (did you mean Q?)': close matches among the folders beside it.

    The candidates are the folders of the deepest part of ``path`` that exists (``runs/`` for
    a typo in ``runs/at-digitz-...``), with that prefix, as the user would type them.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        return f"{path} is a file, not a run directory{'; ' + hint if hint else ''}"
    if p.is_dir():  # a folder of another kind (`pull ../data`): no typo to suggest a fix for
        return f"{path} is a folder but not a run directory (no {CONFIG_FILE}){'; ' + hint if hint else ''}"
    parent = p.parent
    while str(parent) not in ("", ".") and not parent.is_dir():
        parent = parent.parent
    folders = [parent]
    if str(parent) in ("", ".") and Path("runs").is_dir():
        folders.append(Path("runs"))  # robustzoo's default folder: 'at-digits-...' meant runs/at-digits-...
    names = []
    for folder in folders:
        try:
            names += [str(folder / e.name) if str(folder) not in ("", ".") else e.name
                      for e in sorted(folder.iterdir()) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            pass
    near = close_matches(str(path).rstrip("/"), names)
    suggestion = f" (did you mean {' or '.join(near)}?)" if near else ""
    return f"no such run directory {path}{suggestion}" + (f"; {hint}" if hint else "")


def export_config(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """A timm export's config.json with the ``model_args`` robustzoo builds the net from.

    Recent timm versions record the factory arguments under ``model_args`` (robustzoo's
    in_chans, input_size, mean, std among them); where an export has none, the channels and
    size come from ``pretrained_cfg.input_size``. mean/std need no value here: the weights carry
    them (the Normalize buffers). The result has no ``robustzoo`` block.
    """
    pcfg = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    size = pcfg.get("input_size")
    margs = cfg.get("model_args") or {}
    if not isinstance(margs, dict) or not (isinstance(size, list) and len(size) == 3
                                           and all(isinstance(v, int) for v in size)):
        raise RunError(f"{source} is not a timm config of an image classifier (pretrained_cfg.input_size "
                       f"[channels, height, width] and a model_args object are needed)")
    margs = dict(margs)
    margs.setdefault("in_chans", size[0])
    margs.setdefault("input_size", size[1:])
    return dict(cfg, model_args=margs)


def model_config(arch: str, num_classes: int, shape: tuple[int, int, int], mean, std,
                 robustzoo: dict[str, Any]) -> dict[str, Any]:
    """The timm-compatible config.json of a run.

    ``pretrained_cfg`` is what timm reads to load and adapt the weights: input size, the
    ``classifier`` and ``first_conv`` layers (so that ``num_classes=`` or ``in_chans=`` give a
    new head or stem), ``label_names`` of the dataset, ``license`` and the training method's
    ``paper_ids`` (or ``origin_url``). Its mean/std are 0/1: the model normalises inside its
    first layer (the dataset mean/std are ``model_args``), so a timm data pipeline built from
    this config must not normalise again.
    """
    from .papers import method_paper, timm_paper_fields

    c, h, w = shape
    info = _architecture_info(arch, num_classes, shape, mean, std)
    pretrained_cfg: dict[str, Any] = {
        "input_size": [c, h, w], "mean": [0.0] * c, "std": [1.0] * c,
        "num_classes": num_classes, "interpolation": "bilinear", "crop_pct": 1.0,
        "first_conv": info.get("first_conv"), "classifier": info.get("classifier"),
        "pool_size": info.get("pool_size"), "label_names": _label_names(robustzoo.get("dataset"), num_classes),
        "license": "apache-2.0",
        "notes": [f"inputs in [0,1]; the model normalises them itself (its first layer subtracts "
                  f"mean {list(mean)} and divides by std {list(std)}), so pass un-normalised images",
                  "timm: `import robustzoo` before timm.create_model (it registers this architecture)"],
    }
    paper = method_paper(str(robustzoo.get("objective", "")))
    if paper.title:
        pretrained_cfg["paper_name"] = paper.title
    pretrained_cfg.update(timm_paper_fields(paper))
    return {
        "architecture": arch,
        "num_classes": num_classes,
        "num_features": info.get("num_features"),
        "model_args": {"in_chans": c, "input_size": [h, w], "mean": list(mean), "std": list(std)},
        "pretrained_cfg": {k: v for k, v in pretrained_cfg.items() if v is not None},
        "robustzoo": robustzoo,
    }


def _architecture_info(arch: str, num_classes: int, shape: tuple[int, int, int], mean, std
                       ) -> dict[str, Any]:
    """num_features, classifier and first_conv of ``arch``, from a model built on the meta
    device (no memory, no init cost); {} when the net does not say."""
    from .models import build_model

    c, h, w = shape
    try:
        with torch.device("meta"):
            net = build_model(arch, num_classes=num_classes, in_chans=c, input_size=(h, w), mean=mean,
                              std=std)
    except Exception:  # noqa: BLE001 - metadata only: a net that cannot build on meta has none
        return {}
    prefix, inner = "", net
    if not hasattr(net, "get_classifier") and hasattr(net, "model"):  # Normalized(timm model)
        prefix, inner = "model.", net.model
    cfg = getattr(inner, "pretrained_cfg", None) or {}
    if not cfg and hasattr(inner, "_head_name"):
        from .models.timm_bridge import default_cfgs

        cfg = default_cfgs.get(arch, {})
    info: dict[str, Any] = {"num_features": getattr(inner, "num_features", None)}
    for key in ("classifier", "first_conv"):
        if isinstance(cfg.get(key), str):
            info[key] = prefix + cfg[key]
    if inner is net and hasattr(net, "head_hidden_size"):  # a native net: (H, W) of its unpooled features
        net.eval()  # one image: train-mode BatchNorm refuses a 1×1 map (PreAct ResNet-18 on 8×8 digits)
        with torch.device("meta"):
            info["pool_size"] = list(net.forward_features(torch.empty(1, c, h, w)).shape[-2:])
    return info


def _label_names(dataset: Any, num_classes: int) -> list[str] | None:
    from .plugins import registry

    reg = registry("datasets")
    if not isinstance(dataset, str) or dataset not in reg:
        return None
    classes = list(getattr(reg.get(dataset), "classes", ()) or ())
    return classes if len(classes) == num_classes else None


def build_from_config(cfg: dict[str, Any]) -> nn.Module:
    """Build the (untrained) model a config.json describes."""
    margs = cfg.get("model_args", {})
    return build_model(cfg["architecture"], num_classes=int(cfg["num_classes"]),
                       in_chans=int(margs.get("in_chans", 3)), input_size=margs.get("input_size", [32, 32]),
                       mean=margs.get("mean", [0.0]), std=margs.get("std", [1.0]))


def load_run(run_dir: str | Path, checkpoint: str = MODEL_FILE, device: str | torch.device = "cpu"):
    """Load a run's model (eval mode) and config; also a timm export of a robustzoo net
    (:func:`export_config`: its config has no ``robustzoo`` block).

    Returns:
        (model, config dict).
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir, timm_export=True)
    weights = run_dir / checkpoint
    if not weights.is_file() and (run_dir / "pytorch_model.bin").is_file():
        raise RunError(f"{run_dir} has only pytorch_model.bin, a pickle, which robustzoo never loads; save it "
                       f"with timm's save_for_hf(model, DIR, safe_serialization=True) (or push_to_hf_hub, "
                       f"which writes both)")
    if not weights.is_file():
        raise NotFoundError(f"{run_dir} has no {checkpoint} (did training finish an epoch? "
                            f"continue it with `robustzoo train --resume {run_dir}`)")
    from .plugins import registry

    try:
        # A hand-edited config.json, or a run from a plugin this install lacks: say which file.
        dataset = (cfg.get("robustzoo") or {}).get("dataset")
        if dataset is not None:
            registry("datasets").get(dataset)
        model = build_from_config(cfg)
    except NotFoundError as exc:
        raise NotFoundError(f"{run_dir / CONFIG_FILE}: {exc}") from None
    tensors, _ = read_weights(weights)
    load_state_strict(model, tensors, str(weights))
    return model.to(device).eval(), cfg
