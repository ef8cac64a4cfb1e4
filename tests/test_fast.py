"""The fast path (robustzoo.fast): CUDA switches by construction, CPU bf16, compile, benchmark."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustzoo import fast, runs
from robustzoo.errors import UsageError
from robustzoo.testing import TINY

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def one_thread():
    """Tiny CPU workloads run faster (and steadier on a shared machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_precision_and_compile_names():
    assert fast.resolve_precision("auto", "cpu") == "fp32"
    assert fast.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert fast.resolve_precision(None, "cuda:1") == "bf16"
    assert fast.resolve_precision("FP32", "cuda") == "fp32"
    with pytest.raises(UsageError, match="precision"):
        fast.resolve_precision("fp16", "cpu")
    assert fast.check_compile_mode(None) == "off" and fast.check_compile_mode("none") == "off"
    assert fast.check_compile_mode("reduce-overhead") == "reduce-overhead"
    with pytest.raises(UsageError, match="compile mode"):
        fast.check_compile_mode("fastest")


def test_cpu_path_is_the_plain_path():
    fp = fast.FastPath.create(torch.device("cpu"))
    model = _bn_net()
    x = torch.rand(2, 3, 4, 4)
    assert fp.precision == "fp32" and not fp.channels_last and not fp.fused_optimizer and not fp.drop_last
    assert fp.wrap(model) is model and fp.prepare_model(model) is model and fp.prepare_input(x) is x
    assert isinstance(fp.autocast(), contextlib.nullcontext)
    assert next(model.parameters()).is_contiguous()


def test_cuda_switches_by_construction():
    """What a CUDA run turns on, checked without a GPU (FastPath only inspects the device)."""
    fp = fast.FastPath.create(torch.device("cuda"), "auto", "reduce-overhead")
    assert (fp.precision, fp.channels_last, fp.fused_optimizer, fp.drop_last, fp.uses_cudagraphs) == (
        "bf16", True, True, True, True)
    d = fp.describe()
    assert d["cudnn_benchmark"] and not d["tf32_off"] and d["compile"] == "reduce-overhead"
    exact = fast.FastPath.create(torch.device("cuda"), "fp32")
    assert exact.describe()["tf32_off"] and not exact.drop_last and not exact.uses_cudagraphs
    # channels_last conversion of model, input and therefore δ (rand_like keeps the layout)
    model = fp.prepare_model(_bn_net())
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = fp.prepare_input(torch.rand(2, 3, 4, 4))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.rand_like(x).is_contiguous(memory_format=torch.channels_last)
    assert x.clone().is_contiguous(memory_format=torch.channels_last)


def test_fused_optimizer_flag():
    from robustzoo.config import TrainConfig
    from robustzoo.train import make_optimizer

    params = list(_bn_net().parameters())
    for opt_name in ("sgd", "adam"):
        cfg = TrainConfig(optimizer=opt_name, lr=0.1, weight_decay=5e-4)
        assert make_optimizer(params, cfg, fused=True).defaults["fused"] is True
        assert not make_optimizer(params, cfg).defaults.get("fused")


def test_fast_model_converts_layout_and_routes_modes():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, 3)
            self.num_classes = 3

        def forward(self, x):
            seen.append((self.training, x.is_contiguous(memory_format=torch.channels_last)))
            return self.lin(x.flatten(1))

    probe = Probe()
    fm = fast.FastModel(probe, channels_last=True)
    x = torch.rand(2, 3, 2, 2)
    assert torch.equal(fm(x), probe.lin(x.flatten(1)))
    fm.eval()
    fm(x)
    assert seen == [(True, True), (False, True)] and not probe.training
    assert fm.num_classes == 3  # attributes of the wrapped model are visible


