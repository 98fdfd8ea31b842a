"""The families on the training engine side by side: exact resume, DDP equals one process, bad settings refused clearly.

One test per property, a case per family and setting: DCGAN on 16x16 digits (`digits`), CycleGAN and CUT on 64x64
Monet/photo pairs (`pairs`, both fixtures in conftest.py). What only one family has (CycleGAN's image pools, CUT's
identity PatchNCE and its first-step gradients, DCGAN's networks after DDP) is checked in that family's cases.
"""
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ganlab.core import GanlabError
from ganlab.train import train
from ganlab.launch import launch
from ganlab.checkpoint import load_checkpoint
from ganlab.config import make_config

_OUT = dict(log_every=1, tensorboard=False, progress=False, device='cpu')
TINY = {  # per family: tiny networks on the CPU, two epochs
    # 256 digits, batch 32 -> 8 steps per epoch
    'dcgan': dict(size=16, epochs=2, batch=32, g_width=8, d_width=8, latent=16, samples=4, **_OUT),
    'cgan': dict(size=16, epochs=2, batch=32, g_width=8, d_width=8, latent=16, samples=10, **_OUT),
    # 64x64, tiny widths: 18 training photos (2 held out), batch 2 -> 9 steps per epoch
    'cyclegan': dict(size=64, ngf=4, ndf=4, g_arch='resnet6', epochs=2, batch=2, samples=2, pool=3, **_OUT),
    'cut': dict(size=64, ngf=4, ndf=4, g_arch='resnet6', nce_width=16, nce_patches=64, epochs=2, batch=2, samples=2, **_OUT),
}
DATA = {'dcgan': 'digits', 'cgan': 'labelled_digits', 'cyclegan': 'pairs', 'cut': 'pairs'}  # the fixture each family trains on
STEPS = {'dcgan': 8, 'cgan': 8, 'cyclegan': 9, 'cut': 9}  # steps per epoch
NETS = {'dcgan': ('g', 'd'), 'cgan': ('g', 'd'), 'cyclegan': ('g', 'f', 'd_monet', 'd_photo'), 'cut': ('g', 'heads', 'd')}
STOPS = {'dcgan': (5, 8), 'cgan': (5, 8), 'cyclegan': (4, 9), 'cut': (4, 9)}  # mid-epoch and at the epoch boundary


def _data(request, family): return request.getfixturevalue(DATA[family])


def _states_equal(a, b, nets):
    eq = torch.equal
    for k in nets:
        for n, v in a['nets'][k].items(): assert eq(v, b['nets'][k][n]), (k, n)
    for k in ('g', 'd'):
        sa, sb = a['opts'][k]['state'], b['opts'][k]['state']
        assert set(sa) == set(sb)
        for i in sa:
            for n, v in sa[i].items(): assert eq(torch.as_tensor(v), torch.as_tensor(sb[i][n])), (k, i, n)
    for k, pa in (a['task'].get('pools') or {}).items():  # CycleGAN's image pools
        pb = b['task']['pools'][k]
        assert pa['count'] == pb['count'] and (pa['images'] is None or eq(pa['images'], pb['images'])), k
    if a['task']['ema'] is not None:
        for n, v in a['task']['ema'].items(): assert eq(v, b['task']['ema'][n]), n


# ---- exact resume

