"""ganlab.models, the CycleGAN part: gradient flow, shapes at several sizes, the PatchGAN's output-size and
receptive-field arithmetic, spectral norm, argument errors.

Everything runs on a CPU with tiny widths (ngf, ndf of 2 to 8); the real-size counts are checked in the notebook.
"""
import pytest
import torch, torch.nn as nn

from ganlab.core import GanlabError
from ganlab.models import (CYCLEGAN_GENERATORS, CYCLEGAN_NORMS, ResnetGenerator, UnetGenerator, PatchDiscriminator,
                           cyclegan_generator, cyclegan_init, receptive_field, count_params)


def images(n, c, h, w=None, seed=0):
    "A seeded batch of images in [-1, 1]"
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w or h, generator=g) * 2 - 1


def dead_biases(model):
    "The biases of convolutions that an instance norm follows directly: the norm subtracts them again"
    dead = set()
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for a, b in zip(seq, list(seq)[1:]):
                if isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(b, nn.InstanceNorm2d) and a.bias is not None: dead.add(id(a.bias))
    return dead


# --- gradient flow

MODELS = {'resnet6': lambda norm: ResnetGenerator(ngf=4, blocks=6, norm=norm, dropout=0.5),
          'unet': lambda norm: UnetGenerator(32, ngf=4, norm=norm),
          'patch': lambda norm: PatchDiscriminator(ndf=4, norm=norm),
          'patch-sn': lambda norm: PatchDiscriminator(ndf=4, layers=2, norm=norm, spectral=True)}

@pytest.mark.parametrize('norm', CYCLEGAN_NORMS)
@pytest.mark.parametrize('name', list(MODELS))
def test_gradients_reach_every_parameter(name, norm):
    "Every parameter gets a finite gradient, nonzero except for the biases an instance norm cancels (zero up to rounding)"
    torch.manual_seed(0)
    m = MODELS[name](norm).double().train()
    x = images(2, 3, 32).double().requires_grad_()
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad.abs().max() > 0
    dead = dead_biases(m)
    assert bool(dead) == (norm == 'instance')
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.isfinite().all(), n
        g = p.grad.abs().max().item()
        if id(p) in dead: assert g < 1e-10, (n, g)
        else: assert g > 1e-8, (n, g)


# --- generators at several sizes

@pytest.mark.parametrize('size', [64, 128])
@pytest.mark.parametrize('arch', CYCLEGAN_GENERATORS)
def test_generators_keep_the_shape(arch, size):
    torch.manual_seed(0)
    g = cyclegan_generator(arch, ngf=4, size=size).eval()
    x = images(2, 3, size)
    with torch.no_grad(): y = g(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert -1 <= y.min() and y.max() <= 1
    assert not torch.equal(y[0], y[1])  # the output depends on the input


@pytest.mark.parametrize('norm', CYCLEGAN_NORMS)
def test_generators_take_other_channels_and_rectangles(norm):
    torch.manual_seed(0)
    with torch.no_grad():
        assert ResnetGenerator(channels=1, ngf=4, blocks=2, norm=norm)(images(2, 1, 24, 40)).shape == (2, 1, 24, 40)
        assert UnetGenerator(16, channels=4, ngf=4, norm=norm)(images(2, 4, 32, 16)).shape == (2, 4, 32, 16)


def test_unet_depth_and_bottleneck():
    "log2(size) halvings: the innermost map is 1x1, and 2x2 for an image twice the size"
    seen = []
    u = UnetGenerator(32, ngf=4, dropout=0).eval()
    innermost = [m for m in u.modules() if isinstance(m, nn.Conv2d)][-1]
    innermost.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:])))
    with torch.no_grad(): u(images(1, 3, 32)); u(images(1, 3, 64))
    assert u.depth == 5 and seen == [(1, 1), (2, 2)]


def test_unet_skips_carry_the_input():
    "Zeroing the innermost level changes the output but leaves it a function of the input, through the skips"
    torch.manual_seed(0)
    u = UnetGenerator(16, ngf=4, dropout=0).eval()
    x = images(2, 3, 16)
    with torch.no_grad():
        y = u(x)
        for p in [m for m in u.modules() if isinstance(m, nn.ConvTranspose2d)][0].parameters(): p.zero_()
        z = u(x)
    assert not torch.allclose(y, z) and not torch.equal(z[0], z[1])


