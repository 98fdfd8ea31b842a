"""The contracts a new family and a new metric rely on: each is one registry entry (and, for a family, its task), with no
change anywhere else. The family here steps like the DCGAN and also returns a loss no built-in family has; the
metric is the distance between the two sets' mean features. Both are registered for one test and removed after."""
import csv, json
from dataclasses import dataclass
import numpy as np
import pandas as pd
import pytest
import torch
from ganlab import config, scores
from ganlab.config import DCGANConfig, Family, register
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab.tasks import DCGANTask
from ganlab.train import train

TINY = dict(size=16, channels=3, batch=32, epochs=2, g_width=8, d_width=8, latent=16, log_every=2, samples=4,
            tensorboard=False, progress=False, device='cpu', amp='off')


@dataclass
class GapConfig(DCGANConfig):
    "The DCGAN, also logging how far apart D holds real and fake images"


class GapTask(DCGANTask):
    "DCGAN's step, and one more loss column: D's mean output on real images less that on fakes"
    losses = DCGANTask.losses + ('d_gap',)
    panels = {'D outputs and their gap': ('d_real', 'd_fake', 'd_gap')}

    def step(self, real, step, amp, scaler):
        out = super().step(real, step, amp, scaler)
        return {**out, 'd_gap': out['d_real'] - out['d_fake']}


@pytest.fixture
def gap_family():
    "The family registered for one test"
    fam = register(Family('gap', GapConfig, GapTask, nets=dict(config.FAMILIES['dcgan'].nets)))
    yield fam
    config.FAMILIES.pop('gap')


@pytest.fixture(scope='module')
def digits():
    return ImageArrayDataset(draw_digits(128, seed=3, size=16)[0])


def _weights(t):
    return {k: v.clone() for k, v in t.task.nets['g'].state_dict().items()}


@pytest.mark.slow
def test_a_new_family_with_a_new_loss_trains_logs_plots_and_resumes(tmp_path, gap_family, digits):
    t = train('gap', dataset=digits, out=tmp_path/'a', quiet=True, **TINY)
    with open(tmp_path/'a'/'metrics.csv', newline='') as f: rows = list(csv.DictReader(f))
    assert 'd_gap' in rows[0] and all(r['d_gap'] for r in rows)  # every logging row has the new loss
    for r in rows: assert float(r['d_gap']) == pytest.approx(float(r['d_real']) - float(r['d_fake']), abs=1e-6)
    md = json.loads((tmp_path/'a'/'metadata.json').read_text())
    assert md['columns']['losses'] == ['loss_d', 'loss_g', 'd_real', 'd_fake', 'penalty', 'd_gap']
    assert md['columns']['panels'] == {'D outputs and their gap': ['d_real', 'd_fake', 'd_gap']}
    assert (tmp_path/'a'/'losses.png').stat().st_size > 0
    from ganlab.app import plot_run, run_metrics
    fig = plot_run(run_metrics(tmp_path/'a'), md['columns']['panels'])
    assert [a.get_title() for a in fig.axes] == ['losses', 'D outputs and their gap']
    assert [l.get_label() for l in fig.axes[1].lines] == ['d_real', 'd_fake', 'd_gap']
    # stopped after 3 steps and resumed: bitwise the straight run, and the same rows
    train('gap', dataset=digits, out=tmp_path/'b', quiet=True, until_step=3, **TINY)
    u = train('gap', dataset=digits, out=tmp_path/'b', quiet=True, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(_weights(t).values(), _weights(u).values()))
    assert pd.read_csv(tmp_path/'b'/'metrics.csv').drop(columns=['seconds', 'img_per_s']).equals(
        pd.read_csv(tmp_path/'a'/'metrics.csv').drop(columns=['seconds', 'img_per_s']))


def test_a_loss_the_task_does_not_declare_is_named(tmp_path, gap_family, digits, monkeypatch):
    monkeypatch.setattr(GapTask, 'losses', DCGANTask.losses)
    from ganlab.core import GanlabError
    with pytest.raises(GanlabError, match=r"GapTask.step returned d_gap, which its `losses` does not declare"):
        train('gap', dataset=digits, out=tmp_path/'r', quiet=True, **dict(TINY, epochs=1))


