"CUT on the training engine: PatchNCE against its definition, shapes, the tricks, monet-submit (resume, DDP, bad settings: test_families.py)"
import io, json, math, zipfile
import numpy as np, pandas as pd, pytest, torch
import torch.nn.functional as F
from ganlab.core import GanlabError, shared_data
from ganlab.data import draw_digits, to_tensor
from ganlab.losses import patch_nce_loss
from ganlab.train import train
from ganlab.checkpoint import load_checkpoint
from ganlab.config import make_config, get_family
from ganlab.translation import CUTTask, PatchHeads, encoder_features, jitter, lr_factor, nce_channels, resnet_layers, sample_places

# 64x64, tiny widths: 18 training photos (2 held out), batch 2 -> 9 steps per epoch
TINY = dict(size=64, ngf=4, ndf=4, g_arch='resnet6', nce_width=16, nce_patches=64, epochs=2, batch=2, samples=2, log_every=1,
            tensorboard=False, progress=False, device='cpu')
NETS = ('g', 'heads', 'd')

# ---- PatchNCE against its definition

def nce_by_definition(q, k, tau):
    "−log(exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ exp(q·k⁻/τ))) over the other places of the same image, averaged over every query"
    q, k = q.double(), k.double()
    losses = []
    for i in range(q.shape[0]):
        for a in range(q.shape[1]):
            logits = torch.stack([q[i, a] @ k[i, b] for b in range(q.shape[1])]) / tau
            losses.append(-(logits[a] - torch.logsumexp(logits, 0)))  # the positive against itself and the other places
    return torch.stack(losses).mean().item()

@pytest.mark.parametrize('n, p, c, tau', [(1, 7, 4, 0.07), (3, 16, 8, 0.07), (2, 5, 3, 0.5)])
def test_patch_nce_equals_its_definition(n, p, c, tau):
    g = torch.Generator().manual_seed(n * 100 + p)
    q, k = (F.normalize(torch.randn(n, p, c, generator=g), dim=-1) for _ in range(2))
    assert patch_nce_loss(q, k, tau).item() == pytest.approx(nce_by_definition(q, k, tau), rel=1e-5)