@pytest.mark.parametrize("attack", ["clean", "pgd20", "cw", "apgd-ce", "square"])
def test_evaluation_inputs_take_the_models_layout_once_per_batch(attack, monkeypatch):
    """run_attack hands a channels_last model its batch in channels_last when the attack takes
    any layout (robustzoo's own), so x + δ keeps it at every attack step and the forwards
    convert nothing; the outcomes are those of the per-forward conversion. pyautoattack's
    attacks (.view of x) keep NCHW batches and run as before."""
    from robustzoo.attacks import AttackContext
    from robustzoo.data import TensorData
    from robustzoo.eval import _evaluate as ev
    from robustzoo.plugins import registry

    net = _bn_net().eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(12, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    with torch.no_grad():
        y = net(x.float() / 255).argmax(1)  # every example starts correct: all are attacked
    data = TensorData(x, y)
    spec = registry("attacks").get(attack)
    ctx = AttackContext(eps=8 / 255, alpha=2 / 255, num_classes=10, options={"square_queries": 10})
    conversions = []
    convert = fast.channels_last

    def counting(t):
        if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
            conversions.append(tuple(t.shape))
        return convert(t)

    monkeypatch.setattr(fast, "channels_last", counting)  # what FastModel.forward converts
    flags = {}
    for once in (True, False):
        with monkeypatch.context() as m:
            if not once:
                m.setattr(ev, "channels_last", lambda t: t)  # as before: converted in every forward
            conversions.clear()
            with one_thread():
                flags[once] = ev.run_attack(fast.FastModel(net, channels_last=True), data, spec, ctx,
                                            batch_size=5).flags
            counted = len(conversions)
        if once and spec.any_layout:
            assert counted == 0, conversions  # robustzoo's own attacks keep the layout throughout
        if attack not in ("clean", "square") and not (once and spec.any_layout):
            assert counted > 3  # a copy per forward: what the batch conversion saves
    assert torch.equal(flags[True], flags[False])


def test_default_evaluation_batch_per_device(monkeypatch):
    """256 on the CPU (CPU evaluations unchanged), CUDA_EVAL_BATCH on CUDA, an explicit one obeyed."""
    from robustzoo.eval import _evaluate as ev

    assert ev.default_eval_batch("cpu") == ev.EVAL_BATCH == 256
    assert ev.default_eval_batch("cuda") == ev.default_eval_batch(torch.device("cuda:1")) == ev.CUDA_EVAL_BATCH
    assert ev.CUDA_EVAL_BATCH >= 256
    sizes = []
    run = ev.run_attack
    monkeypatch.setattr(ev, "run_attack", lambda *a, **k: sizes.append(a[4]) or run(*a, **k))
    data = _digits_test(24)
    for bs, want in ((None, 256), (8, 8)):
        sizes.clear()
        ev.evaluate_model(_bn_net_1ch(), data, ["clean"], eps=0.1, alpha=0.02, num_classes=10,
                          batch_size=bs, health=False)
        assert sizes == [want], sizes


def _digits_test(n: int):
    from robustzoo.data import load_splits
    from robustzoo.plugins import registry

    test = load_splits(registry("datasets").get("digits")).test
    return test.take(torch.arange(n))


def _bn_net_1ch() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()


def test_bf16_autocast_keeps_batchnorm_state_fp32_and_gradients_alive():
    """Under bf16 autocast BN parameters/statistics stay fp32 and summed-loss input gradients
    do not underflow (fp16 with a mean loss zeroes many of them)."""
    model = _bn_net()
    ref = _bn_net()
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 10, (16,))
    with fast.autocast(torch.device("cpu"), "bf16"):
        out = model[0](x)
        assert out.dtype == torch.bfloat16
        model(x)
    ref(x)
    bn, bn_ref = model[1], ref[1]
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        assert t.dtype == torch.float32
    assert torch.allclose(bn.running_mean, bn_ref.running_mean, rtol=0.05, atol=2e-3)
    assert torch.allclose(bn.running_var, bn_ref.running_var, rtol=0.05, atol=2e-3)

    def input_grad(precision: str) -> torch.Tensor:
        xa = x.clone().requires_grad_(True)
        with fast.autocast(torch.device("cpu"), precision):
            loss = F.cross_entropy(model(xa), y, reduction="none").sum()
        return torch.autograd.grad(loss, [xa])[0]

    g32, g16 = input_grad("fp32"), input_grad("bf16")
    assert g16.dtype == torch.float32
    zero32, zero16 = float((g32 == 0).float().mean()), float((g16 == 0).float().mean())
    assert zero16 <= zero32 + 0.01
    agree = float((g16.sign() == g32.sign()).float().mean())
    assert agree > 0.9  # PGD steps on sign(∇): bf16 moves nearly every pixel the same way


def test_trainer_on_cpu_records_precision_and_stays_plain(tmp_path):
    from robustzoo.train import Trainer, build_config

    fields = {k: v for k, v in TINY.items()}
    cfg = build_config("at", None, {}, **fields)
    tr = Trainer(cfg, tmp_path / "r")
    assert tr.net is tr.model and tr.eval_net is tr.model
    assert not tr.optimizer.defaults.get("fused")
    assert tr.cfg.precision == "fp32" and tr.cfg.compile == "off"
    assert tr.robustzoo_block()["config"]["precision"] == "fp32"


