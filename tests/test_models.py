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
