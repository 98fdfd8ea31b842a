"""float16 mixed precision (`amp='fp16'`: what `amp='auto'` gives on a T4) on the CPU: every family trains under float16
autocast with a GradScaler, resumes exactly with the scaler's state, and keeps float32 where precision matters.

CPU autocast leaves `torch.mv` in float32 while CUDA's runs it in float16, so the runs here replace `torch.mv` by one
that lowers its inputs to float16 whenever autocast is on, as CUDA does: torch's own spectral norm then fails as it
does on a GPU (a float32 u dotted with a float16 Wv)."""
import json
import numpy as np, pandas as pd, pytest, torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from ganlab.checkpoint import load_checkpoint
from ganlab.config import FAMILIES
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab.models import Float32SpectralNorm, PatchDiscriminator, spectral_norm32
from ganlab.sngan import ResDiscriminator
from ganlab.train import train

_MV = torch.mv

@pytest.fixture
def cuda_like_mv(monkeypatch):
    "`torch.mv` as CUDA's float16 autocast runs it; the list of whether autocast was on at each call"
    seen = []
    def mv(a, b):
        seen.append(torch.is_autocast_enabled(a.device.type))
        return _MV(a.half(), b.half()) if seen[-1] else _MV(a, b)
    monkeypatch.setattr(torch, 'mv', mv)
    return seen

@pytest.fixture
def output_dtypes():
    "The dtypes of every convolution's and linear layer's outputs while the test runs"
    seen = set()
    def hook(m, args, out):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and isinstance(out, torch.Tensor): seen.add(out.dtype)
    h = nn.modules.module.register_module_forward_hook(hook)
    yield seen
    h.remove()

@pytest.fixture(scope='module')
def data():
    imgs, labels = draw_digits(64, seed=3, size=16)
    rng = np.random.default_rng(0)
    return {'digits': ImageArrayDataset(imgs), 'labelled': ImageArrayDataset(imgs, labels=labels, classes=[f'd{i}' for i in range(10)]),
            'grey': ImageArrayDataset(draw_digits(32, seed=0, size=28)[0].mean(-1, keepdims=True).astype(np.uint8)),
            'colour64': ImageArrayDataset(draw_digits(8, seed=0, size=64)[0]),
            'pairs': {'monet': (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8), 'photo': draw_digits(8, seed=1, size=32)[0]}}

RUN = dict(amp='fp16', device='cpu', epochs=1, log_every=1, tensorboard=False, progress=False)
TINY = dict(RUN, size=16, batch=16, g_width=8, d_width=8, latent=16, samples=4)  # 4 steps an epoch
TRANSLATOR = dict(RUN, size=32, ngf=4, ndf=4, g_arch='resnet6', batch=2, samples=2)  # 6 training photos: 3 steps an epoch
# id: (family, data, settings). The scaler starts at 2^16 and halves after each step that overflows (a skipped step):
# the epochs are enough for every optimiser to take real steps after the scale has come down
CASES = {
    'dcgan': ('dcgan', 'digits', dict(TINY, ema=0.9, label_smooth=0.1)),
    'dcgan-r1': ('dcgan', 'digits', dict(TINY, loss='hinge', r1_gamma=1.0, diffaug='color,translation,cutout')),
    'dcgan-wgan-gp-sn': ('dcgan', 'digits', dict(TINY, loss='wgan-gp', g_norm='none', d_norm='none', spectral=True)),
    'sngan': ('dcgan', 'digits', dict(TINY, arch='resnet', loss='hinge', spectral=True, epochs=2)),
    'cgan-sn': ('cgan', 'labelled', dict(TINY, spectral=True, loss='hinge', epochs=2)),
    'mlp': ('mlp', 'grey', dict(RUN, batch=16, g_hidden='32,32', d_hidden='32', samples=4)),
    # the backbone frozen: float16 convolution weight gradients are very slow on a CPU (R1 and the spectral-norm head are on)
    'googlenet': ('googlenet', 'colour64', dict(RUN, batch=4, pretrained=False, freeze_backbone=True, g_width=8, latent=16, samples=2)),
    'cyclegan-sn': ('cyclegan', 'pairs', dict(TRANSLATOR, pool=3, spectral=True, epochs=3)),
    'cut': ('cut', 'pairs', dict(TRANSLATOR, nce_width=16, nce_patches=64, epochs=3)),  # the generator's first real step is the 9th
}

