from __future__ import annotations

import warnings

import pytest
import timm
import torch

import robustzoo  # noqa: F401  (registers the native nets in timm)
from robustzoo.errors import NotFoundError
from robustzoo.models import build_model, count_parameters

CIFAR = dict(num_classes=10, in_chans=3, input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.mark.parametrize("arch,millions", [("preact_resnet18", 11.17), ("wrn34_10", 46.16)])
def test_parameter_counts(arch, millions):
    with torch.device("meta"):
        m = build_model(arch, **CIFAR)
    assert round(count_parameters(m) / 1e6, 2) == millions


@pytest.mark.parametrize("arch", ["preact_resnet18", "wrn28_10", "cnn_mnist", "smallcnn"])
def test_timm_builds_native_nets(arch):
    kw = dict(num_classes=7)
    if arch in ("cnn_mnist", "smallcnn"):
        kw.update(in_chans=1)
    with torch.device("meta"):
        m = timm.create_model(arch, **kw)
    assert m.fc.out_features == 7 if hasattr(m, "fc") else m.classifier[-1].out_features == 7


def test_normalisation_is_inside_the_model_and_saved():
    m = build_model("cnn_mnist", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.3,), std=(0.2,))
    sd = m.state_dict()
    assert torch.allclose(sd["normalize.mean"].flatten(), torch.tensor([0.3]))
    assert m(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    x = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(m.normalize(x), torch.zeros_like(x))


def test_any_timm_model_by_name():
    m = build_model("timm/resnet18", **CIFAR)
    assert m.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert "normalize.mean" in m.state_dict()


def test_unknown_architecture_suggests():
    with pytest.raises(NotFoundError, match="preact_resnet18"):
        build_model("preact_resnet", **CIFAR)


def test_smallcnn_rejects_tiny_inputs():
    from robustzoo.errors import UsageError

    with pytest.raises(UsageError, match="cnn_mnist"):
        build_model("smallcnn", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.0,), std=(1.0,))


NETS = {"preact_resnet18": (3, 32), "wrn28_10": (3, 32), "cnn_mnist": (1, 28), "smallcnn": (1, 28)}
HEADS = {"preact_resnet18": ("fc", 512), "wrn28_10": ("fc", 640), "cnn_mnist": ("fc", 100),
         "smallcnn": ("classifier.5", 200)}


@pytest.mark.parametrize("arch", sorted(NETS))
def test_native_nets_have_timms_model_interface(arch):
    c, size = NETS[arch]
    torch.manual_seed(0)
    m = build_model(arch, num_classes=10, in_chans=c, input_size=(size, size), mean=(0.3,) * c,
                    std=(0.2,) * c).eval()
    head, width = HEADS[arch]
    assert m.num_classes == 10 and m.head_hidden_size == width
    assert m.get_classifier() is m.get_submodule(head)
    x = torch.rand(2, c, size, size)
    feats = m.forward_features(x)
    pooled = m.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, width)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    torch.testing.assert_close(m.get_classifier()(pooled), m(x))
    # Normalisation is inside forward_features: a constant image at the mean is all zeros there.
    first = m.get_submodule(timm_cfg(arch)["first_conv"])
    seen = []
    hook = first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    m.forward_features(torch.full((1, c, size, size), 0.3))
    hook.remove()
    assert torch.allclose(seen[0], torch.zeros_like(seen[0]))
    keys = list(m.state_dict())
    m.reset_classifier(5)
    assert m.num_classes == 5 and m(x).shape == (2, 5) and list(m.state_dict()) == keys
    m.reset_classifier(0)
    assert m(x).shape == (2, width)


def timm_cfg(arch: str) -> dict:
    from robustzoo.models.timm_bridge import default_cfgs

    return default_cfgs[arch]


@pytest.mark.parametrize("arch", ["preact_resnet18", "wrn34_10", "wrn28_10", "cnn_mnist", "smallcnn"])
def test_timm_default_configs_describe_head_stem_labels_and_paper(arch):
    with torch.device("meta"):
        m = timm.create_model(arch, num_classes=10, in_chans=NETS.get(arch, (3, 32))[0])
    cfg = m.pretrained_cfg
    m.get_submodule(cfg["classifier"])  # the names exist in the model
    m.get_submodule(cfg["first_conv"])
    assert cfg["classifier"] == HEADS.get(arch, ("fc",))[0]
    assert len(cfg["label_names"]) == cfg["num_classes"] == 10
    assert cfg["license"] == "apache-2.0" and cfg["paper_ids"].startswith("arXiv:")
    assert cfg["mean"] == (0.0,) * cfg["input_size"][0]  # normalisation is inside the model


