from __future__ import annotations

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
    assert m.num_classes == 10 and m.num_features == width
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
    assert cfg["num_features"] == 200
    mart = runs.model_config("cnn_mnist", 10, (1, 8, 8), (0.0,), (1.0,), {"dataset": "digits",
                                                                            "objective": "mart"})
    assert mart["pretrained_cfg"]["origin_url"] == "https://openreview.net/forum?id=rklOg6EFwS"
    wrapped = runs.model_config("timm/resnet18", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3,
                                {"dataset": "cifar10", "objective": "at"})
    assert wrapped["pretrained_cfg"]["classifier"] == "model.fc"