def test_trainer_bf16_autocast_on_cpu(tmp_path):
    """precision=bf16 on the CPU runs the autocast path end to end and records it."""
    from robustzoo.testing import train_tiny

    with one_thread():
        run_dir, report = train_tiny(tmp_path / "bf16", "at", precision="bf16", subset=200,
                                     eval_attacks=["clean"], eval_n=32)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["robustzoo"]["config"]["precision"] == "bf16"
    # The final evaluation is the run's record, which may be published: exact fp32 whatever
    # precision the training ran in.
    assert report["precision"] == "fp32" and report["results"][0]["precision"] == "fp32"
    assert 0.0 <= report["results"][0]["accuracy"] <= 1.0


def test_bad_precision_is_a_one_line_error(capsys):
    from helpers import assert_one_line_error, run_cli

    code, _, err = run_cli(["train", "--set", "precision=half", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "precision")
    code, _, err = run_cli(["train", "--compile", "turbo", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "compile mode")


def test_a_checkpoint_copies_the_state_to_the_host_once(tmp_path, monkeypatch):
    """One host_copy per epoch (one wait on a GPU), and the resume state shares the copied
    weights, extra modules and state with the weights files instead of copying them again."""
    import importlib

    from robustzoo import runs

    train_mod = importlib.import_module("robustzoo.train")  # the module: robustzoo.train is also a function
    calls, saved = [], {}
    copy, save_weights, save_state = train_mod.host_copy, runs.save_weights, runs.save_state

    def counting_copy(obj):
        calls.append(sorted(obj))
        return copy(obj)

    def keep_weights(path, tensors, meta):
        saved.setdefault(Path(path).name, []).append(tensors)
        return save_weights(path, tensors, meta)

    def keep_state(path, state):
        saved.setdefault("resume", []).append(state)
        return save_state(path, state)

    monkeypatch.setattr(train_mod, "host_copy", counting_copy)
    monkeypatch.setattr(runs, "save_weights", keep_weights)
    monkeypatch.setattr(runs, "save_state", keep_state)
    cfg = train_mod.build_config("calibrated", None, {}, **dict(TINY, subset=200, epochs=2, steps=1,
                                                                val_steps=1, eval_attacks=["clean"], eval_n=8))
    trainer = train_mod.Trainer(cfg, tmp_path / "run")
    with one_thread():
        trainer.fit()
    assert calls == [["extra", "extra_optim", "model", "optimizer", "state"]] * 2  # epochs 1 and 2
    assert len(saved[runs.LAST_FILE]) == len(saved["resume"]) == 2
    for last, blob in zip(saved[runs.LAST_FILE], saved["resume"]):
        assert set(last) == set(blob["model"]) and all(last[k] is blob["model"][k] for k in last)
        assert all(t.device.type == "cpu" for t in last.values())
    for aux in saved[runs.AUX_FILE]:  # written with the best epoch: shared with that epoch's resume state
        assert any(all(aux[f"module.mask_net.{k}"] is t for k, t in blob["extra"]["mask_net"].items())
                   for blob in saved["resume"])


def test_compile_keeps_a_bounded_number_of_graphs(tmp_path):
    """One compiled callable per BN mode: graphs are made in the first epoch only, their
    number is bounded, and (eager backend) the weights equal the uncompiled run's."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from robustzoo.train import Trainer, build_config

    # 360 training images in 6 full batches of 60: drop_last changes nothing, so the compiled
    # and the plain run take the same steps.
    opts = dict(TINY, subset=400, batch_size=60, steps=2, val_steps=1, epochs=2,
                eval_attacks=["clean"])
    torch._dynamo.reset()
    counters.clear()
    with one_thread():
        compiled = Trainer(build_config("at", None, {}, **opts, compile="default", compile_backend="eager"),
                           tmp_path / "c")
        assert isinstance(compiled.net, fast.FastModel) and compiled.net.compiled
        graphs, stats = [], []
        for epoch in range(2):
            compiled.train_epoch(epoch)
            with compiled.fast.autocast():
                from robustzoo.train import validate

                validate(compiled.eval_net, compiled.val_data, compiled.cfg)
            graphs.append(counters["stats"]["unique_graphs"])
            stats.append(fast.compile_stats())
        plain = Trainer(build_config("at", None, {}, **opts), tmp_path / "p")
        for epoch in range(2):
            plain.train_epoch(epoch)
    # train mode: the attack's forward (input requires grad) and the θ-forward; eval mode:
    # no-grad clean, the attack, and no-grad on x_adv (whose size-1 channel dimension has
    # another stride on 1-channel digits). Nothing new after the first epoch.
    assert graphs[0] == graphs[1], f"recompiled after the first epoch: {graphs}"
    assert 4 <= graphs[0] <= 6, graphs
    # per BatchNorm mode (the graphs cached on each compiled callable's code)
    assert stats[0] == stats[1], stats
    assert stats[0]["graphs"]["train"] == 2 and 2 <= stats[0]["graphs"]["eval"] <= 4, stats[0]
    assert sum(stats[0]["graphs"].values()) == stats[0]["unique_graphs"] == graphs[0]
    assert stats[0]["at_limit"] == [] and stats[0]["graph_breaks"] == 0 and stats[0]["cudagraph_skips"] == 0
    for (k, a), b in zip(compiled.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    torch._dynamo.reset()


class _BNDigitsNet(nn.Module):
    """A small CNN with BatchNorm for 1x8x8 digits (the registered digits nets have none)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, **_: object):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_calibrated_compile_keeps_a_bounded_number_of_graphs(tmp_path):
    """Calibrated AT's φ-step runs the classifier in train mode with BatchNorm's running
    statistics frozen (frozen_bn_statistics turns track_running_stats off, a flag the compiled
    BatchNorm branches on). Compiled (eager backend) on a net with BatchNorm: the graphs are
    all made in the first epoch, stay few and below the recompile limit, and the weights AND
    the BatchNorm buffers end equal to the uncompiled run's, so no compiled forward updated
    statistics the φ-step froze."""
    from types import SimpleNamespace

    import torch._dynamo

    from robustzoo import hookimpl, plugins
    from robustzoo.train import Trainer, build_config, validate

    plugins.register_plugin(SimpleNamespace(register_architectures=hookimpl(
        lambda register: register("bn_digits_test", _BNDigitsNet, description="test CNN with BatchNorm"))),
        name="fast-test-bn-net")
    # mask_warmup=0: the φ-step (frozen statistics) runs from the first step; 360 training
    # images in 6 full batches of 60, so the compiled run's drop_last changes nothing
    opts = dict(TINY, subset=400, batch_size=60, steps=2, val_steps=1, epochs=2, eval_attacks=["clean"],
                arch="bn_digits_test")
    sets = {"mask_warmup": 0}
    torch._dynamo.reset()
    with one_thread():
        compiled = Trainer(build_config("calibrated", None, sets, **opts, compile="default",
                                        compile_backend="eager"), tmp_path / "c")
        stats = []
        for epoch in range(2):
            compiled.train_epoch(epoch)
            with compiled.fast.autocast():
                validate(compiled.eval_net, compiled.val_data, compiled.cfg)
            stats.append(fast.compile_stats())
        plain = Trainer(build_config("calibrated", None, sets, **opts), tmp_path / "p")
        for epoch in range(2):
            plain.train_epoch(epoch)
    torch._dynamo.reset()
    assert stats[0] == stats[1], stats  # nothing compiled after the first epoch
    g = stats[0]["graphs"]
    # train mode, 5: the attack's forward (attack_bn=train, input requires grad), the θ-forward
    # on x, the θ-forward on x_cal (whose size-1 channel dimension has another stride), the
    # φ-step's no-grad f(x') and its f(x_cal) with gradients, a graph of its own only because
    # track_running_stats is off (dynamo guards on it: TORCH_LOGS=recompiles names that guard);
    # eval mode as for `at`: validation's no-grad forward, its attack, no-grad on x_adv
    assert g["train"] == 5 and 2 <= g["eval"] <= 4, stats[0]
    assert stats[0]["at_limit"] == [] and stats[0]["graph_breaks"] == 0, stats[0]
    bn = [k for k in plain.model.state_dict() if "running" in k or "num_batches" in k]
    assert bn, "the test needs BatchNorm buffers"
    for (k, a), b in zip(compiled.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), atol=1e-5), k
    for (k, a), b in zip(compiled.extra["mask_net"].state_dict().items(),
                         plain.extra["mask_net"].state_dict().values()):
        assert torch.allclose(a.double(), b.double(), atol=1e-5), k