RESUME = [  # (family, case, settings beyond TINY)
    ('dcgan', 'bce', dict(loss='bce', label_smooth=0.1, ema=0.9)),
    ('dcgan', 'hinge', dict(loss='hinge', r1_gamma=1.0, diffaug='color,translation,cutout', d_dropout=0.2, d_head='dense')),
    ('dcgan', 'wgan-gp', dict(loss='wgan-gp', g_every=2, g_norm='none', d_norm='none', spectral=True)),
    ('dcgan', 'lsgan', dict(loss='lsgan', up='upsample', project='dense', d_norm='instance')),
    ('dcgan', 'rpgan', dict(loss='rpgan', r1_gamma=0.5, r2_gamma=0.5, penalty_every=3, beta1=0.0, ema=0.9)),  # R3GAN's, lazy
    ('cgan', 'ac', dict(cond='ac', ema=0.9)),
    ('cgan', 'd2dce', dict(cond='d2dce', cond_weight=0.5, diffaug='translation,cutout')),
    ('cyclegan', 'own', dict()),  # CycleGAN's own: LSGAN, identity 0.5, pool, augmentation
    ('cyclegan', 'hinge', dict(loss='hinge', identity=0.0, diffaug='color,translation,cutout', ema=0.9, g_arch='unet', decay_epochs=1)),
    ('cyclegan', 'bce', dict(loss='bce', norm='batch', g_dropout=0.2, spectral=True, augment=False)),
    ('cut', 'own', dict()),  # CUT's own: LSGAN, identity PatchNCE, the seed's augmentation, Xavier init
    ('cut', 'fastcut', dict(nce_idt=False, lambda_nce=10.0, flip_equivariance=True, diffaug='color,translation,cutout', ema=0.9,
                            label_smooth=0.1, rotate=15.0, zoom=0.3, lr_scaling='sqrt', decay_epochs=1)),  # FastCUT with every trick
    ('cut', 'hinge', dict(loss='hinge', norm='batch', g_dropout=0.2, spectral=True, augment=False, init='normal',
                          nce_layers='input,down2,block3')),
]


@pytest.mark.slow
@pytest.mark.parametrize('family, extra, stop', [pytest.param(f, e, s, id=f'{f}-{c}-{s}') for f, c, e in RESUME for s in STOPS[f]])
def test_resume_is_bitwise(tmp_path, request, family, extra, stop):
    data, kw = _data(request, family), dict(TINY[family], **extra)
    a = train(family, dataset=data, out=tmp_path/'a', quiet=True, **kw)
    assert a.step == 2 * STEPS[family]
    assert not (tmp_path/'b'/'checkpoints').exists()
    t = train(family, dataset=data, out=tmp_path/'b', quiet=True, until_step=stop, **kw)
    assert t.step == stop
    b = train(family, dataset=data, out=tmp_path/'b', quiet=True, resume=True)
    _states_equal(a.state(), b.state(), NETS[family])
    ra, rb = (pd.read_csv(tmp_path/r/'metrics.csv').drop(columns=['seconds', 'img_per_s']) for r in 'ab')
    assert ra.equals(rb)
    if family == 'cyclegan': assert a.task.pools['monet'].count == 3
    if family == 'cyclegan': assert ra[['loss_d', 'loss_g', 'cycle']].notna().all().all()
    if family == 'cut': assert ra[['loss_d', 'loss_g', 'nce']].notna().all().all()
    if family == 'cut': assert ra['nce_identity'].notna().all() == kw.get('nce_idt', True)
    if family == 'cgan': assert ra[['cls_d', 'cls_g']].notna().all().all()
    if kw.get('loss') == 'rpgan': assert ra['penalty'].notna().tolist() == [(s - 1) % 3 == 0 for s in ra['step']]  # steps 0, 3, 6, ...
    assert (tmp_path/'a'/'samples'/'epoch_002.png').read_bytes() == (tmp_path/'b'/'samples'/'epoch_002.png').read_bytes()


# ---- DDP: two gloo processes equal one
# Every case runs one epoch in float32 (`amp='off'`: the comparison is to float32 rounding, and `amp='auto'` may choose bf16
# on a CPU that is faster with it). `exact`: the first rows of metrics.csv agree to 1e-5; `drift`: (rtol, atol) for the
# whole epoch, None where every row is exact.

DDP_COLS = {'dcgan': ['loss_d', 'loss_g', 'd_real', 'd_fake', 'penalty'],
            'cyclegan': ['loss_d', 'loss_g', 'd_real', 'd_fake', 'cycle', 'identity'],
            'cut': ['loss_d', 'loss_g', 'd_real', 'd_fake', 'nce', 'nce_identity']}
