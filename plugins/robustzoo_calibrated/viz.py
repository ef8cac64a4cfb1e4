"""``robustzoo viz masks``: the paper's Figure 2 for a trained Calibrated AT run.

Rows: natural x, adversarial x' (the run's training attack), mask M = g_φ(x + δ) and
calibrated x_cal = clip(x + M ⊙ δ, 0, 1); one column per test image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustzoo.data import load_splits, select_examples
from robustzoo.errors import NotFoundError, RunError, UsageError
from robustzoo.files import check_output_file
from robustzoo.objectives import ObjectiveContext
from robustzoo.plugins import registry
from robustzoo.runs import AUX_FILE, atomic_path, load_run, load_state_strict, read_weights

from .objective import CalibratedAT

ROWS = ("natural", "adversarial", "mask", "calibrated")
CELL_INCHES = 1.2  # each image cell is 1.2 in square
DPI = 100  # so a cell is 120 px: the PNG is (120·n) × 480 px


def figure_size_px(n: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG written for ``n`` images."""
    return (round(CELL_INCHES * DPI * n), round(CELL_INCHES * DPI * len(ROWS)))


def load_calibrated_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """Load a calibrated run: (classifier in eval mode, CalibratedAT objective with its mask net, config).

    Raises:
        UsageError: the run was trained with another objective or without a mask network.
        NotFoundError / RunError: missing or mismatching aux.safetensors.
    """
    run_dir = Path(run_dir)
    model, cfg = load_run(run_dir, device=device)
    rz = cfg["robustzoo"]
    if rz.get("objective") != CalibratedAT.name:
        raise UsageError(f"{run_dir} was trained with objective {rz.get('objective')!r}; "
                         f"`robustzoo viz masks` needs a run of 'calibrated'")
    settings = CalibratedAT.resolve_settings(rz.get("objective_settings", {}))
    if not settings["mask"]:
        raise UsageError(f"{run_dir} was trained with mask=false (no mask network); there is no mask to show")
    spec = registry("datasets").get(rz["dataset"])
    conf = rz.get("config", {})
    ctx = ObjectiveContext(eps=float(rz["threat_model"]["eps"]), alpha=float(conf.get("alpha") or spec.alpha),
                           steps=int(conf.get("steps") if conf.get("steps") is not None else spec.steps),
                           num_classes=spec.num_classes, input_shape=tuple(spec.shape),
                           num_train=int(rz.get("num_train", 0)), epochs=int(conf.get("epochs") or 1),
                           device=torch.device(device), dataset=spec.name, seed=int(conf.get("seed", 0)))
    objective = CalibratedAT(settings, ctx)
    aux_path = run_dir / AUX_FILE
    if not aux_path.is_file():
        raise NotFoundError(f"{run_dir} has no {AUX_FILE} with the mask network; was the run "
                            f"trained by robustzoo >= 0.1 and did it finish an epoch?")
    tensors, _ = read_weights(aux_path)
    prefix = "module.mask_net."
    mask_tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not mask_tensors:
        raise RunError(f"{aux_path} holds no '{prefix}*' tensors")
    load_state_strict(objective.mask_net, mask_tensors, f"{aux_path} (mask_net)")
    objective.mask_net.to(device).eval()
    return model, objective, cfg


def mask_figure(run_dir: str | Path, out: str | Path, n: int = 8, seed: int = 0,
                data_dir: str | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Attack ``n`` test images of a calibrated run and save the natural/adversarial/mask/calibrated grid.

    Args:
        run_dir: a run directory of the 'calibrated' objective.
        out: PNG path (written atomically).
        n: number of test images (columns).
        seed: picks the images and the attack's random start.
        data_dir: where the dataset lives (default: the run's).
        device: torch device.

    Returns:
        Summary: path, size in pixels, labels, predictions on x' and x_cal, mean mask, and
        whether a file at ``out`` was replaced.
    """
    import matplotlib  # deferred: slow to import, and only this command draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    replaced = check_output_file(out, "--out")  # before the attack: a missing folder is refused
    model, objective, cfg = load_calibrated_run(run_dir, device)
    rz = cfg["robustzoo"]
    spec = registry("datasets").get(rz["dataset"])
    conf = rz.get("config", {})
    splits = load_splits(spec, data_dir=data_dir or conf.get("data_dir"), seed=int(conf.get("seed", 0)))
    data = select_examples(splits.test, min(n, len(splits.test)), seed).to(device)
    x, y, _ = next(iter(data.batches(len(data))))
    torch.manual_seed(seed)
    # The classifier is in eval mode here (inference), so the attack runs with eval-mode BN.
    x_adv = objective.attack(model, x, y, bn_mode="eval")
    with torch.no_grad():
        m = objective.mask(x, x_adv)
        x_cal = objective.calibrate(x, x_adv, m)
        pred_adv = model(x_adv).argmax(1)
        pred_cal = model(x_cal).argmax(1)
    k = len(y)
    classes = spec.classes or tuple(str(i) for i in range(spec.num_classes))
    fig, axes = plt.subplots(len(ROWS), k, figsize=(CELL_INCHES * k, CELL_INCHES * len(ROWS)),
                             dpi=DPI, squeeze=False)
    images = (x, x_adv, m, x_cal)
    for r, (row, imgs) in enumerate(zip(ROWS, images)):
        for j in range(k):
            ax = axes[r][j]
            img = imgs[j].detach().cpu().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row, fontsize=8)
            if r == 0:
                ax.set_title(f"y={classes[int(y[j])]}"[:14], fontsize=7)
            elif r == 1:
                ax.set_title(f"pred {classes[int(pred_adv[j])]}"[:14], fontsize=7)
            elif r == 3:
                ax.set_title(f"pred {classes[int(pred_cal[j])]}"[:14], fontsize=7)
    fig.subplots_adjust(left=0.08 if k > 2 else 0.2, right=0.99, top=0.93, bottom=0.01, wspace=0.1,
                        hspace=0.3)
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return {"path": str(out), "size_px": list(figure_size_px(k)), "labels": y.tolist(),
            "pred_adv": pred_adv.tolist(), "pred_cal": pred_cal.tolist(),
            "mask_mean": float(m.mean()), "replaced": replaced}
