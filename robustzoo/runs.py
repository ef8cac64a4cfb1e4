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
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import NotFoundError, RunError
from .files import atomic_path, write_json, write_text  # noqa: F401 - handed on (runs.write_json)
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
    old = path.read_text(encoding="utf-8") if path.exists() else ""
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
        save_file(clean, str(tmp), metadata=meta)
        _canonical_header(tmp)


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
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
                       f"{str(exc).splitlines()[0][:120]}); re-download it or retrain the run") from None
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


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of RUN_DIR/metrics.jsonl ([] when there are none; bad lines skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def eval_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The evaluation record of a run (its eval.json), or None when it has none.

    Cards, the RobustBench record, the zoo entry of a push and the leaderboard read a run's
    results through this one function, so the choice of which evaluation speaks for a run
    lives in one place.

    Raises:
        RunError: eval.json exists but is not a JSON object.
    """
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path} is not valid JSON; re-run `robustzoo eval {run_dir}`") from None
    if not isinstance(report, dict):
        raise RunError(f"{path} is not an evaluation record (a JSON object); re-run `robustzoo eval {run_dir}`")
    return report


def read_config(run_dir: str | Path, *, timm_export: bool = False) -> dict[str, Any]:
    """Read and check a run's config.json.

    With ``timm_export``, the config.json of a timm export of one of robustzoo's nets (timm's
    ``save_for_hf`` folder or ``push_to_hf_hub`` repo: ``architecture``, ``num_classes``,
    ``pretrained_cfg``, no ``robustzoo`` block) is taken too, completed by
    :func:`export_config`; only loading a model needs no more than that.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise NotFoundError(f"{run_dir} is not a directory; pass a run directory written by "
                            f"`robustzoo train`, a zoo alias or hf-hub:org/name")
    if not cfg_path.is_file():
        raise NotFoundError(f"{run_dir} is not a robustzoo run (no {CONFIG_FILE}); "
                            f"create one with `robustzoo train --out {run_dir}`")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{cfg_path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        raise RunError(f"{cfg_path} lacks 'architecture' or the 'robustzoo' block; it was not "
                       f"written by robustzoo")
    if "robustzoo" not in cfg:
        if timm_export:
            return export_config(cfg, str(cfg_path))
        raise RunError(f"{cfg_path} has no 'robustzoo' block: it is a timm export (save_for_hf or "
                       f"push_to_hf_hub), not a robustzoo run; `robustzoo eval` and robustzoo.load take it, "
                       f"this command needs a run written by `robustzoo train`")
    return cfg


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
    model = build_from_config(cfg)
    tensors, _ = read_weights(weights)
    load_state_strict(model, tensors, str(weights))
    return model.to(device).eval(), cfg