DDP = [
    # DCGAN: per-process BatchNorm statistics, dropout and DiffAugment's draws differ by design, so none of them here;
    # SyncBatchNorm (CUDA only) covers BN on GPUs. Every step and the networks at the end agree to float32 rounding.
    pytest.param('dcgan', dict(g_norm='none', d_norm='none', diffaug='', loss='bce', label_smooth=0.1, r1_gamma=0.5, ema=0.9,
                               r2_gamma=0.0, penalty_every=1, beta1=0.5, beta2=0.999), 8, None,  # the BCE recipe as it was
                 id='dcgan-bce'),
    pytest.param('dcgan', dict(g_norm='none', d_norm='none', diffaug='', loss='wgan-gp', g_every=2), 8, None, id='dcgan-wgan-gp'),
    # CycleGAN: instance norm works image by image and the pool is global, so two processes of one image see what one
    # process of two sees. The first steps agree to float rounding; later ones drift apart slowly (1e-2 by step 9). Adam
    # divides each gradient by its own size, so elements whose gradients are near rounding noise (a bias before instance
    # norm has a true gradient of 0) move by up to ±lr, differently in the two runs, and the adversarial game amplifies it.
    # A wrong gradient shows at once: averaging that was off made step 1 differ by 1.4e-2.
    pytest.param('cyclegan', dict(augment=False), 4, (0, 2e-2), id='cyclegan'),
    # CUT: two processes of one image each compute the one-process gradient: negatives within each image, places and flips
    # drawn by the step alone, no gathering; the gradients after step 1 are compared first (`_first_step_gradients`).
    # Later steps drift as the CycleGAN's do: the two runs sum the batch's gradients in different orders, and Adam turns the
    # rounding of gradients that are truly about 0 into steps of ±lr, which are large next to CUT's small Xavier weights (gain 0.02).
    pytest.param('cut', dict(augment=False, flip_equivariance=True), 3, (2e-2, 2e-2), id='cut'),
]


def _first_step_gradients(tmp_path, family, data, kw):
    """After one step Adam's first moment is (1 - beta1) x the gradient, so the checkpoints after step 1 compare the
    gradients of every parameter: to 1e-4 of the optimiser's largest gradient. The biases before an instance norm have a true
    gradient of 0, so theirs is rounding noise (about 1e-9), different in the two runs; every weight agrees to about 1e-6 of its own size"""
    train(family, dataset=data, out=tmp_path/'one1', quiet=True, until_step=1, **kw)
    launch(train, family, dataset=data, out=tmp_path/'two1', quiet=True, nprocs=2, start_method='spawn', until_step=1, **kw)
    a, b = (load_checkpoint(tmp_path/r/'checkpoints'/'last.pt') for r in ('one1', 'two1'))
    assert b['world'] == 2
    for o in ('g', 'd'):
        scale = max(float(st['exp_avg'].abs().max()) for st in a['opts'][o]['state'].values())
        for i, st in a['opts'][o]['state'].items():
            torch.testing.assert_close(b['opts'][o]['state'][i]['exp_avg'], st['exp_avg'], rtol=1e-4, atol=1e-4 * scale, msg=f'{o} parameter {i}')


@pytest.mark.slow
@pytest.mark.parametrize('family, extra, exact, drift', DDP)
def test_ddp_two_gloo_processes_equal_one(tmp_path, request, family, extra, exact, drift):
    data, kw = _data(request, family), dict(TINY[family], epochs=1, amp='off', **extra)
    if family == 'cut': _first_step_gradients(tmp_path, family, data, kw)
    one = train(family, dataset=data, out=tmp_path/'one', quiet=True, **kw)
    launch(train, family, dataset=data, out=tmp_path/'two', quiet=True, nprocs=2, start_method='spawn', **kw)
    cols = DDP_COLS[family]
    a, b = (pd.read_csv(Path(tmp_path)/r/'metrics.csv')[cols].to_numpy() for r in ('one', 'two'))
    assert a.shape == b.shape == (STEPS[family], len(cols))
    np.testing.assert_allclose(b[:exact], a[:exact], rtol=1e-5, atol=1e-5)
    if drift: np.testing.assert_allclose(b, a, rtol=drift[0], atol=drift[1])
    two = load_checkpoint(tmp_path/'two'/'checkpoints'/'last.pt')
    assert two['world'] == 2
    if family == 'dcgan':
        for k in ('g', 'd'):
            for n, v in one.state()['nets'][k].items(): torch.testing.assert_close(two['nets'][k][n], v, rtol=1e-5, atol=1e-5)


