"Training engine: families, TensorBoard and metadata, periodic FID, a new family, safe checkpoints (resume, DDP, bad settings: test_families.py)"
import pickle, os
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from ganlab.core import GanlabError
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab.train import train
from ganlab.checkpoint import load_checkpoint

TINY = dict(size=16, epochs=2, batch=32, g_width=8, d_width=8, latent=16, log_every=1, samples=4, tensorboard=False, progress=False, device='cpu')

@pytest.mark.slow
def test_families_run(tmp_path):
    grey = ImageArrayDataset(draw_digits(64, seed=0, size=28)[0].mean(-1, keepdims=True).astype(np.uint8))
    t = train('mlp', dataset=grey, out=tmp_path/'mlp', quiet=True, epochs=1, batch=16, g_hidden='32,32', d_hidden='32', tensorboard=False)
    assert t.step == 4 and (tmp_path/'mlp'/'samples'/'epoch_001.png').is_file()
    col = ImageArrayDataset(draw_digits(16, seed=0, size=64)[0])
    t = train('googlenet', dataset=col, out=tmp_path/'gn', quiet=True, epochs=1, batch=8, pretrained=False, freeze_backbone=True,
              g_width=8, latent=16, samples=4, tensorboard=False)
    assert t.step == 2
    bb = t.task.nets['d'].backbone
    assert not any(p.requires_grad for p in bb.parameters()) and not bb.training
    assert all(p.requires_grad for p in t.task.nets['d'].head.parameters())
    assert (tmp_path/'gn'/'checkpoints'/'ema.pt').is_file()

def test_tensorboard_and_metadata(tmp_path, digits):
    train('dcgan', dataset=digits, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=1, tensorboard=True))
    assert list((tmp_path/'r'/'tb').glob('events.out.tfevents.*'))
    import json
    md = json.loads((tmp_path/'r'/'metadata.json').read_text())
    assert md['family'] == 'dcgan' and md['config']['seed'] == 0 and md['versions']['torch'] and md['steps'] == 8
    assert (tmp_path/'r'/'losses.png').read_bytes()[:4] == b'\x89PNG'

class _Evil:
    def __reduce__(self): return (os.system, ('echo pwned > /tmp/ganlab-pwned',))

def test_checkpoint_loading_is_safe(tmp_path):
    p = tmp_path/'evil.pt'
    torch.save({'format': 'ganlab-checkpoint-1', 'x': _Evil()}, p)
    with pytest.raises(GanlabError, match='cannot be read safely'): load_checkpoint(p)
    assert not Path('/tmp/ganlab-pwned').exists()
    with pytest.raises(GanlabError, match='no such file'): load_checkpoint(tmp_path/'none.pt')

@pytest.mark.slow
def test_periodic_fid_keeps_the_best_checkpoint(tmp_path, digits, monkeypatch):
    from ganlab.metrics import random_fid_weights
    random_fid_weights(tmp_path/'w.pth')
    monkeypatch.setenv('GANLAB_INCEPTION_WEIGHTS', str(tmp_path/'w.pth'))
    t = train('dcgan', dataset=digits, out=tmp_path/'r', quiet=True, **dict(TINY, fid_every=1, fid_images=40))
    df = pd.read_csv(tmp_path/'r'/'metrics.csv')
    fids = df['fid'].dropna()
    assert len(fids) == 2 and (fids > 0).all() and t.best == pytest.approx(fids.min(), rel=1e-8)
    assert (tmp_path/'r'/'checkpoints'/'best.pt').is_file()
    assert load_checkpoint(tmp_path/'r'/'checkpoints'/'best.pt')['best'] == t.best