def test_every_family_is_covered():
    assert set(FAMILIES) <= {f for f, _, _ in CASES.values()}

def _check_float16_run(out, steps):
    "The run in `out` trained `steps` steps under float16 autocast with an enabled GradScaler, its losses finite, every optimiser stepping"
    assert json.loads((out/'metadata.json').read_text())['amp'] == 'float16'
    df = pd.read_csv(out/'metrics.csv')
    vals = df.drop(columns=[c for c in df.columns if c in ('epoch', 'step', 'seconds', 'img_per_s', 'fid', 'mifid', 'lr')]).dropna(axis=1, how='all')
    assert len(df) == steps and {'loss_d', 'loss_g'} <= set(vals.columns)
    raw = pd.read_csv(out/'metrics.csv', dtype=str, keep_default_na=False)[list(vals.columns)]
    logged = [float(v) for v in raw.to_numpy().ravel() if v != '']  # lazy penalties leave the other steps' cells empty
    assert np.isfinite(logged).all(), vals
    ck = load_checkpoint(out/'checkpoints'/'last.pt')
    sc = ck['scaler']
    assert ck['step'] == steps and sc and 0 < sc['scale'] <= 2.0 ** 16  # an enabled scaler saves its state (a disabled one saves {})
    for k, o in ck['opts'].items():  # Adam counts the steps it took: the scaler skips those with inf or NaN gradients
        assert o['state'] and max(float(st['step']) for st in o['state'].values()) >= 1, f'optimiser {k} never stepped'
    return sc

SLOW_CASES = {'sngan', 'googlenet', 'cyclegan-sn', 'cut'}  # seconds each on a 2-core CPU: the ResNet, the GoogLeNet and the translators

@pytest.mark.parametrize('case', [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES])
def test_family_trains_in_float16(tmp_path, data, case, cuda_like_mv, output_dtypes):
    family, key, kw = CASES[case]
    t = train(family, dataset=data[key], out=tmp_path/'r', quiet=True, **kw)
    assert t.amp is torch.float16 and t.scaler.is_enabled()
    assert torch.float16 in output_dtypes  # the layers really computed in float16
    _check_float16_run(tmp_path/'r', t.step)
    sn = [p for m in t.task.nets.values() for p in m.modules() if isinstance(p, parametrize.ParametrizationList)]
    if kw.get('spectral') or family == 'googlenet':
        assert sn and all(isinstance(p[0], Float32SpectralNorm) for p in sn)
        assert cuda_like_mv and not any(cuda_like_mv)  # spectral norm ran its power iteration and sigma with autocast off
        for p in sn: assert p[0]._u.dtype == p[0]._v.dtype == p.original.dtype == torch.float32

FRESH = torch.amp.GradScaler('cpu').state_dict()  # a new scaler's state: scale 2^16, no steps counted