def test_patch_nce_identity_is_small_and_mismatch_is_large():
    "Hand-made features: 8 orthogonal patches; a translation that keeps every patch in place scores log(1 + 7e^(-1/τ)) ≈ 0"
    e = torch.eye(8)[None].repeat(2, 1, 1)
    same = patch_nce_loss(e, e, 0.07).item()
    assert same == pytest.approx(math.log1p(7 * math.exp(-1 / 0.07)), abs=1e-6) and same < 1e-5
    shuffled = patch_nce_loss(e, e.roll(1, 1), 0.07).item()  # every patch matches another place: the positive scores 0, one negative 1/τ
    assert shuffled == pytest.approx(nce_by_definition(e, e.roll(1, 1), 0.07), rel=1e-5) and shuffled > 14
    near = F.normalize(e + 0.05 * torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert same < patch_nce_loss(near, e).item() < 1.0  # slightly moved patches: still small

def test_patch_nce_matches_the_reference_layout():
    "The reference's flat (N·P) x C layout with its bmm and diagonal mask gives the same number"
    g = torch.Generator().manual_seed(3)
    n, p, c, tau = 2, 6, 5, 0.07
    q, k = (F.normalize(torch.randn(n, p, c, generator=g), dim=-1) for _ in range(2))
    fq, fk = q.reshape(n * p, c), k.reshape(n * p, c)
    l_pos = torch.bmm(fq.view(n * p, 1, -1), fk.view(n * p, -1, 1)).view(n * p, 1)
    l_neg = torch.bmm(fq.view(n, -1, c), fk.view(n, -1, c).transpose(2, 1))
    l_neg.masked_fill_(torch.eye(p, dtype=torch.bool)[None], -10.0)
    ref = F.cross_entropy(torch.cat([l_pos, l_neg.view(-1, p)], 1) / tau, torch.zeros(n * p, dtype=torch.long))
    assert patch_nce_loss(q, k, tau).item() == pytest.approx(ref.item(), rel=1e-6)

# ---- shapes

@pytest.mark.slow
def test_shapes():
    cfg = make_config('cut', **{k: v for k, v in TINY.items() if k != 'device'})
    fam = get_family('cut')
    g, h, d = (fam.build(k, cfg) for k in NETS)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    assert g(x).shape == x.shape and d(x).shape == (3, 1, 6, 6)
    where = resnet_layers(g)
    assert list(where) == ['input', 'down1', 'down2', *(f'block{i}' for i in range(1, 7))]
    with torch.no_grad(): _, feats = encoder_features(g, x, [where[n] for n in cfg.nce_layers.split(',')])
    assert [tuple(f.shape[1:]) for f in feats] == [(3, 70, 70), (8, 32, 32), (16, 16, 16), (16, 16, 16), (16, 16, 16)]
    assert [f.shape[1] for f in feats] == list(nce_channels(cfg.nce_layers, cfg.ngf))
    places = sample_places(feats, 64, torch.Generator().manual_seed(0))
    assert all(len(set(p.tolist())) == 64 for p in places)
    assert [tuple(y.shape) for y in h(feats, places)] == [(3, 64, 16)] * 5
    big = make_config('cut', size=64, ngf=4, g_arch='resnet9', nce_layers='down2,block9', nce_patches=1000)
    t = CUTTask(big)
    assert t.taps == [7, 18] and len(t.nets['heads'].mlps) == 2
    with torch.no_grad(): assert [len(p) for p in sample_places(encoder_features(t.nets['g'], x, t.taps)[1], 1000, torch.Generator())] == [256, 256]

# ---- training

@pytest.mark.slow
def test_schedule_scaling_and_grid(tmp_path, pairs):
    t = train('cut', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=3, decay_epochs=2, batch=4, lr_scaling='linear', samples=3))
    for o in ('g', 'd'): assert t.task.opts[o].param_groups[0]['lr'] == pytest.approx(2e-4 * 4 * lr_factor(2, 3, 2))
    from PIL import Image
    grid = np.asarray(Image.open(tmp_path/'r'/'samples'/'epoch_003.png'))
    assert grid.shape[0] > grid.shape[1] > grid.shape[0] / 2  # 3 rows of photo | Monet-style
    md = json.loads((tmp_path/'r'/'metadata.json').read_text())
    assert md['family'] == 'cut' and md['sets'] == {'monet': 12, 'photo': 17}

def test_fastcut_preset(tmp_path, pairs):
    t = train('cut', dataset=pairs, out=tmp_path/'r', quiet=True, preset='fastcut', **dict(TINY, epochs=1))
    assert (t.cfg.nce_idt, t.cfg.lambda_nce, t.cfg.flip_equivariance) == (False, 10.0, True)
    m = pd.read_csv(tmp_path/'r'/'metrics.csv')
    assert m['nce'].notna().all() and m['nce_identity'].isna().all()

def test_without_nce_the_heads_do_not_train(tmp_path, pairs):
    t = train('cut', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=1, lambda_nce=0.0))
    opt = t.task.opts['g']
    assert all(p in opt.state for p in t.task.nets['g'].parameters()) and not any(p in opt.state for p in t.task.nets['heads'].parameters())
    assert pd.read_csv(tmp_path/'r'/'metrics.csv')['nce'].isna().all()

def test_tricks_apply_to_the_cyclegan(tmp_path, pairs):
    kw = dict(size=64, ngf=4, ndf=4, g_arch='resnet6', epochs=1, batch=4, samples=2, pool=3, log_every=1, tensorboard=False, progress=False,
              device='cpu', rotate=10.0, zoom=0.2, lr_scaling='sqrt', label_smooth=0.1, diffaug='color,translation')
    t = train('cyclegan', dataset=pairs, out=tmp_path/'r', quiet=True, **kw)
    assert t.task.opts['g'].param_groups[0]['lr'] == pytest.approx(2e-4 * 2 * lr_factor(0, 1))
    assert np.isfinite(pd.read_csv(tmp_path/'r'/'metrics.csv')[['loss_d', 'loss_g', 'cycle']].to_numpy()).all()