def test_run_config_carries_timms_adaptation_keys():
    from robustzoo import runs

    cfg = runs.model_config("smallcnn", 10, (1, 28, 28), (0.28,), (0.35,),
                            {"dataset": "fashion-mnist", "objective": "trades"})
    pcfg = cfg["pretrained_cfg"]
    assert (pcfg["classifier"], pcfg["first_conv"]) == ("classifier.5", "features.0")
    assert pcfg["label_names"][0] == "T-shirt/top" and len(pcfg["label_names"]) == 10
    assert pcfg["license"] == "apache-2.0" and pcfg["paper_ids"] == "arXiv:1901.08573"
    assert pcfg["mean"] == [0.0] and pcfg["std"] == [1.0]  # the model normalises itself...
    assert cfg["model_args"]["mean"] == [0.28] and cfg["model_args"]["std"] == [0.35]  # ...with these
    assert cfg["num_features"] == 64  # channels of the unpooled feature map, as timm records it
    assert pcfg["pool_size"] == [4, 4]  # its height and width at 28x28
    mart = runs.model_config("cnn_mnist", 10, (1, 8, 8), (0.0,), (1.0,), {"dataset": "digits",
                                                                            "objective": "mart"})
    assert mart["pretrained_cfg"]["origin_url"] == "https://openreview.net/forum?id=rklOg6EFwS"
    wrapped = runs.model_config("timm/resnet18", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3,
                                {"dataset": "cifar10", "objective": "at"})
    assert wrapped["pretrained_cfg"]["classifier"] == "model.fc"


# -- timm's model contract (what timm's own tests/test_models.py checks, kept here) ---------

ALL_NETS = ["preact_resnet18", "wrn34_10", "wrn28_10", "cnn_mnist", "smallcnn"]
#: (channels, reduction) of every feature stage, at the default input size.
FEATURES = {"preact_resnet18": [(64, 1), (64, 1), (128, 2), (256, 4), (512, 8)],
            "wrn34_10": [(16, 1), (160, 1), (320, 2), (640, 4)],
            "wrn28_10": [(16, 1), (160, 1), (320, 2), (640, 4)],
            "cnn_mnist": [(32, 1), (32, 2), (64, 2), (64, 4)],
            "smallcnn": [(32, 1), (64, 2), (64, 4)]}
#: (num_features, head_hidden_size, pool_size) at the default input size.
SHAPES = {"preact_resnet18": (512, 512, (4, 4)), "wrn34_10": (640, 640, (8, 8)),
          "wrn28_10": (640, 640, (8, 8)), "cnn_mnist": (64, 100, (7, 7)), "smallcnn": (64, 200, (4, 4))}


def _input(model, batch: int = 2, device: str = "cpu") -> torch.Tensor:
    return torch.rand(batch, *model.pretrained_cfg["input_size"], device=device)


@pytest.mark.parametrize("arch", ALL_NETS)
def test_default_cfg_heads_and_pooling_follow_timm(arch):
    """timm's test_model_default_cfgs: unpooled forward_features of pool_size, pre-logits of
    head_hidden_size, num_classes=0 and global_pool='' through reset_classifier and __init__,
    classifier/first_conv names, device/dtype factory arguments, unknown arguments refused."""
    num_features, hidden, pool = SHAPES[arch]
    model = timm.create_model(arch, device="meta", dtype=torch.float32).eval()
    assert all(p.device.type == "meta" for p in [*model.parameters(), *model.buffers()])
    cfg = model.pretrained_cfg
    assert (model.num_features, model.head_hidden_size, tuple(cfg["pool_size"])) == (num_features, hidden, pool)
    assert model.in_chans == cfg["input_size"][0]
    x = _input(model, device="meta")
    feats = model.forward_features(x)
    assert feats.shape == (2, num_features, *pool)
    assert model.forward_head(feats, pre_logits=True).shape == (2, hidden)
    assert model(x).shape == (2, 10)
    keys = set(model.state_dict())
    assert f"{cfg['classifier']}.weight" in keys and f"{cfg['first_conv']}.weight" in keys
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == (2, hidden)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, num_features, *pool)
    model.reset_classifier(3)  # a new head goes where the net is, in the net's mode and dtype
    head = model.get_classifier()
    assert head.weight.device.type == "meta" and not head.training
    assert timm.create_model(arch, num_classes=0, device="meta")(x).shape == (2, hidden)
    assert timm.create_model(arch, num_classes=0, global_pool="", device="meta")(x).shape == (2, num_features, *pool)
    with pytest.raises(TypeError):
        timm.create_model(arch, device="meta", not_a_model_arg=1)
    from robustzoo.errors import UsageError

    with pytest.raises(UsageError, match="num_classes=0"):
        timm.create_model(arch, global_pool="", device="meta")
    groups = model.group_matcher()
    assert set(groups) == {"stem", "blocks"}