@pytest.mark.slow
@pytest.mark.parametrize('case, stop', [('dcgan-r1', 3), ('dcgan-wgan-gp-sn', 5), ('cut', 4)])
def test_resume_in_float16_is_exact(tmp_path, data, case, stop):
    "An interrupted float16 run resumed ends where the uninterrupted one does: weights, optimisers, the scaler, the metrics"
    family, key, kw = CASES[case]
    kw = dict(kw, epochs=max(2, kw['epochs']))
    a = train(family, dataset=data[key], out=tmp_path/'a', quiet=True, **kw)
    t = train(family, dataset=data[key], out=tmp_path/'b', quiet=True, until_step=stop, **kw)
    saved = load_checkpoint(tmp_path/'b'/'checkpoints'/'last.pt')['scaler']
    assert saved == t.scaler.state_dict() != FRESH  # a fresh scaler on resuming would not do
    b = train(family, dataset=data[key], out=tmp_path/'b', quiet=True, resume=True)
    assert b.step == a.step > stop
    _check_float16_run(tmp_path/'b', b.step)
    sa, sb = a.state(), b.state()
    assert sa['scaler'] == sb['scaler']
    for k in sa['nets']:
        for n, v in sa['nets'][k].items(): assert torch.equal(v, sb['nets'][k][n]), (k, n)
    for k in sa['opts']:
        for i, st in sa['opts'][k]['state'].items():
            for n, v in st.items(): assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb['opts'][k]['state'][i][n])), (k, i, n)
    ra, rb = (pd.read_csv(tmp_path/r/'metrics.csv').drop(columns=['seconds', 'img_per_s']) for r in 'ab')
    assert ra.equals(rb)

def test_a_resumed_run_loads_the_saved_scaler(tmp_path, data, monkeypatch):
    "The scaler's state round-trips: resuming loads the saved scale and growth count into the run's scaler"
    family, key, kw = CASES['dcgan']
    t = train(family, dataset=data[key], out=tmp_path/'r', quiet=True, until_step=2, **dict(kw, epochs=2))
    saved = load_checkpoint(tmp_path/'r'/'checkpoints'/'last.pt')['scaler']
    assert saved == t.scaler.state_dict() != FRESH
    seen, load = [], torch.amp.GradScaler.load_state_dict
    def spy(self, state): seen.append(dict(state)); return load(self, state)
    monkeypatch.setattr(torch.amp.GradScaler, 'load_state_dict', spy)
    b = train(family, dataset=data[key], out=tmp_path/'r', quiet=True, resume=True)
    assert seen == [saved] and b.step == 8 and b.scaler.is_enabled()

# ---- float32 by construction

@pytest.mark.parametrize('make, args', [
    (lambda: ResDiscriminator(16, width=8, classes=10), lambda: (torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([1, 7]))),  # SNGAN's, projection
    (lambda: PatchDiscriminator(ndf=4, spectral=True), lambda: (torch.rand(2, 3, 32, 32) * 2 - 1,)),
])
def test_spectral_norm_runs_with_autocast_off(make, args, cuda_like_mv, output_dtypes):
    "Whole discriminators under (CUDA-like) float16 autocast: the layers compute in float16, spectral norm in float32"
    torch.manual_seed(0)
    d, x = make().train(), args()
    with torch.autocast('cpu', torch.float16): y = d(*x)  # training mode: a power iteration, then sigma
    assert y.float().isfinite().all() and torch.float16 in output_dtypes
    assert len(cuda_like_mv) >= 3 and not any(cuda_like_mv)
    d.eval()  # no power iteration: the weights with and without autocast are the same u, v's
    layers = [m for m in d.modules() if parametrize.is_parametrized(m, 'weight')]
    with torch.autocast('cpu', torch.float16): w16 = [m.weight.detach() for m in layers]
    for m, w in zip(layers, w16):
        assert w.dtype == m.parametrizations.weight[0]._u.dtype == torch.float32 and torch.equal(w, m.weight.detach())
    assert not any(cuda_like_mv)

def test_torchs_spectral_norm_fails_under_cuda_like_autocast(cuda_like_mv):
    "What the emulation shows: torch's own parametrization cannot run under CUDA's float16 autocast; ours can, with the same state"
    torch.manual_seed(0); a = spectral_norm32(nn.Conv2d(3, 8, 3))
    torch.manual_seed(0); b = spectral_norm(nn.Conv2d(3, 8, 3))
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast('cpu', torch.float16):
        assert a(x).dtype == torch.float16
        with pytest.raises(RuntimeError, match='same dtype'): b(x)