def test_instance_norm_models_are_the_same_in_train_and_eval_mode():
    "No affine parameters and no running statistics: eval mode computes what train mode does (without dropout)"
    torch.manual_seed(0)
    x = images(2, 3, 32)
    for m in (ResnetGenerator(ngf=4, blocks=2), UnetGenerator(32, ngf=4, dropout=0), PatchDiscriminator(ndf=4)):
        with torch.no_grad(): torch.testing.assert_close(m.train()(x), m.eval()(x))
        assert not any(isinstance(b, nn.InstanceNorm2d) and (b.affine or b.track_running_stats) for b in m.modules())


def test_dropout_placement():
    "ResNet: one dropout per block when asked; U-Net: the three innermost decoder stages"
    assert sum(isinstance(m, nn.Dropout) for m in ResnetGenerator(ngf=4, blocks=6).modules()) == 0
    assert sum(isinstance(m, nn.Dropout) for m in ResnetGenerator(ngf=4, blocks=6, dropout=0.3).modules()) == 6
    for size in (16, 64, 256):
        u = UnetGenerator(size, ngf=2)
        ups = [m for m in u.modules() if isinstance(m, nn.Sequential) and isinstance(m[1], nn.ConvTranspose2d)]  # innermost first
        assert [any(isinstance(x, nn.Dropout) and x.p == 0.5 for x in up) for up in ups] == [True] * 3 + [False] * (len(ups) - 3)


def test_counts_at_the_real_width():
    "CycleGAN's published counts; batch norm drops the biases it follows and adds a scale and a shift per channel"
    assert count_params(ResnetGenerator()) == 11_378_179 and count_params(ResnetGenerator(blocks=6)) == 7_837_699
    assert count_params(PatchDiscriminator()) == 2_764_737
    assert count_params(PatchDiscriminator(norm='none')) == 2_764_737
    assert count_params(PatchDiscriminator(norm='batch')) == 2_764_737 - (128 + 256 + 512) + 2 * (128 + 256 + 512)


# --- the PatchGAN's arithmetic

def conv_out(h, k, s, p):
    return (h + 2 * p - k) // s + 1