def test_jitter_is_the_seed_crop_family():
    "zoom 0, rotate 0: a crop of the 286/256 resize, like the seed's; a rotation moves pixels; reflection keeps the range"
    x = to_tensor(draw_digits(6, seed=2, size=64)[0])
    same = jitter(x, torch.Generator().manual_seed(0), flip=False)
    assert same.shape == x.shape and not torch.equal(same, x)
    assert (jitter(x, torch.Generator().manual_seed(0), rotate=30, flip=False) - same).abs().mean() > 0.01
    with pytest.raises(GanlabError, match='N x C x S x S float'): jitter(x[:, :, :32])

@pytest.mark.slow
def test_half_the_work_of_a_cyclegan():
    "Counted FLOPs of one training step at 256x256, batch 1, as the planner counts them: CUT needs well under 2/3 of a CycleGAN's"
    from ganlab.planner import step_work, plan
    cut, cyc = step_work('cut', size=256), step_work('cyclegan', size=256)
    assert cut['flops_per_image'] < 0.65 * cyc['flops_per_image'] and cut['params'] < 0.6 * cyc['params']
    p = plan('cut', epochs=25, batch=2)  # the planner knows the family: Kaggle's T4x2, the competition's 7,038 photos
    assert p.family == 'cut' and p.steps == 7038 // 2 * 25 and 0 < p.seconds[0] <= p.seconds[1]

@pytest.mark.slow
def test_best_by_mifid_then_monet_submit(tmp_path, pairs, monkeypatch):
    """Periodic MiFID keeps best.pt; monet-submit takes that CUT checkpoint as it takes a CycleGAN one (the checkpoint says
    what it is): 7,000 photos in, 7,000 256x256 JPEGs out, and the checker passes the zip"""
    from PIL import Image
    from ganlab.metrics import random_fid_weights
    from ganlab.generate import monet_submit, load_translator
    random_fid_weights(tmp_path/'w.pth')
    monkeypatch.setenv('GANLAB_INCEPTION_WEIGHTS', str(tmp_path/'w.pth'))
    t = train('cut', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, ngf=2, ndf=2, ema=0.9, fid_every=1, fid_images=10))
    ev = pd.read_csv(tmp_path/'r'/'metrics.csv').dropna(subset=['mifid'])
    assert len(ev) == 2 and (ev['mifid'] >= ev['fid']).all() and t.best == pytest.approx(ev['mifid'].min(), rel=1e-8)
    best = tmp_path/'r'/'checkpoints'/'best.pt'
    assert load_checkpoint(best)['best'] == t.best and load_checkpoint(best)['best_metric'] == 'mifid'
    g, cfg = load_translator(best, device='cpu')
    assert type(cfg).__name__ == 'CUTConfig' and g(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    ph = tmp_path/'photos.zip'
    imgs = draw_digits(100, seed=5, size=64)[0]
    with zipfile.ZipFile(ph, 'w') as zf:
        for i in range(7000):
            b = io.BytesIO(); Image.fromarray(imgs[i % 100]).save(b, 'PNG', compress_level=1)
            zf.writestr(f'photo_{i:05d}.png', b.getvalue())
    r = monet_submit(best, ph, tmp_path/'images.zip', batch=64, device='cpu', quiet=True, mifid=False)
    assert r['images'] == 7000 and r['check'].ok, r['check']
    assert len(set(zipfile.ZipFile(tmp_path/'images.zip').namelist())) == 7000

@pytest.mark.slow
def test_real_monet_shard_trains(tmp_path):
    root = shared_data()
    if root is None or not (root/'monet'/'monet00-60.tfrec').is_file() or not (root/'celeba-10k-jpg.zip').is_file():
        pytest.skip('needs ../shared/data/monet/monet00-60.tfrec and ../shared/data/celeba-10k-jpg.zip')
    t = train('cut', monet=str(root/'monet'/'monet00-60.tfrec'), photo=str(root/'celeba-10k-jpg.zip'), limit=40, out=tmp_path/'r', quiet=True,
              **dict(TINY, epochs=1, batch=4))
    assert t.sizes == {'monet': 40, 'photo': 38} and t.step == 10
    assert 'monet00-60.tfrec' in json.loads((tmp_path/'r'/'metadata.json').read_text())['data']