@pytest.mark.parametrize("arch", ALL_NETS)
def test_features_only_and_forward_intermediates(arch):
    """timm's test_model_forward_features / forward_intermediates: every stage of feature_info,
    with its channels and stride, through features_only=True and forward_intermediates."""
    expected = FEATURES[arch]
    device = "meta" if arch.startswith("wrn") else "cpu"  # the WRNs are checked for shapes only
    torch.manual_seed(0)
    feats = timm.create_model(arch, features_only=True, device=device).eval()
    assert list(zip(feats.feature_info.channels(), feats.feature_info.reduction())) == expected
    x = _input(feats, device=device)
    size = x.shape[-1]
    outs = feats(x)
    assert [o.shape[1] for o in outs] == [c for c, _ in expected]
    assert all(o.shape[-1] <= -(-size // r) + 1 for o, (_, r) in zip(outs, expected))
    assert timm.create_model(arch, features_only=True, out_indices=(-1,), device=device)(x)[0].shape == outs[-1].shape

    torch.manual_seed(0)  # the same weights as `feats`
    model = timm.create_model(arch, device=device).eval()
    final, inter = model.forward_intermediates(x)
    assert [t.shape for t in inter] == [o.shape for o in outs]
    if device == "cpu":
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        for ours, theirs in zip(inter, outs):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape for t in only] == [t.shape for t in inter[-2:]]
    with pytest.raises(ValueError):
        model.forward_intermediates(x, indices=[len(expected)])


@pytest.mark.parametrize("arch", ["preact_resnet18", "cnn_mnist", "smallcnn"])
def test_forward_scripts_and_traces(arch):
    """timm's torchscript and fx tests: the forward compiles both ways and gives the same logits."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = timm.create_model(arch).eval()
    x = _input(model, batch=1)
    ref = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ calls torch.jit deprecated
        scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), ref)
    traced = create_feature_extractor(model, return_nodes=[_last_node(model)])
    torch.testing.assert_close(next(iter(traced(x).values())), ref)


def _last_node(model) -> str:
    from torchvision.models.feature_extraction import get_graph_node_names

    return get_graph_node_names(model)[1][-1]


@pytest.mark.parametrize("arch,chans", [("cnn_mnist", 3), ("preact_resnet18", 1)])
def test_in_chans_adapts_the_stem_and_the_normalisation_as_timm_does(arch, chans, tmp_path):
    """A grey net loaded with in_chans=3 sees a grey image copied into 3 channels exactly as
    it saw the grey image; a colour net loads with in_chans=1 (summed stem, averaged mean/std)."""
    from timm.models import save_for_hf

    torch.manual_seed(0)
    src = timm.create_model(arch, mean=(0.3,) * (1 if chans == 3 else 3),
                            std=(0.2,) * (1 if chans == 3 else 3)).eval()
    save_for_hf(src, str(tmp_path / "net"), safe_serialization=True)
    adapted = timm.create_model(f"local-dir:{tmp_path / 'net'}", pretrained=True, in_chans=chans).eval()
    assert adapted.in_chans == chans and adapted.normalize.mean.shape[1] == chans
    assert adapted.get_submodule(adapted.pretrained_cfg["first_conv"]).in_channels == chans
    grey = _input(src)[:, :1]
    if chans == 3:
        torch.testing.assert_close(adapted(grey.expand(-1, 3, -1, -1)), src(grey), rtol=1e-4, atol=1e-5)
    else:  # equal per-channel constants: the summed stem is exact on a grey image too
        torch.testing.assert_close(adapted(grey), src(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_drop_rate_and_drop_path_rate_are_honoured_or_refused():
    from robustzoo.errors import UsageError

    prn = timm.create_model("preact_resnet18", drop_rate=0.3, drop_path_rate=0.1, device="meta")
    assert prn.drop_rate == 0.3
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for layer in (prn.layer1, prn.layer2, prn.layer3, prn.layer4)
             for b in layer]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)  # timm's linear rule
    wrn = timm.create_model("wrn28_10", drop_path_rate=0.2, device="meta")
    assert wrn.block3[-1].drop_path.drop_prob == pytest.approx(0.2)
    # Dropout before the classifier acts in training only.
    torch.manual_seed(0)
    cnn = timm.create_model("cnn_mnist", drop_rate=0.5)
    x = torch.rand(4, 1, 28, 28)
    assert not torch.equal(cnn.train()(x), cnn(x)) and torch.equal(cnn.eval()(x), cnn(x))
    # SmallCNN's dropout is the TRADES one, after its first FC layer: drop_rate sets it.
    assert timm.create_model("smallcnn", device="meta").classifier[2].p == 0.5
    assert timm.create_model("smallcnn", drop_rate=0.1, device="meta").classifier[2].p == 0.1
    for arch in ("cnn_mnist", "smallcnn"):
        with pytest.raises(UsageError, match="no residual branches"):
            timm.create_model(arch, drop_path_rate=0.1, device="meta")
    with pytest.raises(UsageError, match=r"drop_rate 1.5 must be in \[0, 1\)"):
        timm.create_model("preact_resnet18", drop_rate=1.5, device="meta")