def test_cuda_graph_steps_are_marked_and_nothing_is_read_across_a_mark(tmp_path, monkeypatch):
    """CUDA-graph trees may overwrite every compiled output of a step once the next step is
    marked. Emulated on the CPU: each mark fills the outputs of the compiled forwards since
    the previous mark with NaN. A compiled run (eager backend) must then train exactly as
    without the emulation, with one mark per training step and per validation batch."""
    import torch._dynamo

    from robustzoo.train import Trainer, build_config

    opts = dict(TINY, subset=400, batch_size=60, steps=2, val_steps=1, epochs=2, eval_attacks=["clean"],
                eval_n=16, compile="default", compile_backend="eager")

    def run(name: str, emulate: bool) -> tuple[Trainer, int]:
        outputs: list[torch.Tensor] = []
        marks = [0]
        forward = fast.FastModel.forward

        def recording_forward(self, x):
            out = forward(self, x)
            outputs.append(out)
            return out

        def mark():
            marks[0] += 1
            with torch.no_grad():
                for t in outputs:
                    t.detach().fill_(float("nan"))
            outputs.clear()

        with monkeypatch.context() as m:
            m.setattr(fast.FastPath, "uses_cudagraphs", property(lambda self: True))
            m.setattr(torch.compiler, "cudagraph_mark_step_begin", mark)
            if emulate:
                m.setattr(fast.FastModel, "forward", recording_forward)
            trainer = Trainer(build_config("at", None, {}, **opts), tmp_path / name)
            with one_thread():
                trainer.fit()
        return trainer, marks[0]

    torch._dynamo.reset()
    plain, _ = run("plain", emulate=False)
    emulated, marks = run("emulated", emulate=True)
    torch._dynamo.reset()
    n_train, n_val = len(emulated.train_data) // 60, -(-len(emulated.val_data) // 500)
    assert marks == 2 * (n_train + n_val) == 14
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (t.out / "metrics.jsonl").read_text().splitlines()] for t in (plain, emulated)]
    assert rows[0] == rows[1]
    for (k, a), b in zip(plain.model.state_dict().items(), emulated.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_compare_precisions_on_cpu(at_run):
    """Paired: each example's outcome in both precisions; the drift is the net of the flips,
    and a check on too few examples to resolve the tolerance says so instead of passing."""
    compare_precisions = _load_benchmark().compare_precisions  # benchmarks/throughput.py
    same = compare_precisions(at_run, ["clean", "pgd20"], n=32, device="cpu", low="fp32")
    assert same["max_abs_drift_points"] == 0.0 and same["resolution_points"] == 100 / 32
    assert same["ok"] is None and same["resolved"] is False and "3.12 points" in same["unresolved"]
    assert [r["attack"] for r in same["results"]] == ["clean", "pgd20"]
    assert all(r["flipped"] == r["only_fp32"] == 0 for r in same["results"])
    coarse = compare_precisions(at_run, ["clean"], n=32, device="cpu", low="fp32", tolerance=5.0)
    assert coarse["resolved"] and coarse["ok"] is True and "unresolved" not in coarse
    with one_thread():
        rep = compare_precisions(at_run, "clean,pgd20", n=32, device="cpu")
    assert rep["precisions"] == ["fp32", "bf16"] and rep["n"] == 32
    for r in rep["results"]:
        assert abs(r["drift_points"] - 100 * (r["bf16"] - r["fp32"])) < 1e-6
        assert abs(r["drift_points"] - 100 * (r["only_bf16"] - r["only_fp32"]) / 32) < 1e-6
        assert r["flipped"] == r["only_bf16"] + r["only_fp32"]
        assert abs(r["drift_points"]) <= 25  # 32 examples on a tiny CPU model: a sanity bound
    assert rep["ok"] == (False if rep["max_abs_drift_points"] > 0.1 else None)


def test_eval_cli_precision_option(at_run, tmp_path, capsys):
    import shutil

    from helpers import run_cli

    run = tmp_path / "run"  # eval writes eval.json: never into the shared fixture
    shutil.copytree(at_run, run)
    code, out, err = run_cli(["eval", str(run), "--attacks", "clean", "--n", "16", "--device", "cpu",
                              "--precision", "fp32", "--no-health", "--json", "-"], capsys)
    assert code == 0, err
    assert json.loads(out)["precision"] == "fp32"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_throughput_benchmark_quick_on_cpu(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    with one_thread():
        bench.main(["--device", "cpu", "--quick", "--arch", "smallcnn", "--batch-size", "4", "--iters", "1",
                    "--rounds", "2", "--warmup", "1", "--steps", "2", "--eval-n", "4", "--eval-batch", "4",
                    "--aa-n", "2", "--aa-attack", "square", "--square-queries", "5", "--peak-tflops", "1",
                    "--in-process", "--out", str(out)])
    rep = json.loads(out.read_text())
    r = rep["archs"]["smallcnn"]
    assert rep["device_type"] == "cpu" and r["forward_equivalents_per_image"] == 7  # PGD-2: 2·2F + 3F
    assert r["forward_gflops"] > 0
    assert set(bench.CONTENDERS) <= set(r["train"])
    for key in bench.CONTENDERS:
        t = r["train"][key]
        assert t["images_per_s"] > 0 and t["images"] == 8 and len(t["rounds_images_per_s"]) == 2
        assert 0 < t["fraction_of_limit"] < 1
    assert r["train"]["fast"]["fast_path"]["precision"] == "fp32"
    assert r["train"]["fp32_nchw"]["fast_path"]["channels_last"] is False
    for key, numerics in (("reference", "paper default"), ("reference_strict", "strict fp32")):
        ref = r["train"][key]["fast_path"]
        assert ref["attack"].startswith(".backward()") and ref["numerics"] == numerics
    ips = {k: r["train"][k]["images_per_s"] for k in bench.CONTENDERS}
    assert r["train"]["speedup_vs_reference"] == pytest.approx(ips["fast"] / ips["reference"])
    b = r["train"]["breakdown"]
    for name, (ref, _) in bench.REFERENCES.items():  # the factors multiply to the total
        f = b[name]
        assert f["loop_33F_to_23F_and_data"] * f["precision"] * f["layout"] == pytest.approx(f["total_eager"])
        assert f["total_eager"] == pytest.approx(ips["fast"] / ips[ref])
    assert r["pgd20_eval"]["fast"]["images"] == 4 and r["pgd20_eval"]["reference"]["images_per_s"] > 0
    assert r["autoattack"]["attack"] == "square" and r["autoattack"]["seconds"] > 0


def test_throughput_breakdown_splits_against_both_references():
    """Made-up rates: each reference's total is the product of its four factors."""
    bench = _load_benchmark()
    rates = {"fast": 800.0, "bf16_nchw": 640.0, "fp32_tf32_nchw": 320.0, "fp32_nchw": 160.0,
             "reference": 100.0, "reference_strict": 50.0, "fast_compile_reduce-overhead": 1600.0}
    b = bench.breakdown({k: {"images_per_s": v} for k, v in rates.items()})
    assert b["paper_default"] == pytest.approx({"loop_33F_to_23F_and_data": 3.2, "precision": 2.0, "layout": 1.25,
                                                "compile": 2.0, "total_eager": 8.0, "total_compiled": 16.0})
    assert b["strict_fp32"] == pytest.approx({"loop_33F_to_23F_and_data": 3.2, "precision": 4.0, "layout": 1.25,
                                              "compile": 2.0, "total_eager": 16.0, "total_compiled": 32.0})
    lines = bench.breakdown_lines(b)
    assert lines[0].startswith("vs paper default: 16.00x") and lines[1].startswith("vs strict fp32: 32.00x")
    assert "strict_fp32" not in bench.breakdown({k: {"images_per_s": v} for k, v in rates.items()
                                                 if k != "reference_strict"})


def test_benchmark_reference_runs_in_a_process_of_its_own():
    """The reference loop in a worker process: a paper repository's switches, not the trainer's:
    PyTorch's defaults for the paper default (TF32 convolutions on, TF32 matmuls off, no
    autotuning); strict fp32 turns every TF32 off (checked in this process, flags restored)."""
    bench = _load_benchmark()
    spec = dict(kind="reference", arch="smallcnn", batch_size=2, steps=1, max_steps=2, device="cpu",
                workers=0, threads=1)
    w = bench.Worker("reference", spec)  # tf32 unset: the paper default
    try:
        assert w.ready(timeout=120), w.error
        assert w.info["backends"] == {"cudnn_benchmark": False, "cudnn_allow_tf32": True,
                                      "matmul_allow_tf32": False}
        assert w.info["numerics"] == "paper default"
        res = w.call("train", timeout=120, steps=2)
        assert res["images"] == 4 and res["seconds"] > 0
        assert "error" in w.call("no_such_command", timeout=60)
    finally:
        w.close()
    assert w.proc.returncode == 0
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        strict = bench.LocalWorker("reference_strict", dict(spec, tf32=False))
        assert strict.info["backends"] == {"cudnn_benchmark": False, "cudnn_allow_tf32": False,
                                           "matmul_allow_tf32": False}
        assert strict.info["numerics"] == "strict fp32"
        strict.close()
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved


def test_benchmark_forward_flops_match_the_notes():
    """FLOP counter vs docs/performance.md: PRN-18 1.11 GFLOP per 32x32 image."""
    bench = _load_benchmark()
    assert bench.forward_flops("preact_resnet18", torch.device("cpu")) / 1e9 == pytest.approx(1.11, rel=0.02)


def test_benchmark_check_precision(at_run, tmp_path, capsys):
    import shutil

    bench = _load_benchmark()
    run = tmp_path / "run"  # the check is recorded in the run: never into the shared fixture
    shutil.copytree(at_run, run)
    out = tmp_path / "p.json"
    rep = bench.main(["--check-precision", str(run), "--n", "16", "--attacks", "clean",
                      "--device", "cpu", "--out", str(out)])
    assert rep["precisions"] == ["fp32", "bf16"] and rep["tolerance_points"] == 0.1
    assert json.loads(out.read_text())["results"][0]["attack"] == "clean"
    saved = json.loads((run / fast.PRECISION_CHECK_FILE).read_text())
    assert saved == {k: v for k, v in rep.items() if k not in ("recorded", "decision")}
    assert rep["decision"] == ("bf16" if rep["ok"] else "fp32")  # what --precision bf16 would be allowed


def test_eval_precision_is_fp32_unless_a_check_allows_bf16():
    """'auto' is exact fp32 on every device, a GPU's included; bf16 only with a check of every attack."""
    check = {"n": 1000, "results": [{"attack": "clean", "drift_points": 0.0},
                                    {"attack": "pgd20", "drift_points": 0.1},
                                    {"attack": "autoattack", "drift_points": -0.3}]}
    for device in ("cuda", "cuda:1", "cpu"):
        assert fast.eval_precision("auto", device, check, attacks=["clean", "pgd20"]) == ("fp32", None)
        assert fast.eval_precision("fp32", device, check) == ("fp32", None)
    prec, drift = fast.eval_precision("bf16", "cuda", check, attacks=["clean", "pgd20"])
    assert prec == "bf16" and drift["drift_points"] == {"clean": 0.0, "pgd20": 0.1}  # 0.1 points is within
    assert drift["max_abs_drift_points"] == 0.1 and drift["n"] == 1000
    with pytest.raises(UsageError, match=r"autoattack drifted -0.3 points .* evaluate in fp32"):
        fast.eval_precision("bf16", "cuda", check, attacks=["clean", "autoattack"])
    assert fast.eval_precision("bf16", "cuda", check, attacks=["autoattack"], tolerance=0.5)[0] == "bf16"
    with pytest.raises(UsageError, match="did not measure apgd-t, square.*--check-precision --attacks clean,"
                                         "apgd-t,square"):
        fast.eval_precision("bf16", "cuda", check, attacks=["clean", "apgd-t", "square"])
    with pytest.raises(UsageError, match="needs a precision check"):
        fast.eval_precision("bf16", "cuda", None, attacks=["clean"])


def test_eval_runs_bf16_only_after_a_check_of_these_weights(at_run, tmp_path):
    """`robustzoo eval --precision bf16` (CPU autocast stands in for a GPU): refused without a
    check, allowed with one of these weights within 0.1 points (the drift goes into the record),
    refused for a check of other weights or one that drifted; 'auto' stays fp32."""
    import shutil

    from robustzoo.api import check_precision, evaluate

    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    kw = dict(n=16, device="cpu", write=False, health=False)
    with one_thread():
        assert evaluate(run, ["clean"], **kw)["precision"] == "fp32"
        with pytest.raises(UsageError, match="needs a precision check"):
            evaluate(run, ["clean"], precision="bf16", **kw)
        check = check_precision(run, ["clean", "pgd20"], n=32, device="cpu")
    path = run / fast.PRECISION_CHECK_FILE
    assert check["recorded"] == str(path) and check["model_fingerprint"] and check["resolution_points"] == 3.125
    assert [r["attack"] for r in check["results"]] == ["clean", "pgd20"]
    for r in check["results"]:
        assert abs(r["drift_points"] - 100 * (r["bf16"] - r["fp32"])) < 1e-6
    assert check["resolved"] is False and check["ok"] is None  # 32 examples cannot resolve 0.1 points ...
    with pytest.raises(UsageError, match="resolve 3.12 points"):
        evaluate(run, ["clean"], precision="bf16", **kw)  # ... so bf16 stays refused
    check.update(resolved=True, n=1000)  # as a check on 1,000 examples would say
    path.write_text(json.dumps(dict(check, results=[dict(r, drift_points=0.0) for r in check["results"]])))
    with one_thread():
        rep = evaluate(run, ["clean"], precision="bf16", **kw)
    assert rep["precision"] == "bf16" and rep["results"][0]["precision"] == "bf16"
    assert rep["precision_check"]["drift_points"] == {"clean": 0.0} and rep["precision_check"]["n"] == 1000
    path.write_text(json.dumps(dict(check, results=[dict(r, drift_points=0.5) for r in check["results"]])))
    with pytest.raises(UsageError, match="clean drifted 0.5 points"):
        evaluate(run, ["clean"], precision="bf16", **kw)
    path.write_text(json.dumps(dict(check, model_fingerprint="0" * 16)))
    with pytest.raises(UsageError, match="needs a precision check"):  # made on other weights: not this model's
        evaluate(run, ["clean"], precision="bf16", **kw)


def test_bf16_outcomes_are_not_resumed_as_fp32(at_run, tmp_path, capsys):
    import shutil

    from robustzoo.api import evaluate
    from robustzoo.eval import model_fingerprint

    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    evaluate(run, ["clean"], n=16, device="cpu", precision="fp32", health=False)
    model, _ = runs.load_run(run)
    (run / fast.PRECISION_CHECK_FILE).write_text(json.dumps(
        {"model_fingerprint": model_fingerprint(model), "n": 1000, "resolved": True, "max_abs_drift_points": 0.0,
         "results": [{"attack": "clean", "drift_points": 0.0}]}))
    capsys.readouterr()
    with one_thread():
        rep = evaluate(run, ["clean"], n=16, device="cpu", precision="bf16", health=False, show_progress=True)
    assert "different autocast" in capsys.readouterr().err
    assert rep["precision"] == "bf16"


def _cuda_syncs(work) -> int:
    """Host syncs ``work()`` makes (torch.cuda.set_sync_debug_mode('warn'))."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            work()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_copy_waits_once_on_a_gpu():
    from robustzoo.train import host_copy

    state = {"a": torch.randn(64, 8, 3, 3, device="cuda").to(memory_format=torch.channels_last),
             "b": [torch.arange(10, device="cuda"), torch.ones(3)], "c": 1.5}
    out = []
    assert _cuda_syncs(lambda: out.append(host_copy(state))) == 1
    copy = out[0]
    assert copy["a"].is_pinned() and copy["a"].device.type == "cpu" and copy["c"] == 1.5
    assert torch.equal(copy["a"], state["a"].cpu()) and torch.equal(copy["b"][0], state["b"][0].cpu())
    assert copy["a"].is_contiguous(memory_format=torch.channels_last)  # as .to("cpu") keeps it
    assert copy["b"][1] is not state["b"][1] and torch.equal(copy["b"][1], state["b"][1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pgd20_evaluation_reads_back_once_on_a_gpu():
    """The docs' target: one host sync for a whole PGD-20 evaluation (the final read-back)."""
    from robustzoo.attacks import AttackContext
    from robustzoo.data import TensorData
    from robustzoo.eval import run_attack
    from robustzoo.plugins import registry

    model = fast.eval_model(_bn_net(), torch.device("cuda"), "bf16").cuda()
    data = TensorData((torch.rand(96, 3, 8, 8) * 255).to(torch.uint8), torch.randint(0, 10, (96,))).to("cuda")
    spec = registry("attacks").get("pgd20")
    ctx = AttackContext(eps=8 / 255, alpha=2 / 255, device="cuda")
    with fast.precision_scope(torch.device("cuda"), "bf16"):
        run_attack(model, data, spec, ctx, batch_size=32)  # warm-up
        assert _cuda_syncs(lambda: run_attack(model, data, spec, ctx, batch_size=32)) == 1
