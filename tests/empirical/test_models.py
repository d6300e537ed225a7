"""Models: shapes, gradients, parameter counts against published numbers, init, determinism, channels_last."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from empirical.models import ARCHS, ShortcutA, build_model, count_parameters

CIFAR_ARCHS = ["resnet8", "resnet14", "resnet20", "resnet32"]
TV_ARCHS = ["resnet18_cifar", "resnet18", "resnet34", "resnet50"]


def _forward_backward(arch, in_channels, size, num_classes=7, batch=4):
    torch.manual_seed(0)
    model = build_model(arch, num_classes, in_channels, size)
    out = model(torch.randn(batch, in_channels, size, size))
    assert out.shape == (batch, num_classes)
    F.cross_entropy(out, torch.arange(batch) % num_classes).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_archs_listed():
    # "quadratic": the closure test's one-parameter model (empirical/quadratic.py), no convolution, no BatchNorm
    assert set(ARCHS) == set(CIFAR_ARCHS + TV_ARCHS + ["quadratic"])


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_cifar_resnets_forward_backward(arch, in_channels, size):
    _forward_backward(arch, in_channels, size)


@pytest.mark.parametrize("arch", TV_ARCHS)
@pytest.mark.parametrize("in_channels,size", [(1, 8), (1, 28), (3, 32)])
def test_torchvision_resnets_forward_backward(arch, in_channels, size):
    _forward_backward(arch, in_channels, size)


def _cifar_resnet_params(n, in_channels, num_classes):
    """Hand count for He et al.'s 6n+2 CIFAR ResNet with option-A shortcuts: a 3x3 conv has 9*in*out weights
    (no bias), a BatchNorm 2*out (weight, bias), the classifier 64*k + k."""
    total = 9 * in_channels * 16 + 2 * 16
    in_planes = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += 9 * in_planes * planes + 2 * planes + 9 * planes * planes + 2 * planes
            in_planes = planes
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("arch,n", [("resnet8", 1), ("resnet14", 2), ("resnet20", 3), ("resnet32", 5)])
@pytest.mark.parametrize("in_channels,num_classes", [(3, 10), (1, 10), (3, 100)])
def test_cifar_resnet_parameter_count_by_hand(arch, n, in_channels, num_classes):
    model = build_model(arch, num_classes, in_channels)
    assert count_parameters(model) == _cifar_resnet_params(n, in_channels, num_classes)


def test_parameter_counts_match_published_numbers():
    # He et al. 2016, Table 6 (CIFAR-10): ResNet-20 0.27M, ResNet-32 0.46M (rounded to 0.01M).
    assert abs(count_parameters(build_model("resnet20", 10)) - 0.27e6) < 0.005e6
    assert abs(count_parameters(build_model("resnet32", 10)) - 0.46e6) < 0.005e6
    # torchvision's model docs (ImageNet weights metadata, 1000 classes): exact num_params.
    assert count_parameters(build_model("resnet18", 1000, image_size=224)) == 11_689_512
    assert count_parameters(build_model("resnet50", 1000, image_size=224)) == 25_557_032
    # CIFAR ResNet-18 = torchvision ResNet-18 (10 classes: 11,181,642 = 11,689,512 - 513*990) with the 7x7x3x64
    # stem (9,408 weights) replaced by a 3x3x3x64 one (1,728): 11,173,962, the usual "11.17M".
    assert count_parameters(build_model("resnet18_cifar", 10)) == 11_689_512 - 513 * 990 - 9408 + 1728


def test_count_parameters_counts_shared_tensors_once_and_skips_buffers():
    lin = nn.Linear(3, 2)
    assert count_parameters(nn.Sequential(lin, lin)) == 3 * 2 + 2
    assert count_parameters(nn.BatchNorm2d(5)) == 10  # running mean/var are buffers


def test_every_network_uses_batchnorm_and_in_channels():
    for arch in CIFAR_ARCHS + TV_ARCHS:
        model = build_model(arch, 3, in_channels=1, image_size=8)
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), arch
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == 1, arch


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    assert sum(p.numel() for p in ShortcutA(16, 32, 2).parameters()) == 0


def test_kaiming_normal_init_scale():
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    conv = model.layers[-1].conv2  # 64 -> 64, 3x3: fan_out = 64 * 9
    expected = math.sqrt(2.0 / (64 * 9))  # He et al. 2015: std = sqrt(2 / fan)
    # 36,864 samples: the sample std has relative standard error 1/sqrt(2 * 36864) = 0.4%; allow 2%.
    assert abs(conv.weight.std().item() / expected - 1) < 0.02
    bn = model.layers[0].bn1
    assert torch.equal(bn.weight, torch.ones(16)) and torch.equal(bn.bias, torch.zeros(16))


@pytest.mark.parametrize("arch", ["resnet20", "resnet18_cifar"])
def test_deterministic_given_seed(arch):
    def state(seed):
        torch.manual_seed(seed)
        return build_model(arch, 10).state_dict()

    a, b, c = state(1), state(1), state(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", ["resnet8", "resnet18_cifar", "resnet50"])
def test_channels_last_matches_contiguous(arch):
    # Same function, different float32 summation order. Tolerance: in train mode ResNet-50's last stage
    # normalises over only 8 values per channel (1x1 maps), which amplifies float32 rounding; against a float64
    # reference both layouts are then off by up to ~1e-3 on logits of size ~2, so 3e-3 is allowed.
    torch.manual_seed(0)
    model = build_model(arch, 10, 3, 32)
    x = torch.randn(8, 3, 32, 32)
    for train in (True, False):
        model.train(train)
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
        assert torch.allclose(ref, cl, atol=3e-3, rtol=1e-3), (arch, train)
    cl.sum().backward()


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet21", 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet20", 0)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("resnet20", 10, in_channels=0)