@pytest.mark.slow
def test_no_fid_weights_is_a_note_and_training_goes_on(tmp_path, digits, monkeypatch, capsys):
    monkeypatch.delenv('GANLAB_INCEPTION_WEIGHTS', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'hub'))
    t = train('dcgan', dataset=digits, out=tmp_path/'r', **dict(TINY, epochs=1, fid_every=1))
    err = capsys.readouterr().err
    assert 'note: no FID during training' in err and 'pt_inception-2015-12-05-6726825d.pth' in err
    assert t.epoch == 1 and pd.read_csv(tmp_path/'r'/'metrics.csv')['fid'].isna().all()

def test_a_new_family_is_one_registry_entry(tmp_path):
    "A toy family: a config, two tiny networks and one `register` call; the loop, checkpoints and generate know it"
    from dataclasses import dataclass
    from ganlab.config import TrainConfig, Family, FAMILIES, register, setting
    from ganlab.generate import load_generator

    @dataclass
    class ToyConfig(TrainConfig):
        "A linear generator of 8x8 grey images"
        size:int = setting(8, 'model', choices=(8,)) # image side
        channels:int = setting(1, 'model', choices=(1,)) # grey
        latent:int = setting(4, 'model', low=1) # size of z
    class ToyG(torch.nn.Module):
        def __init__(self, cfg): super().__init__(); self.latent, self.net = cfg.latent, torch.nn.Linear(cfg.latent, 64)
        def forward(self, z): return torch.tanh(self.net(z)).view(-1, 1, 8, 8)
    class ToyD(torch.nn.Module):
        def __init__(self, cfg): super().__init__(); self.net = torch.nn.Linear(64, 1)
        def forward(self, x): return self.net(x.flatten(1))[:, 0]

    register(Family('toy', ToyConfig, 'ganlab.tasks:DCGANTask', nets={'g': ToyG, 'd': ToyD}))
    try:
        data = ImageArrayDataset(np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8))
        t = train('toy', dataset=data, out=tmp_path/'toy', quiet=True, until_step=2, batch=16, tensorboard=False, device='cpu')
        assert t.step == 2 and t.family.name == 'toy' and set(t.state()['nets']) == {'g', 'd'}
        g, cfg = load_generator(tmp_path/'toy'/'checkpoints'/'last.pt')
        assert isinstance(g, ToyG) and cfg.latent == 4 and g(torch.zeros(2, 4)).shape == (2, 1, 8, 8)
        b = train('toy', dataset=data, out=tmp_path/'toy', quiet=True, resume=True, epochs=1)
        assert b.step == 4
    finally: del FAMILIES['toy']

@pytest.mark.slow
def test_checkpoints_of_the_first_format_still_load(tmp_path, digits):
    "A run written before the digest and under the old family name celeba64 resumes and generates"
    from ganlab.checkpoint import load_checkpoint
    from ganlab.generate import load_generator
    kw = dict(TINY, size=16, epochs=2, ema=0.9)
    train('dcgan', dataset=digits, out=tmp_path/'r', quiet=True, until_step=3, **kw)
    ck = tmp_path/'r'/'checkpoints'/'last.pt'
    s = torch.load(ck, weights_only=True)
    s.update(format='ganlab-checkpoint-1', family='celeba64'); del s['digest']
    torch.save(s, ck)
    assert load_checkpoint(ck)['family'] == 'celeba64'
    g, cfg = load_generator(ck)
    assert cfg.size == 16 and type(cfg).__name__ == 'DCGANConfig'
    t = train('dcgan', dataset=digits, out=tmp_path/'r', quiet=True, resume=True)
    assert t.step == 16 and load_checkpoint(ck)['family'] == 'dcgan'

@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused(tmp_path, digits):
    train('dcgan', dataset=digits, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=1))
    ck = tmp_path/'r'/'checkpoints'/'last.pt'
    raw = bytearray(ck.read_bytes())
    for i in (len(raw) // 2, len(raw) // 3):  # a byte in the middle of the tensor data
        bad = bytearray(raw); bad[i] ^= 0x10
        (tmp_path/'bad.pt').write_bytes(bytes(bad))
        with pytest.raises(GanlabError, match='bad.pt'): load_checkpoint(tmp_path/'bad.pt')