@pytest.mark.parametrize('layers', [1, 2, 3, 4])
def test_patch_output_size_matches_conv_arithmetic(layers):
    torch.manual_seed(0)
    d = PatchDiscriminator(ndf=2, layers=layers)
    least = 3 * 2 ** layers
    for h, w in [(least, least), (least + 1, 2 * least + 3), (100, 77), (128, 128)]:
        side = []
        for n in (h, w):
            for _ in range(layers): n = conv_out(n, 4, 2, 1)
            side.append(conv_out(conv_out(n, 4, 1, 1), 4, 1, 1))
        with torch.no_grad(): y = d(images(1, 3, h, w))
        assert y.shape == (1, 1, *side), (h, w)
        assert side == [h // 2 ** layers - 2, w // 2 ** layers - 2]
    with pytest.raises(GanlabError, match=f'at least {least}'): d(images(1, 3, least - 1, 64))


@pytest.mark.parametrize('layers', [1, 2, 3, 4])
def test_receptive_field_is_what_one_logit_sees(layers):
    "The gradient of one logit in the middle is nonzero on exactly a receptive_field(layers) square of the input"
    torch.manual_seed(0)
    r = receptive_field(layers)
    d = PatchDiscriminator(ndf=2, layers=layers, norm='none').double()
    n = 2 * r + 2 ** layers
    x = torch.randn(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    y = d(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows, cols = x.grad[0].abs().sum(0).nonzero(as_tuple=True)
    assert 0 < rows.min() and rows.max() < n - 1 and 0 < cols.min() and cols.max() < n - 1
    assert rows.max() - rows.min() + 1 == r and cols.max() - cols.min() + 1 == r
    assert d.receptive_field == r


def test_receptive_field_formula():
    "Each stride-2 4x4 convolution maps a window r to 2r + 2, from 7 after the two stride-1 ones: 9 * 2**n - 2"
    assert [receptive_field(n) for n in range(1, 7)] == [9 * 2 ** n - 2 for n in range(1, 7)]
    assert receptive_field() == 70


def test_spectral_norm_after_init():
    "cyclegan_init reinitialises the original weights and refits the power iteration: each sigma is 1 in eval mode"
    torch.manual_seed(0)
    d = PatchDiscriminator(ndf=8, spectral=True).eval()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(hasattr(m, 'parametrizations') for m in convs)
    for m in convs:
        assert abs(m.parametrizations.weight.original.std().item() - 0.02) < 0.005
        # 15 power iterations leave a small estimate (the first layer's 8 x 48 matrix has close top singular values)
        assert 0.999 < torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2).item() < 1.05


# --- initialisation and errors

def test_init_statistics():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=16, blocks=2, norm='batch')
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    assert all(m.bias is None for m in convs[:-1]) and convs[-1].bias.abs().sum() == 0
    s = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(s.mean().item() - 1) < 0.01 and abs(s.std().item() - 0.02) < 0.01
    torch.manual_seed(0)
    m = nn.Conv2d(64, 64, 3); cyclegan_init(m, gain=0.1)
    assert abs(m.weight.std().item() - 0.1) < 0.005


@pytest.mark.parametrize('make, message', [
    (lambda: ResnetGenerator(channels=0), 'ResnetGenerator channels: 0 is not a positive integer'),
    (lambda: ResnetGenerator(ngf=1.5), 'ResnetGenerator ngf: 1.5 is not a positive integer'),
    (lambda: ResnetGenerator(norm='layer'), "ResnetGenerator norm: 'layer' is not one of 'instance', 'batch', 'none'"),
    (lambda: ResnetGenerator(dropout=-0.1), 'ResnetGenerator dropout: -0.1 is not in [0, 1)'),
    (lambda: UnetGenerator(96), 'UnetGenerator size: 96 is not a power of two of at least 16'),
    (lambda: UnetGenerator(True), 'UnetGenerator size: True is not'),
    (lambda: UnetGenerator(64, ngf=0), 'UnetGenerator ngf: 0 is not a positive integer'),
    (lambda: UnetGenerator(64, dropout=1), 'UnetGenerator dropout: 1 is not in [0, 1)'),
    (lambda: PatchDiscriminator(ndf=-1), 'PatchDiscriminator ndf: -1 is not a positive integer'),
    (lambda: PatchDiscriminator(norm='Instance'), "PatchDiscriminator norm: 'Instance' is not one of"),
    (lambda: cyclegan_generator('resnet'), "cyclegan_generator arch: 'resnet' is not one of 'resnet9', 'resnet6', 'unet'"),
    (lambda: cyclegan_generator('resnet6', size=66), 'cyclegan_generator size: 66 is not a multiple of 4'),
    (lambda: cyclegan_init(nn.Conv2d(1, 1, 1), gain=-1), 'cyclegan_init gain: -1 is not a positive number'),
])
def test_bad_arguments(make, message):
    with pytest.raises(GanlabError) as e: make()
    assert message in str(e.value)


@pytest.mark.parametrize('model, shape, message', [
    (lambda: ResnetGenerator(ngf=2), (1, 3, 30, 32), 'expected (N, 3, H, W) with H and W multiples of 4, at least 8'),
    (lambda: ResnetGenerator(ngf=2), (1, 3, 4, 4), 'at least 8'),
    (lambda: ResnetGenerator(ngf=2), (3, 32, 32), 'images of shape (3, 32, 32)'),
    (lambda: UnetGenerator(32, ngf=2), (1, 3, 48, 32), 'multiples of 32'),
    (lambda: UnetGenerator(32, ngf=2, channels=1), (1, 3, 32, 32), 'expected (N, 1, H, W)'),
    (lambda: PatchDiscriminator(ndf=2, layers=2), (1, 3, 11, 40), 'at least 12'),
])
def test_bad_inputs(model, shape, message):
    with pytest.raises(GanlabError) as e: model()(torch.zeros(shape))
    assert message in str(e.value)