@pytest.fixture
def gap_metric():
    "A metric registered for one test: the distance between the two sets' mean features, at every periodic evaluation"
    m = scores.register_metric(scores.Metric('mean_gap', lambda p: {'mean_gap': float(np.linalg.norm(p.a.mu - p.b.mu))},
                                             lambda r: [f"gap    {r['mean_gap']:.6f}"], periodic=True))
    yield m
    scores.METRICS.pop('mean_gap')


@pytest.fixture(scope='module')
def fid_weights(tmp_path_factory):
    from ganlab.metrics import random_fid_weights
    p = tmp_path_factory.mktemp('w')/'w.pth'
    random_fid_weights(p)
    return p


def test_a_new_metric_is_in_ganlab_fid(tmp_path, gap_metric, fid_weights, capsys):
    from PIL import Image
    from ganlab.cli import main
    for side, seed in (('a', 0), ('b', 1)):
        (tmp_path/side).mkdir()
        for i, im in enumerate(draw_digits(8, seed=seed, size=16)[0]): Image.fromarray(im[..., 0]).convert('RGB').save(tmp_path/side/f'{i}.png')
    main(['fid', str(tmp_path/'a'), str(tmp_path/'b'), '--metrics', 'mean_gap', '--weights', str(fid_weights), '--device', 'cpu',
          '--json', str(tmp_path/'m.json')])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('FID ') and out[1].startswith('gap    ') and float(out[1].split()[1]) > 0
    assert json.loads((tmp_path/'m.json').read_text())['mean_gap'] == pytest.approx(float(out[1].split()[1]), abs=1e-6)
    assert main(['fid', str(tmp_path/'a'), str(tmp_path/'b'), '--metrics', 'sharpness', '--weights', str(fid_weights)]) != 0
    assert "unknown metric 'sharpness'; known: fid, kid, mifid, is, prdc, mean_gap" in capsys.readouterr().err


@pytest.mark.slow
def test_a_new_metric_is_in_periodic_evaluation(tmp_path, gap_metric, fid_weights, digits, monkeypatch):
    monkeypatch.setenv('GANLAB_INCEPTION_WEIGHTS', str(fid_weights))
    t = train('dcgan', dataset=digits, out=tmp_path/'r', quiet=True, **dict(TINY, fid_every=1, fid_images=16))
    df = pd.read_csv(tmp_path/'r'/'metrics.csv')
    ev = df[df['fid'].notna()]
    assert list(df.columns[-6:]) == ['fid', 'precision', 'recall', 'density', 'coverage', 'mean_gap']
    assert len(ev) == 2 and (ev['mean_gap'] > 0).all() and ev[['precision', 'recall', 'density', 'coverage']].notna().all().all()
    assert t.best == pytest.approx(ev['fid'].min(), rel=1e-8)  # the task's metric still picks best.pt


@pytest.mark.slow
def test_a_checkpoint_from_before_the_renames_resumes(tmp_path, digits):
    "Checkpoints written before `best_fid` became `best` and `fixed_z` `fixed_inputs` still resume, bitwise"
    from ganlab.checkpoint import load_checkpoint, save_checkpoint
    kw = dict(TINY, epochs=2)
    t = train('dcgan', dataset=digits, out=tmp_path/'a', quiet=True, **kw)
    train('dcgan', dataset=digits, out=tmp_path/'b', quiet=True, until_step=3, **kw)
    ck = tmp_path/'b'/'checkpoints'/'last.pt'
    s = load_checkpoint(ck)
    s['best_fid'], s['fixed_z'] = s.pop('best'), s.pop('fixed_inputs')
    s.pop('best_metric')
    save_checkpoint(s, ck)
    u = train('dcgan', dataset=digits, out=tmp_path/'b', quiet=True, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(_weights(t).values(), _weights(u).values()))
