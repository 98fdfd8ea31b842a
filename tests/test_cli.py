"""End-to-end runs of the `ganlab` command, as a user types it."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')


def run(*args, check=True):
    r = subprocess.run([GANLAB, *map(str, args)], capture_output=True, text=True, timeout=600, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if check: assert r.returncode == 0, r.stderr
    return r


def test_help_lists_the_subcommands():
    out = run('--help').stdout
    assert 'demo' in out and 'doctor' in out
    assert run('--version').stdout.startswith('ganlab ')
    assert '--workers' in run('doctor', '--help').stdout
    for group, names in (('train', ('families:', 'dcgan', 'cgan', 'cyclegan', 'cut', 'celeba64')), ('kaggle', ('actions:', 'push', 'plan')),
                         ('classifier', ('actions:', 'train', 'eval', 'cas'))):
        out = run(group, '--help').stdout
        assert all(n in out for n in names), out


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('demo')
    r = run('demo', '--out', d, '--n', 400, '--workers', 2, '--epochs', 5)  # five epochs come before the two-minute budget
    assert 'score against truth 100.00%' in r.stdout
    # the demo ends by saying what to run next, with the folder it wrote
    tail = r.stdout.rstrip().splitlines()[-5:]
    assert tail[0] == 'next:' and f'ganlab app {d}/train ' in tail[1] and f'ganlab generate {d}/train --n 64' in tail[2], tail
    assert tail[4].lstrip().startswith('ganlab train dcgan --data YOUR_IMAGES'), tail
    return d


@pytest.mark.slow
def test_demo_writes_everything(demo_dir):
    names = {p.name for p in (demo_dir/'doctor').iterdir()}
    assert {'decoded.npz', 'decoded.csv', 'report.json', 'rejected.csv', 'contact_sheet.png', 'reasons.png', 'channels.png', 'sizes.png'} <= names
    rep = json.loads((demo_dir/'doctor'/'report.json').read_text())
    assert rep['score']['score'] == 100.0 and rep['counts']['records'] == rep['counts']['decoded'] + rep['counts']['rejected']
    assert len(rep['rejected']) == rep['counts']['rejected'] and {'shard', 'line', 'id', 'reason'} <= set(rep['rejected'][0])
    z = np.load(demo_dir/'doctor'/'decoded.npz')
    assert z['images'].shape == (rep['counts']['decoded'], 32, 32, 3) and z['images'].dtype == np.uint8 and z['ids'].dtype.kind == 'U'


@pytest.mark.slow
def test_doctor_is_the_same_with_one_or_two_workers(demo_dir, tmp_path):
    for w in (1, 2): run('doctor', demo_dir/'shards', '--out', tmp_path/f'w{w}', '--workers', w, '--no-plots', '--quiet')
    a, b = np.load(tmp_path/'w1'/'decoded.npz'), np.load(tmp_path/'w2'/'decoded.npz')
    assert (a['ids'] == b['ids']).all() and np.array_equal(a['images'], b['images'])
    assert (tmp_path/'w1'/'rejected.csv').read_text() == (tmp_path/'w2'/'rejected.csv').read_text()


@pytest.mark.slow
def test_doctor_options(demo_dir, tmp_path):
    r = run('doctor', str(demo_dir/'shards'/'shard-00*'), '--out', tmp_path/'o', '--size', 16, '--background', '0,0,0', '--rotation', 'ccw', '--samples', 8)
    assert 'decoded' in r.stdout
    assert np.load(tmp_path/'o'/'decoded.npz')['images'].shape[1:] == (16, 16, 3)


def test_empty_shard(tmp_path):
    (tmp_path/'e.jsonl').write_text('')
    run('doctor', tmp_path/'e.jsonl', '--out', tmp_path/'o', '--workers', 2)
    assert np.load(tmp_path/'o'/'decoded.npz')['images'].shape == (0, 32, 32, 3)
    assert json.loads((tmp_path/'o'/'report.json').read_text())['counts'] == dict(lines=0, records=0, decoded=0, rejected=0)


@pytest.mark.parametrize('args,msg', [(['doctor', 'no/such.jsonl', '--out', 'x'], 'ganlab doctor: error: shards: no such file or folder: no/such.jsonl'),
                                      (['doctor', 'empty', '--out', 'x'], 'ganlab doctor: error: shards: empty holds no .jsonl or .jsonl.gz files'),
                                      (['doctor', 'x.jsonl', '--out', 'x', '--size', '0'], 'size must be a positive integer, not 0'),
                                      (['doctor', 'x.jsonl', '--out', 'x', '--background', 'nope'], "background: 'nope' is not a colour"),
                                      (['doctor', 'x.jsonl', '--out', 'x', '--truth', 'nowhere'], 'truth: nowhere has no truth.jsonl'),
                                      pytest.param(['demo', '--n', '3', '--out', 'x'], 'demo: n must be at least 10', marks=pytest.mark.slow)])  # imports torch: seconds
def test_bad_input_is_one_clear_line(tmp_path, args, msg):
    (tmp_path/'x.jsonl').write_text('{}\n'); (tmp_path/'empty').mkdir()
    r = subprocess.run([GANLAB, *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr


# ---- metrics commands ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def fid_weights(tmp_path_factory):
    from ganlab.metrics import random_fid_weights
    p = tmp_path_factory.mktemp('w')/'random-fid.pth'
    random_fid_weights(p)
    return p


@pytest.mark.slow
def test_features_writes_one_row_per_image(demo_dir, fid_weights, tmp_path):
    "The seed's submission.csv: 1,000 generated images in, 1,000 rows of id,f0..f2047 out, ids from the file names"
    import zipfile, pandas as pd
    from PIL import Image
    imgs = np.load(demo_dir/'doctor'/'decoded.npz')['images']
    with zipfile.ZipFile(tmp_path/'images.zip', 'w') as z:
        for i in range(1000):
            buf = __import__('io').BytesIO(); Image.fromarray(imgs[i % len(imgs)]).save(buf, 'PNG'); z.writestr(f'dig-{i:06d}.png', buf.getvalue())
    r = run('features', tmp_path/'images.zip', '--out', tmp_path/'submission.csv', '--weights', fid_weights, '--device', 'cpu')
    assert 'wrote 1,000 rows' in r.stdout
    df = pd.read_csv(tmp_path/'submission.csv', dtype={'id': str})
    assert df.shape == (1000, 2049) and list(df.columns[:2]) == ['id', 'f0'] and df.columns[-1] == 'f2047'
    assert df['id'].tolist() == [f'dig-{i:06d}' for i in range(1000)] and np.isfinite(df.iloc[:, 1:].to_numpy()).all()


@pytest.mark.slow
def test_fid_json_and_stats(demo_dir, fid_weights, tmp_path):
    npz = demo_dir/'doctor'/'decoded.npz'
    z = np.load(npz)
    np.savez(tmp_path/'a.npz', ids=z['ids'][:60], images=z['images'][:60]); np.savez(tmp_path/'b.npz', ids=z['ids'][60:120], images=z['images'][60:120])
    w = ['--weights', fid_weights, '--device', 'cpu']
    r = run('fid', tmp_path/'a.npz', tmp_path/'b.npz', '--kid', '--mifid', '--is', '--kid-subsets', 5, '--json', tmp_path/'m.json', *w)
    m = json.loads((tmp_path/'m.json').read_text())
    assert {'fid', 'kid', 'kid_std', 'mifid', 'is_a', 'is_b', 'n_a', 'n_b'} <= set(m) and m['n_a'] == m['n_b'] == 60
    assert f"FID    {m['fid']:.4f}" in r.stdout and 'KID' in r.stdout and 'MiFID' in r.stdout
    run('stats', tmp_path/'b.npz', '--out', tmp_path/'b-stats.npz', '--quiet', *w)
    run('fid', tmp_path/'a.npz', tmp_path/'b-stats.npz', '--json', tmp_path/'m2.json', '--quiet', *w)
    assert abs(json.loads((tmp_path/'m2.json').read_text())['fid'] - m['fid']) <= 1e-9 * m['fid']


@pytest.mark.slow
@pytest.mark.parametrize('args,msg', [(['fid', 'nowhere', 'x.npz'], 'nowhere: no such file or folder'),
                                      (['fid', 'empty', 'x.npz'], 'empty: folder holds no images'),
                                      (['fid', 'x.npz', 'x.npz', '--weights', 'missing.pth'], 'given path missing.pth is not a file'),
                                      (['fid', 'x.npz', 'x.npz', '--weights', 'x.npz'], 'is not a loadable weights file'),
                                      (['features', 'x.npz', '--out', 'f.csv', '--extractor', 'clip'], "extractor must be one of fid, torchvision, classifier, not 'clip'"),
                                      (['fid', 'x.npz', 'stats.npz', '--kid', '--weights', 'W'], 'holds no features, which KID and MiFID need')])
def test_metric_bad_input_is_one_clear_line(tmp_path, fid_weights, args, msg):
    (tmp_path/'empty').mkdir()
    np.savez(tmp_path/'x.npz', ids=np.array(['a', 'b']), images=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(tmp_path/'stats.npz', mu=np.zeros(2048), sigma=np.eye(2048))
    args = [str(fid_weights) if a == 'W' else a for a in args]
    r = subprocess.run([GANLAB, *args, '--device', 'cpu'], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr
