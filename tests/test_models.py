"""ganlab.models: spectral norm, the frozen GoogLeNet backbone, DCGAN initialisation, gradient flow, weights errors.

Everything runs on a CPU with small widths and batches; no pretrained weights are needed (a randomly initialised
torchvision GoogLeNet saved to a temporary file stands in for `googlenet-1378be20.pth`).
"""
import pytest
import torch, torch.nn as nn
from torchvision.models import GoogLeNet

from ganlab.core import GanlabError
from ganlab.models import (SIZES, Generator, Discriminator, GoogLeNetDiscriminator, MLPGenerator, MLPDiscriminator,
                           dcgan_init, trainable_weight, load_googlenet, googlenet_backbone, count_params, GOOGLENET_ENV)


def sigma(m):
    "Largest singular value of `m.weight` as spectral norm reshapes it (ConvTranspose2d: output channels first)"
    w = m.weight.detach()
    if isinstance(m, nn.ConvTranspose2d): w = w.transpose(0, 1)
    return torch.linalg.matrix_norm(w.flatten(1), 2).item()


def spectral_layers(model):
    return [m for m in model.modules() if hasattr(m, 'parametrizations') and hasattr(m.parametrizations, 'weight')]


@pytest.fixture(scope='module')
def googlenet_file(tmp_path_factory):
    "A state dict in the key layout of torchvision's GoogLeNet file (aux1, aux2 and fc included), random weights"
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp('googlenet')/'googlenet-random.pth'
    torch.save(GoogLeNet(aux_logits=True, init_weights=False).state_dict(), p)
    return p


# --- spectral norm

@pytest.mark.parametrize('make', [lambda: Discriminator(32, width=16, norm='none', spectral=True),
                                  lambda: Discriminator(64, width=8, norm='batch', spectral=True, head='dense'),
                                  lambda: Generator(32, latent=16, width=8, spectral=True),
                                  lambda: Generator(32, latent=16, width=8, spectral=True, up='upsample', project='dense'),
                                  lambda: GoogLeNetDiscriminator(spectral=True)])
def test_spectral_norm_constrains_largest_singular_value(make):
    torch.manual_seed(0)
    model = make()
    layers = spectral_layers(model)
    assert layers and all(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for m in layers)
    if not isinstance(model, GoogLeNetDiscriminator):  # every conv and linear layer is under spectral norm
        assert len(layers) == sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for m in model.modules())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    is_g = isinstance(model, Generator)
    def batch(): return torch.randn(4, model.latent) if is_g else torch.rand(4, 3, model.size, model.size) * 2 - 1
    model.train()
    opt.zero_grad(); model(batch()).square().mean().backward(); opt.step()  # move the weights far from their init
    for _ in range(10):  # each train-mode pass runs one power iteration
        with torch.no_grad(): model(batch())
    model.eval()  # reading .weight in eval mode does not iterate further
    for m in layers:
        assert sigma(m) == pytest.approx(1., abs=0.03), m
    raw = [torch.linalg.matrix_norm(trainable_weight(m).detach().flatten(1), 2).item() for m in layers]
    assert max(abs(r - 1) for r in raw) > 0.1  # the unconstrained weights are not already there


def test_no_spectral_norm_by_default():
    assert not spectral_layers(Generator(32, width=8)) and not spectral_layers(Discriminator(32, width=8))
    assert not spectral_layers(GoogLeNetDiscriminator(spectral=False).head)


# --- frozen GoogLeNet backbone

def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if 'running_' in k or 'num_batches_tracked' in k}


def test_frozen_backbone_gets_no_gradients_and_keeps_bn_stats(googlenet_file):
    torch.manual_seed(0)
    d = GoogLeNetDiscriminator(weights=googlenet_file, freeze_backbone=True).train()
    assert d.training and d.head.training and not any(m.training for m in d.backbone.modules())
    before = _bn_stats(d.backbone)
    x = (torch.rand(4, 3, 64, 64) * 2 - 1).requires_grad_()
    d(x).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in d.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.head.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator still gets its gradient through the backbone
    after = _bn_stats(d.backbone)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    d.eval().train()  # switching modes again keeps the backbone in eval mode
    assert d.training and not d.backbone.training
    assert count_params(d, trainable=True) == 1025


