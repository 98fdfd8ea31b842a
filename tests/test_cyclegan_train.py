"CycleGAN on the training engine: schedule, held-out photos, pool, MiFID, monet-submit (resume, DDP, bad settings: test_families.py)"
import json, zipfile
import numpy as np, pandas as pd, pytest
from ganlab.core import shared_data
from ganlab.data import draw_digits
from ganlab.train import train
from ganlab.checkpoint import load_checkpoint
from ganlab.translation import lr_factor

# 64x64, tiny widths: 18 training photos (2 held out), batch 2 -> 9 steps per epoch
TINY = dict(size=64, ngf=4, ndf=4, g_arch='resnet6', epochs=2, batch=2, samples=2, pool=3, log_every=1, tensorboard=False,
            progress=False, device='cpu')

@pytest.mark.slow
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

@pytest.mark.slow
def test_periodic_mifid_keeps_the_best_checkpoint(tmp_path, pairs, monkeypatch):
    from ganlab.metrics import random_fid_weights
    random_fid_weights(tmp_path/'w.pth')
    monkeypatch.setenv('GANLAB_INCEPTION_WEIGHTS', str(tmp_path/'w.pth'))
    t = train('cyclegan', dataset=pairs, out=tmp_path/'r', quiet=True, **dict(TINY, fid_every=1, fid_images=10))
    ev = pd.read_csv(tmp_path/'r'/'metrics.csv').dropna(subset=['mifid'])
    assert len(ev) == 2 and (ev['mifid'] >= ev['fid']).all() and t.best == pytest.approx(ev['mifid'].min(), rel=1e-8)
    assert load_checkpoint(tmp_path/'r'/'checkpoints'/'best.pt')['best'] == t.best

@pytest.mark.slow
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

@pytest.mark.slow
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