def _d2d_rank(e, p, y):
    "In each of two gloo processes: ReACGAN's loss of the whole batch through GatherRows, and the rows' averaged gradients"
    import torch.distributed as dist
    from ganlab.runtime import init_dist
    from ganlab.tasks import GatherRows
    from ganlab.losses import d2d_ce_loss
    d = init_dist()
    mine = slice(d.rank * len(e) // d.world, (d.rank + 1) * len(e) // d.world)
    x = e[mine].clone().requires_grad_(True)
    loss = d2d_ce_loss(GatherRows.apply(x), GatherRows.apply(p[mine]), GatherRows.apply(y[mine]))
    loss.backward()
    grads = [torch.empty_like(x.grad) for _ in range(d.world)]
    dist.all_gather(grads, x.grad / d.world)  # what average_grads does to the parameters' gradients
    return float(loss), torch.cat(grads)


@pytest.mark.slow
def test_d2d_ce_over_two_processes_is_the_one_process_loss():
    "The conditional GAN's D2D-CE compares images across the whole batch, so in DDP every process gathers it"
    from ganlab.losses import d2d_ce_loss
    g = torch.Generator().manual_seed(0)
    e, p = (torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1) for _ in range(2))
    y = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0])
    x = e.clone().requires_grad_(True)
    one = d2d_ce_loss(x, p, y)
    one.backward()
    loss, grad = launch(_d2d_rank, e, p, y, nprocs=2, start_method='fork', returns=True)
    assert abs(loss - one.item()) < 1e-6
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-7)
    halves = d2d_ce_loss(e[:4], p[:4], y[:4]) + d2d_ce_loss(e[4:], p[4:], y[4:])
    assert abs(halves.item() / 2 - one.item()) > 1e-3  # without gathering, each process's loss would be another


# ---- bad settings: one clear error each, before any training

def _bad_settings(family, tmp_path, data):
    "(what to run, the error it must raise) for each family"
    cfg = lambda **kw: lambda: make_config(family, **kw)
    run = lambda out, **kw: lambda: train(family, out=tmp_path/out, quiet=True, **kw)
    if family == 'dcgan': return [
        (cfg(lr=1), 'unknown setting .lr.*did you mean'),
        (cfg(loss='wgan'), 'loss must be one of bce, lsgan, hinge, wgan-gp'),
        (cfg(batch='x'), 'batch: .x. is not an int'),
        (cfg(diffaug='colour'), 'diffaug')]
    translation = [  # CycleGAN and CUT
        (cfg(data='x'), 'takes --monet and --photo, not --data'),
        (run('r', photo='p'), 'no monet images: give --monet'),
        (run('r3', dataset=dict(data, photo=data['photo'][:2]), **TINY[family]), 'more than samples=2')]
    if family == 'cyclegan': return translation + [
        (cfg(g_arch='resnet7'), 'g_arch must be one of resnet9, resnet6, unet'),
        (cfg(loss='wgan-gp'), 'loss must be one of lsgan, bce, hinge'),
        (run('r2', dataset=dict(data, photo=data['photo'][:, :32]), **TINY[family]), 'photo: images are')]
    return translation + [
        (cfg(g_arch='unet'), 'g_arch must be one of resnet9, resnet6'),
        (cfg(g_arch='resnet6', nce_layers='input,block7'), 'block7 not in the resnet6 generator'),
        (cfg(nce_t=0), 'nce_t must be positive'),
        (cfg(lr_scaling='cubic'), 'lr_scaling must be one of none, linear, sqrt')]


@pytest.mark.parametrize('family', ['dcgan', 'cyclegan', 'cut'])
def test_bad_settings_are_clear(tmp_path, request, family):
    data = _data(request, family) if family != 'dcgan' else None
    for call, match in _bad_settings(family, tmp_path, data):
        with pytest.raises(GanlabError, match=match): call()