def test_unfrozen_backbone_trains_and_updates_bn_stats(googlenet_file):
    torch.manual_seed(0)
    d = GoogLeNetDiscriminator(weights=googlenet_file).train()
    before = _bn_stats(d.backbone)
    d(torch.rand(4, 3, 64, 64) * 2 - 1).sum().backward()
    assert all(p.grad is not None for p in d.parameters())
    after = _bn_stats(d.backbone)
    assert not torch.equal(before['conv1.bn.running_mean'], after['conv1.bn.running_mean'])


# --- DCGAN initialisation

@pytest.mark.parametrize('spectral', [False, True])
@pytest.mark.parametrize('project', ['conv', 'dense'])
def test_dcgan_init_statistics(spectral, project):
    torch.manual_seed(0)
    g, d = Generator(64, project=project, spectral=spectral), Discriminator(64, spectral=spectral, norm='batch')
    for model in (g, d):
        ws = [trainable_weight(m).detach() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
        big = [w for w in ws if w.numel() >= 100_000]
        assert big
        for w in big:
            assert w.std().item() == pytest.approx(0.02, rel=0.03) and abs(w.mean().item()) < 1e-3
        biases = [m.bias for m in model.modules() if getattr(m, 'bias', None) is not None]
        assert all(torch.all(b == 0) for b in biases)
        bn = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
        assert bn.mean().item() == pytest.approx(1., abs=0.005) and bn.std().item() == pytest.approx(0.02, rel=0.15)


def test_dcgan_init_on_instance_and_layer_norm_and_linear():
    torch.manual_seed(0)
    for norm, kind in (('instance', nn.InstanceNorm2d), ('layer', nn.GroupNorm)):
        d = Discriminator(64, norm=norm, head='dense')
        w = torch.cat([m.weight.detach() for m in d.modules() if isinstance(m, kind)])
        assert w.mean().item() == pytest.approx(1., abs=0.005) and w.std().item() == pytest.approx(0.02, rel=0.15)
    lin = nn.Linear(1000, 500)
    lin.apply(dcgan_init)
    assert lin.weight.std().item() == pytest.approx(0.02, rel=0.02) and torch.all(lin.bias == 0)


# --- gradients reach every trainable parameter

G_OPTIONS = [{}, dict(norm='none', up='upsample', project='dense', spectral=True, act='leaky')]
D_OPTIONS = [{}, dict(norm='layer', head='dense', spectral=True, dropout=0.3), dict(norm='instance'), dict(norm='none')]


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('gi', range(len(G_OPTIONS)))
@pytest.mark.parametrize('di', range(len(D_OPTIONS)))
def test_gradients_reach_every_parameter(size, gi, di):
    torch.manual_seed(0)
    g = Generator(size, latent=8, width=4, **G_OPTIONS[gi]).train()
    d = Discriminator(size, width=4, **D_OPTIONS[di]).train()
    d(g(torch.randn(4, 8))).mean().backward()
    for name, model in (('G', g), ('D', d)):
        for k, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f'{name} {k}'


def test_mlp_gradients_reach_every_parameter():
    torch.manual_seed(0)
    g, d = MLPGenerator(), MLPDiscriminator()
    d(g(torch.randn(4, 100))).mean().backward()
    for model in (g, d):
        for k, p in model.named_parameters(): assert p.grad is not None and p.grad.abs().sum() > 0, k


# --- GoogLeNet weights files

def test_googlenet_full_torchvision_state_dict_loads(googlenet_file):
    sd = torch.load(googlenet_file, weights_only=True)
    assert any(k.startswith('aux1.') for k in sd) and 'fc.weight' in sd  # ignored, not reported
    net = load_googlenet(googlenet_backbone(init=False), googlenet_file)
    assert torch.equal(net.inception5b.branch1.conv.weight, sd['inception5b.branch1.conv.weight'])


def test_googlenet_wrong_keys_give_clear_error(tmp_path, googlenet_file):
    sd = torch.load(googlenet_file, weights_only=True)
    sd['conv1.weight'] = sd.pop('conv1.conv.weight')
    sd['inception3a.branch1.conv.weight'] = torch.zeros(1, 2, 3, 3)
    torch.save(sd, tmp_path/'renamed.pth')
    with pytest.raises(GanlabError) as e: GoogLeNetDiscriminator(weights=tmp_path/'renamed.pth')
    msg = str(e.value)
    assert 'GoogLeNet' in msg and str(tmp_path/'renamed.pth') in msg
    assert 'missing conv1.conv.weight' in msg and 'unexpected conv1.weight' in msg
    assert 'wrong shape inception3a.branch1.conv.weight (1, 2, 3, 3) != (64, 192, 1, 1)' in msg

    torch.save({f'layer{i}.weight': torch.zeros(2) for i in range(10)}, tmp_path/'other.pth')
    with pytest.raises(GanlabError, match=r'missing .* and \d+ more; unexpected layer0.weight.* and 6 more'):
        GoogLeNetDiscriminator(weights=tmp_path/'other.pth')
    torch.save(torch.zeros(3), tmp_path/'tensor.pth')
    with pytest.raises(GanlabError, match='does not hold a state dict'): GoogLeNetDiscriminator(weights=tmp_path/'tensor.pth')
    (tmp_path/'junk.pth').write_bytes(b'not a pickle')
    with pytest.raises(GanlabError, match='not a loadable weights file'): GoogLeNetDiscriminator(weights=tmp_path/'junk.pth')
    with pytest.raises(GanlabError, match='is not a file'): GoogLeNetDiscriminator(weights=tmp_path/'absent.pth')


def test_googlenet_missing_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(GOOGLENET_ENV, raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))  # not torch.hub.set_dir: that would outlive the test
    with pytest.raises(GanlabError, match=r'googlenet-1378be20\.pth .*not found.*downloading is off'):
        GoogLeNetDiscriminator(pretrained=True, download=False)


