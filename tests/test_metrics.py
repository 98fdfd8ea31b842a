"""ganlab.metrics against the reference tools: torch-fidelity (TensorFlow's FID), pytorch-fid and torchmetrics.

Without the real FID weights (no network here) every tool gets the same seeded random state dict in the exact key
layout of `pt_inception-2015-12-05-6726825d.pth`; where the real file is found ($GANLAB_INCEPTION_WEIGHTS, Kaggle
input, torch hub cache) the same tests run on it unchanged. Images are real CIFAR-10 from ../shared/data, or
generated ones when that is absent.
"""
import io, shutil, zipfile
import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.core import GanlabError, find_weights, shared_data
from ganlab import metrics as M

N = 64  # images per side: enough for every metric, small enough for a 2-core CPU


def rel(a, b):
    "Largest absolute difference relative to the largest reference magnitude"
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope='session')
def weights(tmp_path_factory):
    "The real FID weights when this machine has them, else seeded random ones in the same layout"
    try: return find_weights(M.FID_WEIGHTS, env=M.WEIGHTS_ENV, download=False)
    except GanlabError: pass
    p = tmp_path_factory.mktemp('weights')/'random-fid.pth'
    M.random_fid_weights(p, seed=0)
    return p


def _cifar(split, n):
    z = shared_data('cifar10-jpg.zip')
    if z is None: return None
    with zipfile.ZipFile(z) as zf:
        names = sorted(m for m in zf.namelist() if m.startswith(f'{split}/') and m.endswith('.jpg'))[::97][:n]
        return np.stack([np.asarray(Image.open(io.BytesIO(zf.read(m))).convert('RGB')) for m in names])


def _generated(seed, n):
    "Smooth random images (upsampled noise), when CIFAR-10 is absent"
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g) * 255, size=32, mode='bilinear', align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope='session')
def images():
    "Two sets of N real 32x32 images (CIFAR-10 test and train), or generated ones"
    a, b = _cifar('test', N), _cifar('train', N)
    if a is None: a, b = _generated(1, N), _generated(2, N)
    assert a.shape == b.shape == (N, 32, 32, 3) and a.dtype == np.uint8
    return a, b


@pytest.fixture(scope='session')
def npz_sides(images, tmp_path_factory):
    d = tmp_path_factory.mktemp('sides')
    for name, x in zip('ab', images): np.savez(d/f'{name}.npz', ids=np.array([f'{name}{i}' for i in range(len(x))]), images=x)
    return d/'a.npz', d/'b.npz'


def chw(x): return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope='session')
def ours(weights):
    return M.Extractor('fid', weights, device='cpu', batch=32)


@pytest.fixture(scope='session')
def ours_feats(ours, images):
    return [ours(x) for x in images]


# ---- torch-fidelity: the default (TensorFlow 1 resize) -------------------------------------------------------------

class _Uint8Set(torch.utils.data.Dataset):
    def __init__(self, x): self.x = chw(x)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i]


@pytest.fixture(scope='session')
def fidelity(weights, images):
    "torch-fidelity's features, logits and metrics on the same images and weights"
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    fe = FeatureExtractorInceptionV3('inception-v3-compat', ['2048', 'logits_unbiased'], feature_extractor_weights_path=str(weights))
    with torch.no_grad(): feats = [fe(chw(x)) for x in images]
    m = torch_fidelity.calculate_metrics(input1=_Uint8Set(images[0]), input2=_Uint8Set(images[1]), cuda=False, fid=True, kid=True,
                                         isc=True, kid_subset_size=N // 2, batch_size=32, feature_extractor_weights_path=str(weights),
                                         verbose=False, cache=False, save_cpu_ram=True)
    return feats, m


def test_layout_is_the_fid_weights_layout(weights):
    "Our network's state dict has the keys and shapes of the FID weights file"
    sd = torch.load(weights, map_location='cpu', weights_only=True)
    own = M.fid_inception().state_dict()
    assert {k: tuple(v.shape) for k, v in own.items() if not k.endswith('num_batches_tracked')} == \
           {k: tuple(v.shape) for k, v in sd.items() if not k.endswith('num_batches_tracked')}


@pytest.mark.slow
def test_features_equal_torch_fidelity(ours_feats, fidelity):
    for (f, l), (tf, tl) in zip(ours_feats, fidelity[0]):
        assert rel(f, tf) < 1e-4, rel(f, tf)
        assert rel(l, tl) < 1e-4, rel(l, tl)


@pytest.mark.slow
def test_unfused_network_equals_torch_fidelity(weights, images, fidelity):
    "The plain torchvision forward (fused=False) is the reference path too"
    f, _ = M.Extractor('fid', weights, device='cpu', fused=False)(images[0][:16])
    assert rel(f, fidelity[0][0][0][:16]) < 1e-4


