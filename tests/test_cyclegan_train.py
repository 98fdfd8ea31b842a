"CycleGAN on the training engine: exact resume, DDP equals one process, schedule, pool, MiFID, monet-submit"
import json, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ganlab.core import GanlabError, shared_data
from ganlab.data import draw_digits
from ganlab.train import train
from ganlab.launch import launch
from ganlab.checkpoint import load_checkpoint
from ganlab.config import make_config
from ganlab.translation import lr_factor

@pytest.fixture(scope='module')
def pairs():
    rng = np.random.default_rng(0)
    return {'monet': (rng.random((12, 64, 64, 3)) * 255).astype(np.uint8), 'photo': draw_digits(20, seed=1, size=64)[0]}

# 64x64, tiny widths: 18 training photos (2 held out), batch 2 -> 9 steps per epoch
TINY = dict(size=64, ngf=4, ndf=4, g_arch='resnet6', epochs=2, batch=2, samples=2, pool=3, log_every=1, tensorboard=False,
            progress=False, device='cpu')
NETS = ('g', 'f', 'd_monet', 'd_photo')

def _states_equal(a, b):
    eq = torch.equal
    for k in NETS:
        for n, v in a['nets'][k].items(): assert eq(v, b['nets'][k][n]), (k, n)
    for k in ('g', 'd'):
        sa, sb = a['opts'][k]['state'], b['opts'][k]['state']
        for i in sa:
            for n, v in sa[i].items(): assert eq(torch.as_tensor(v).float(), torch.as_tensor(sb[i][n]).float()), (k, i, n)
    for k in ('monet', 'photo'):
        pa, pb = a['task']['pools'][k], b['task']['pools'][k]
        assert pa['count'] == pb['count'] and (pa['images'] is None or eq(pa['images'], pb['images'])), k
    if a['task']['ema'] is not None:
        for n, v in a['task']['ema'].items(): assert eq(v, b['task']['ema'][n]), n

@pytest.mark.parametrize('extra', [
    dict(),  # CycleGAN's own: LSGAN, identity 0.5, pool, augmentation
    dict(loss='hinge', identity=0.0, diffaug='color,translation,cutout', ema=0.9, g_arch='unet', decay_epochs=1),
    dict(loss='bce', norm='batch', g_dropout=0.2, spectral=True, augment=False),
])
@pytest.mark.parametrize('stop', [4, 9])  # mid-epoch and at the epoch boundary
def test_resume_is_bitwise(tmp_path, pairs, extra, stop):
    kw = dict(TINY, **extra)
    a = train('cyclegan', dataset=pairs, out=tmp_path/'a', quiet=True, **kw)
    assert a.step == 18 and a.task.pools['monet'].count == 3
    train('cyclegan', dataset=pairs, out=tmp_path/'b', quiet=True, until_step=stop, **kw)
    b = train('cyclegan', dataset=pairs, out=tmp_path/'b', quiet=True, resume=True)
    _states_equal(a.state(), b.state())
    ra, rb = (pd.read_csv(tmp_path/r/'metrics.csv').drop(columns=['seconds', 'img_per_s']) for r in 'ab')
    assert ra.equals(rb)
    assert ra[['loss_d', 'loss_g', 'cycle']].notna().all().all()
    assert (tmp_path/'a'/'samples'/'epoch_002.png').read_bytes() == (tmp_path/'b'/'samples'/'epoch_002.png').read_bytes()

def test_ddp_two_gloo_processes_equal_one(tmp_path, pairs):
    # instance norm works image by image and the pool is global, so two processes of one image see what one process of two sees
    kw = dict(TINY, epochs=1, augment=False, amp='off')  # float32 rounding is what is compared (`auto` may be bf16 on a CPU)
    one = train('cyclegan', dataset=pairs, out=tmp_path/'one', quiet=True, **kw)
    launch(train, 'cyclegan', dataset=pairs, out=tmp_path/'two', quiet=True, nprocs=2, start_method='spawn', **kw)
    cols = ['loss_d', 'loss_g', 'd_real', 'd_fake', 'cycle', 'identity']
    a, b = (pd.read_csv(tmp_path/r/'metrics.csv')[cols].to_numpy() for r in ('one', 'two'))
    assert a.shape == b.shape == (9, 6)
    # The first steps agree to float rounding; later ones drift apart slowly (1e-2 by step 9). Adam divides each
    # gradient by its own size, so elements whose gradients are near rounding noise (a bias before instance norm has a
    # true gradient of 0) move by up to ±lr, differently in the two runs, and the adversarial game amplifies it.
    # A wrong gradient shows at once: averaging that was off made step 1 differ by 1.4e-2.
    np.testing.assert_allclose(b[:4], a[:4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-2)
    assert load_checkpoint(tmp_path/'two'/'checkpoints'/'last.pt')['world'] == 2

def test_schedule_and_held_out_photos(tmp_path, pairs):
    t = train('cyclegan', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=3, decay_epochs=2))
    assert t.task.opts['g'].param_groups[0]['lr'] == pytest.approx(2e-4 * lr_factor(2, 3, 2)) == pytest.approx(2e-4 / 3)
    held, train_ = t.domains['held_out'].numpy(), t.domains['photo'].numpy()
    assert len(held) == 2 and len(train_) == 18
    assert not any((h == p).all() for h in held for p in train_)  # the grid's photos were never trained on
    from PIL import Image
    grid = np.asarray(Image.open(tmp_path/'r'/'samples'/'epoch_003.png'))
    assert grid.shape[1] > grid.shape[0]  # 2 rows of photo | Monet-style | back to photo
    md = json.loads((tmp_path/'r'/'metadata.json').read_text())
    assert md['family'] == 'cyclegan' and md['sets'] == {'monet': 12, 'photo': 18}