def test_googlenet_weights_from_environment(googlenet_file, monkeypatch):
    monkeypatch.setenv(GOOGLENET_ENV, str(googlenet_file))
    d = GoogLeNetDiscriminator(pretrained=True, download=False)
    sd = torch.load(googlenet_file, weights_only=True)
    assert d.pretrained and torch.equal(d.backbone.conv1.conv.weight, sd['conv1.conv.weight'])


# --- determinism

def test_deterministic_given_seed():
    def run():
        torch.manual_seed(3)
        g, d = Generator(32, latent=8, width=8), Discriminator(32, width=8, dropout=0.5, spectral=True)
        out = d(g(torch.randn(4, 8)))
        out.mean().backward()
        return out.detach(), [p.grad.clone() for p in g.parameters()]
    torch.use_deterministic_algorithms(True)
    try: (o1, g1), (o2, g2) = run(), run()
    finally: torch.use_deterministic_algorithms(False)
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


# --- copies and checkpoints (the engine keeps an EMA copy of G and saves state dicts)

@pytest.mark.parametrize('spectral', [False, True])
def test_deepcopy_and_state_dict_round_trip(spectral):
    import copy
    torch.manual_seed(0)
    g, d = Generator(32, latent=8, width=8, spectral=spectral), Discriminator(32, width=8, spectral=spectral)
    z = torch.randn(4, 8)
    d(g(z)).mean().backward()  # one train-mode pass moves BN statistics and spectral norm's u, v
    g.eval(); d.eval()
    with torch.no_grad(): want = d(g(z))
    for g2, d2 in [(copy.deepcopy(g), copy.deepcopy(d)), (Generator(32, latent=8, width=8, spectral=spectral), Discriminator(32, width=8, spectral=spectral))]:
        g2.load_state_dict(g.state_dict()); d2.load_state_dict(d.state_dict())
        g2.eval(); d2.eval()
        with torch.no_grad(): assert torch.equal(d2(g2(z)), want)
