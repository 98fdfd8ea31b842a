"The recipe's parts: the ramped EMA and its batch-norm statistics, linear learning-rate decay, time budgets, the conditional GAN"
import json, time, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ganlab.core import GanlabError
from ganlab.data import ImageArrayDataset, draw_digits, to_images
from ganlab.train import train
from ganlab.checkpoint import load_checkpoint
from ganlab.generate import generate, load_generator, latents

TINY = dict(size=16, batch=32, g_width=8, d_width=8, latent=16, log_every=5, samples=20, tensorboard=False, progress=False, device='cpu')

@pytest.fixture(scope='module')
def labelled():
    imgs, labels = draw_digits(320, seed=4, size=16)
    return ImageArrayDataset(imgs, labels=labels, classes=[f'd{i}' for i in range(10)])

def _images(g, z):
    with torch.no_grad(): return g(z)

@pytest.mark.slow
def test_the_ema_generator_is_useful_after_a_short_run(tmp_path, labelled):
    "The issue's failing case (hinge, spectral norm, no BN in D, DiffAugment, ema 0.999) after 300 steps: the EMA draws images, not grey squares"
    kw = dict(TINY, loss='hinge', spectral=True, d_norm='none', diffaug='color,translation,cutout', ema=0.999, epochs=30)
    t = train('dcgan', dataset=labelled, out=tmp_path/'r', quiet=True, **kw)
    assert t.step == 300
    z = latents(0, 64, 16, seed=1)
    raw = _images(t.task.nets['g'].eval(), z)
    ema, _ = load_generator(tmp_path/'r'/'checkpoints'/'last.pt')  # the EMA generator, as `generate` uses it
    avg = _images(ema, z)
    per_image_std = lambda x: x.flatten(1).std(1).mean().item()
    # grey squares have almost no contrast within an image and are all alike; these are as varied as the raw generator's
    assert per_image_std(avg) > 0.6 * per_image_std(raw), (per_image_std(avg), per_image_std(raw))
    assert avg.std(0).mean().item() > 0.5 * raw.std(0).mean().item()
    assert (avg - raw).abs().mean().item() < 0.25  # the average of the last ~30 steps' weights is near the current ones
    # the averaged weights' own batch-norm statistics: recomputed from other noise, they give nearly the same images
    import copy
    other = copy.deepcopy(ema).train()
    with torch.no_grad():
        for m in other.modules():
            if isinstance(m, torch.nn.BatchNorm2d): m.reset_running_stats(); m.momentum = None
        other(latents(0, 2048, 16, seed=9))
    assert (_images(other.eval(), z) - avg).abs().mean().item() < 0.03

@pytest.mark.slow
def test_linear_decay_reaches_zero_and_resume_stays_bitwise(tmp_path, labelled):
    kw = dict(TINY, lr_decay='linear', ema=0.99, epochs=2)
    a = train('dcgan', dataset=labelled, out=tmp_path/'a', quiet=True, **kw)
    lr = a.task.opts['g'].param_groups[0]['lr']
    assert lr == pytest.approx(2e-4 * (1 - 19 / 20))  # the last step ran at 1/20 of the rate
    train('dcgan', dataset=labelled, out=tmp_path/'b', quiet=True, until_step=7, **kw)
    b = train('dcgan', dataset=labelled, out=tmp_path/'b', quiet=True, resume=True)
    sa, sb = a.state(), b.state()
    for k in ('g', 'd'):
        for n, v in sa['nets'][k].items(): assert torch.equal(v, sb['nets'][k][n]), (k, n)
    for n, v in sa['task']['ema'].items(): assert torch.equal(v, sb['task']['ema'][n]), n