def test_bad_settings_are_clear(tmp_path, pairs):
    with pytest.raises(GanlabError, match="g_arch must be one of resnet9, resnet6, unet"): make_config('cyclegan', g_arch='resnet7')
    with pytest.raises(GanlabError, match="loss must be one of lsgan, bce, hinge"): make_config('cyclegan', loss='wgan-gp')
    with pytest.raises(GanlabError, match='takes --monet and --photo, not --data'): make_config('cyclegan', data='x')
    with pytest.raises(GanlabError, match='no monet images: give --monet'): train('cyclegan', out=tmp_path/'r', quiet=True, photo='p')
    with pytest.raises(GanlabError, match='photo: images are'):
        train('cyclegan', dataset=dict(pairs, photo=pairs['photo'][:, :32]), out=tmp_path/'r2', quiet=True, **TINY)
    with pytest.raises(GanlabError, match='more than samples=2'):
        train('cyclegan', dataset=dict(pairs, photo=pairs['photo'][:2]), out=tmp_path/'r3', quiet=True, **TINY)

def test_periodic_mifid_keeps_the_best_checkpoint(tmp_path, pairs, monkeypatch):
    from ganlab.metrics import random_fid_weights
    random_fid_weights(tmp_path/'w.pth')
    monkeypatch.setenv('GANLAB_INCEPTION_WEIGHTS', str(tmp_path/'w.pth'))
    t = train('cyclegan', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, fid_every=1, fid_images=10))
    ev = pd.read_csv(tmp_path/'r'/'metrics.csv').dropna(subset=['mifid'])
    assert len(ev) == 2 and (ev['mifid'] >= ev['fid']).all() and t.best_fid == pytest.approx(ev['mifid'].min(), rel=1e-8)
    assert load_checkpoint(tmp_path/'r'/'checkpoints'/'best.pt')['best_fid'] == t.best_fid

def test_monet_submit_writes_a_valid_zip_of_7000(tmp_path, pairs):
    "The real count: 7,000 photos in, 7,000 256x256 JPEGs out, streamed, and the checker passes it"
    from PIL import Image
    from ganlab.generate import monet_submit, check_submission
    train('cyclegan', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=1, ngf=2, ndf=2))
    ph = tmp_path/'photos.zip'
    with zipfile.ZipFile(ph, 'w') as zf:
        imgs = draw_digits(100, seed=5, size=64)[0]
        for i in range(7000):
            im = Image.fromarray(imgs[i % 100]); b = __import__('io').BytesIO(); im.save(b, 'PNG', compress_level=1)
            zf.writestr(f'photo_{i:05d}.png', b.getvalue())
    r = monet_submit(tmp_path/'r'/'checkpoints'/'last.pt', ph, tmp_path/'images.zip', batch=64, device='cpu', quiet=True, mifid=False)
    assert r['images'] == 7000 and r['check'].ok, r['check']
    names = zipfile.ZipFile(tmp_path/'images.zip').namelist()
    assert len(set(names)) == 7000 and names[0] == 'photo_00000.jpg'
    assert not check_submission(tmp_path/'images.zip', count=(7001, 10000)).ok

def test_real_monet_shard_trains(tmp_path):
    root = shared_data()
    if root is None or not (root/'monet'/'monet00-60.tfrec').is_file() or not (root/'celeba-10k-jpg.zip').is_file():
        pytest.skip('needs ../shared/data/monet/monet00-60.tfrec and ../shared/data/celeba-10k-jpg.zip')
    t = train('cyclegan', monet=root/'monet'/'monet00-60.tfrec', photo=root/'celeba-10k-jpg.zip', limit=40, out=tmp_path/'r', quiet=True,
              **dict(TINY, epochs=1, batch=4))
    assert t.sizes == {'monet': 40, 'photo': 38} and t.step == 10
    md = json.loads((tmp_path/'r'/'metadata.json').read_text())
    assert 'monet00-60.tfrec' in md['data']

def test_no_pool(tmp_path, pairs):
    "pool=0 shows the discriminators the new fakes only (they must be detached from the generators' graph)"
    t = train('cyclegan', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=1, pool=0))
    assert t.step == 9 and t.task.pools['monet'].count == 0