@pytest.mark.slow
def test_fid_kid_is_equal_torch_fidelity(ours, npz_sides, fidelity):
    res = M.compare(*npz_sides, ours, metrics=('fid', 'kid', 'is'), kid_subset_size=N // 2, quiet=True)
    m = fidelity[1]
    assert abs(res['fid'] - m['frechet_inception_distance']) <= 1e-4 * abs(m['frechet_inception_distance'])
    assert abs(res['kid'] - m['kernel_inception_distance_mean']) <= 1e-3
    assert abs(res['kid_std'] - m['kernel_inception_distance_std']) <= 1e-3
    assert abs(res['is_a'] - m['inception_score_mean']) <= 1e-3
    assert abs(res['is_a_std'] - m['inception_score_std']) <= 1e-3
    assert res['fid'] > 1e-3  # two different image sets: the comparison is not between zeros


@pytest.mark.slow
def test_sqrtm_method_equals_eigh(ours_feats):
    a, b = (M.FeatureStats().append(f) for f, _ in ours_feats)
    d1 = M.frechet_distance(a.mu, a.sigma, b.mu, b.sigma, 'eigh')
    d2 = M.frechet_distance(a.mu, a.sigma, b.mu, b.sigma, 'sqrtm')
    assert abs(d1 - d2) <= 1e-4 * abs(d2)


# ---- pytorch-fid: the `torch` resize ---------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def pytorch_fid_model(weights, tmp_path_factory):
    "pytorch-fid's own InceptionV3, loading our weights from a temporary torch hub cache under the name it expects"
    from pytorch_fid.inception import InceptionV3
    home = tmp_path_factory.mktemp('torch-home')
    (home/'hub'/'checkpoints').mkdir(parents=True)
    shutil.copy(weights, home/'hub'/'checkpoints'/M.FID_WEIGHTS.name)
    mp = pytest.MonkeyPatch()
    mp.setenv('TORCH_HOME', str(home))
    try: return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally: mp.undo()


def _pytorch_fid_distance(monkeypatch, *stats):
    "pytorch-fid's `calculate_frechet_distance`, unchanged"
    import inspect, scipy.linalg
    from pytorch_fid import fid_score
    if 'disp' not in inspect.signature(scipy.linalg.sqrtm).parameters:
        # pytorch-fid 0.3.0 calls `linalg.sqrtm(A, disp=False)`, a signature SciPy 1.18 removed: hand it the old one
        class OldLinalg:
            @staticmethod
            def sqrtm(a, disp=True): return (scipy.linalg.sqrtm(a), None) if not disp else scipy.linalg.sqrtm(a)
        monkeypatch.setattr(fid_score, 'linalg', OldLinalg)
    return fid_score.calculate_frechet_distance(*stats)


@pytest.mark.slow
def test_resize_torch_equals_pytorch_fid(weights, images, pytorch_fid_model, monkeypatch):
    ex = M.Extractor('fid', weights, device='cpu', resize='torch', batch=32)
    stats = []
    for x in images:
        with torch.no_grad(): pf = pytorch_fid_model(chw(x).float() / 255)[0].squeeze(-1).squeeze(-1).numpy().astype(np.float64)
        f = ex(x)[0].numpy()
        assert rel(f, pf) < 1e-4, rel(f, pf)
        stats.append((pf.mean(0), np.cov(pf, rowvar=False), M.FeatureStats().append(f)))
    ref = _pytorch_fid_distance(monkeypatch, stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    a, b = stats[0][2], stats[1][2]
    for method in ('eigh', 'sqrtm'):
        d = M.frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method)
        assert abs(d - ref) <= 1e-4 * abs(ref), (method, d, ref)


@pytest.mark.slow
def test_the_two_resizes_differ(ours, weights, images):
    "The reason for the option: the peers' resizes give measurably different features"
    f1 = ours(images[0][:8])[0]
    f2 = M.Extractor('fid', weights, device='cpu', resize='torch')(images[0][:8])[0]
    assert rel(f1, f2) > 1e-3


@pytest.mark.slow
def test_stats_files_interoperate_with_pytorch_fid(ours, npz_sides, tmp_path, pytorch_fid_model):
    "ganlab's statistics .npz loads in pytorch-fid, and pytorch-fid's in ganlab"
    from pytorch_fid.fid_score import compute_statistics_of_path
    st = M.write_stats(npz_sides[1], tmp_path/'b.npz', ours, quiet=True)
    mu, sigma = compute_statistics_of_path(str(tmp_path/'b.npz'), None, 50, 2048, 'cpu')
    assert np.array_equal(mu, st.mu) and np.array_equal(sigma, st.sigma)
    np.savez_compressed(tmp_path/'pf.npz', mu=st.mu, sigma=st.sigma)  # what pytorch-fid --save-stats writes
    direct = M.compare(*npz_sides, ours, quiet=True)['fid']
    via_file = M.compare(npz_sides[0], tmp_path/'pf.npz', ours, quiet=True)['fid']
    assert abs(direct - via_file) <= 1e-9 * abs(direct)


# ---- torchmetrics: MiFID ---------------------------------------------------------------------------------------------

def _torchmetrics_mifid(gen, real):
    "torchmetrics' MiFID on given features: it averages over the side it calls real, so the generated side goes there"
    from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance
    m = MemorizationInformedFrechetInceptionDistance(feature=torch.nn.Identity())
    m.update(torch.as_tensor(gen, dtype=torch.float64), real=True)
    m.update(torch.as_tensor(real, dtype=torch.float64), real=False)
    return float(m.compute())


@pytest.mark.slow
@pytest.mark.parametrize('case', ['different', 'near_copies'])
def test_mifid_equals_torchmetrics(ours_feats, case):
    real = ours_feats[1][0].numpy()
    gen = ours_feats[0][0].numpy() if case == 'different' else real[::-1] * (1 + 0.3 * np.random.default_rng(0).standard_normal(real.shape)).astype(np.float32)
    gs, rs = M.FeatureStats().append(gen), M.FeatureStats().append(real)
    fid = M.frechet_distance(gs.mu, gs.sigma, rs.mu, rs.sigma)
    dist = M.memorization_distance(gen, real)
    ours = M.mifid(fid, dist)
    ref = _torchmetrics_mifid(gen, real)
    assert abs(ours - ref) <= 1e-4 * abs(ref), (ours, ref, dist)
    if case == 'near_copies': assert dist < 0.1 and ours > 10 * fid  # memorisation is punished


def _prdc_sides(seed=0, d=64):
    "Real features in clusters, generated ones covering some clusters well and others not at all: PRDC far from 0 and 1"
    g = np.random.default_rng(seed)
    centres = g.normal(size=(8, d)) * 3
    real = centres[g.integers(0, 8, 600)] + g.normal(size=(600, d))
    fake = centres[g.integers(0, 6, 500)] * 1.02 + g.normal(size=(500, d)) * 1.1
    return real.astype(np.float32), fake.astype(np.float32)


@pytest.mark.parametrize('k', [3, 5])
def test_prdc_equals_the_reference_and_torch_fidelity(k):
    from prdc import compute_prdc
    from torch_fidelity.metric_prc import calculate_precision_recall_full
    from ganlab.scores import prdc
    real, fake = _prdc_sides()
    ours, streamed = prdc(real, fake, k), prdc(real, fake, k, block=3000)  # blocks of 5 rows
    ref = compute_prdc(real.astype(np.float64), fake.astype(np.float64), k)
    for key in ('precision', 'recall', 'density', 'coverage'):
        assert abs(ours[key] - ref[key]) <= 1e-6 and streamed[key] == ours[key], (key, ours[key], ref[key])
    assert 0.05 < ours['precision'] < 0.99 and 0.05 < ours['recall'] < 0.99  # neither trivial
    p, r = calculate_precision_recall_full(torch.from_numpy(fake).double(), torch.from_numpy(real).double(), k)  # 1: generated
    assert abs(ours['precision'] - p) <= 1e-6 and abs(ours['recall'] - r) <= 1e-6


def test_prdc_memory_is_bounded_by_the_block():
    "The distance blocks, not the N x M matrix: 3,000 x 3,000 images in blocks of 2^20 distances stay far below 72 MB"
    import tracemalloc
    from ganlab.scores import prdc
    g = np.random.default_rng(1)
    real, fake = g.normal(size=(3000, 32)), g.normal(size=(3000, 32))
    tracemalloc.start()
    prdc(real, fake, block=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30e6, peak  # one 3,000 x 349 block of float64 is 8.4 MB; the whole matrix would be 72 MB


@pytest.mark.slow
def test_prdc_in_inception_features_equals_the_reference(ours_feats):
    from prdc import compute_prdc
    from ganlab.scores import prdc
    gen, real = ours_feats[0][0].double().numpy(), ours_feats[1][0].double().numpy()
    ours, ref = prdc(real, gen, 5), compute_prdc(real, gen, 5)
    for key in ('precision', 'recall', 'density', 'coverage'): assert abs(ours[key] - ref[key]) <= 1e-6, key


# ---- behaviour -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero(ours, images, npz_sides, tmp_path):
    "The same images as an .npz and as a folder of PNG files (lossless): two full passes, FID 0"
    for i, x in enumerate(images[0]): Image.fromarray(x).save(tmp_path/f'{i:03d}.png')
    res = M.compare(npz_sides[0], tmp_path, ours, quiet=True)
    ref = M.compare(*npz_sides, ours, quiet=True)
    assert abs(res['fid']) <= 1e-6 * ref['fid']


@pytest.mark.slow
def test_fid_rises_with_noise(ours, images):
    x = images[0].astype(np.float64)
    ref = M.FeatureStats().append(ours(images[0])[0])
    fids = []
    for sigma in (4, 16, 48, 96):
        noisy = np.clip(x + np.random.default_rng(0).normal(0, sigma, x.shape), 0, 255).round().astype(np.uint8)
        s = M.FeatureStats().append(ours(noisy)[0])
        fids.append(M.frechet_distance(ref.mu, ref.sigma, s.mu, s.sigma))
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


@pytest.mark.slow
def test_saved_stats_give_the_same_fid(ours, npz_sides, tmp_path):
    M.write_stats(npz_sides[1], tmp_path/'ref.npz', ours, features=True, quiet=True)
    direct = M.compare(*npz_sides, ours, metrics=('fid', 'kid', 'mifid'), kid_subset_size=N // 2, quiet=True)
    saved = M.compare(npz_sides[0], tmp_path/'ref.npz', ours, metrics=('fid', 'kid', 'mifid'), kid_subset_size=N // 2, quiet=True)
    for k in ('fid', 'kid', 'mifid'): assert abs(direct[k] - saved[k]) <= 1e-9 * max(abs(direct[k]), 1e-12), k


@pytest.mark.slow
def test_torchvision_extractor_equals_torchvision(images, tmp_path):
    "The fused torchvision extractor equals torchvision's own inception_v3 (transform_input on, fc removed)"
    from torchvision.models import inception_v3
    from torchvision.transforms.v2 import functional as TF
    net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1); m.running_var.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    torch.save(net.state_dict(), tmp_path/'tv.pth')
    ex = M.Extractor('torchvision', tmp_path/'tv.pth', device='cpu')
    x = chw(images[0][:8])
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        ref = net(TF.normalize(TF.resize(x.float() / 255, [299, 299], antialias=True), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    f, logits = ex(x)
    assert rel(f, ref) < 1e-4 and logits.shape == (8, 1000)


def test_missing_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.delenv(M.WEIGHTS_ENV, raising=False)
    with pytest.raises(GanlabError) as e: M.Extractor(download=False)
    msg = str(e.value)
    assert M.FID_WEIGHTS.name in msg and M.FID_WEIGHTS.sha256 in msg and str(tmp_path) in msg and M.WEIGHTS_ENV in msg


@pytest.mark.slow
def test_features_csv_one_row_per_image(ours, images, tmp_path):
    import pandas as pd
    d = tmp_path/'gen'; d.mkdir()
    for i, a in enumerate(images[0][:20]): Image.fromarray(a).save(d/f'dig-{i:06d}.png')
    assert M.write_features_csv(d, tmp_path/'submission.csv', ours, quiet=True) == 20
    df = pd.read_csv(tmp_path/'submission.csv')
    assert list(df.columns) == ['id'] + [f'f{i}' for i in range(2048)]
    assert df['id'].tolist() == [f'dig-{i:06d}' for i in range(20)]
    assert np.array_equal(df.iloc[:, 1:].to_numpy(np.float32), ours(images[0][:20])[0].numpy())  # PNG is lossless; 9 digits round-trip


def test_ganlab_fid_prints_prdc_with_its_counts(tmp_path, capsys):
    "`ganlab fid --prdc`: precision, recall, density and coverage, with k and the two counts, and in --json"
    import json
    from ganlab.cli import main
    from ganlab.data import draw_digits
    M.random_fid_weights(tmp_path/'w.pth')
    for side, seed, n in (('a', 0, 12), ('b', 1, 10)):
        (tmp_path/side).mkdir()
        for i, im in enumerate(draw_digits(n, seed=seed, size=16)[0]): Image.fromarray(im[..., 0]).convert('RGB').save(tmp_path/side/f'{i}.png')
    assert main(['fid', str(tmp_path/'a'), str(tmp_path/'b'), '--prdc', '--weights', str(tmp_path/'w.pth'), '--device', 'cpu',
                 '--json', str(tmp_path/'m.json')]) in (0, None)
    out = capsys.readouterr().out
    assert 'Precision ' in out and 'Density ' in out and 'k=5 nearest neighbours; 12 generated vs 10 real' in out, out
    res = json.loads((tmp_path/'m.json').read_text())
    assert all(0 <= res[k] <= 1 for k in ('precision', 'recall', 'coverage')) and res['prdc_k'] == 5