@pytest.mark.slow
def test_a_time_budget_stops_the_run_cleanly_and_can_be_extended(tmp_path, labelled):
    kw = dict(TINY, epochs=10_000, lr_decay='linear', ema=0.99)
    t0 = time.perf_counter()
    t = train('dcgan', dataset=labelled, out=tmp_path/'r', quiet=True, time_budget='12s', **kw)
    wall = time.perf_counter() - t0
    md = json.loads((tmp_path/'r'/'metadata.json').read_text())
    assert t.epoch < 10_000 and t.step == md['planned_steps'] == t.planned and md['steps'] == t.step
    assert wall < 12 + 60  # the budget, plus start-up and the final grid and checkpoint on a busy machine
    assert t.task.opts['g'].param_groups[0]['lr'] < 2e-4 * 0.5  # the schedule decayed over the planned steps
    ck = load_checkpoint(tmp_path/'r'/'checkpoints'/'last.pt')
    assert ck['step'] == t.step and ck['elapsed'] >= 6
    assert sorted((tmp_path/'r'/'samples').glob('*.png')) and (tmp_path/'r'/'checkpoints'/'ema.pt').is_file()
    u = train('dcgan', dataset=labelled, out=tmp_path/'r', quiet=True, resume=True, time_budget='20s')
    assert u.step > t.step and u.elapsed > t.elapsed
    with pytest.raises(GanlabError, match='time_budget must be a duration'): train('dcgan', dataset=labelled, out=tmp_path/'x', quiet=True, time_budget='soon', **TINY)

@pytest.mark.slow
def test_the_conditional_gan(tmp_path, labelled):
    kw = dict(TINY, epochs=2, ema=0.9, samples=20)
    t = train('cgan', dataset=labelled, out=tmp_path/'c', quiet=True, **kw)
    assert (t.cfg.classes, t.cfg.class_names.split(',')[:2]) == (10, ['d0', 'd1'])
    from PIL import Image
    grid = np.asarray(Image.open(tmp_path/'c'/'samples'/'epoch_002.png'))
    assert grid.shape[0] > 4 * grid.shape[1]  # ten rows (one per class) of two images
    ck = tmp_path/'c'/'checkpoints'/'last.pt'
    out = generate(ck, 25, seed=3, out=tmp_path/'g', cls='all', quiet=True)
    names = sorted(p.name for p in out.iterdir())
    assert names[:3] == ['img-000000-d0.png', 'img-000001-d1.png', 'img-000002-d2.png'] and len(names) == 25
    one = generate(ck, 5, seed=3, out=tmp_path/'g3.zip', cls='d3', quiet=True)
    assert all(n.endswith('-d3.png') for n in zipfile.ZipFile(one).namelist())
    again = generate(ck, 5, seed=3, out=tmp_path/'g3b.zip', cls=3, quiet=True)
    assert one.read_bytes() == again.read_bytes()  # by name or by index, the same images
    with pytest.raises(GanlabError, match="--class 'cat'"): generate(ck, 5, out=tmp_path/'x', cls='cat', quiet=True)
    # resume is exact for the conditional family too
    train('cgan', dataset=labelled, out=tmp_path/'d', quiet=True, until_step=6, **kw)
    b = train('cgan', dataset=labelled, out=tmp_path/'d', quiet=True, resume=True)
    for n, v in t.state()['nets']['g'].items(): assert torch.equal(v, b.state()['nets']['g'][n]), n
    with pytest.raises(GanlabError, match='no class labels'):
        train('cgan', dataset=ImageArrayDataset(labelled.images), out=tmp_path/'e', quiet=True, **kw)

def test_a_dcgan_run_refuses_a_class(tmp_path, labelled):
    train('dcgan', dataset=labelled, out=tmp_path/'u', quiet=True, **dict(TINY, epochs=1))
    with pytest.raises(GanlabError, match='not class-conditional'):
        generate(tmp_path/'u'/'checkpoints'/'last.pt', 4, out=tmp_path/'x', cls=3, quiet=True)

def test_the_resnet_networks_train(tmp_path, labelled):
    t = train('cgan', dataset=labelled, out=tmp_path/'r', quiet=True, **dict(TINY, arch='resnet', epochs=1, loss='hinge', spectral=True))
    assert type(t.task.nets['g']).__name__ == 'ResGenerator' and t.task.nets['d'].classes == 10
    g, _ = load_generator(tmp_path/'r'/'checkpoints'/'last.pt')
    assert g(torch.zeros(2, 16), torch.tensor([1, 2])).shape == (2, 3, 16, 16)
