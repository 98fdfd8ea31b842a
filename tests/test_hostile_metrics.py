"""Hostile input to the metrics (issue 19): every case is one clear `GanlabError` naming the input, or a complete result.

Entry points: `fid` (`compare`, and `write_metrics_json` for `--json`), `stats` (`write_stats`), `features`
(`write_features_csv`), in the library and through the `ganlab` command. A case passes when it ends in a
`GanlabError` whose message names the file and says what is wrong (no traceback: any other exception fails the test),
or, for odd but valid input, in a result that counts every image (no silent loss). Peak memory is measured by
`bench/metrics_memory.py`, not here.
"""
import io, json, math, zipfile
import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.core import GanlabError
from ganlab import metrics as M


@pytest.fixture(scope='session')
def weights(tmp_path_factory):
    p = tmp_path_factory.mktemp('w')/'random-fid.pth'
    M.random_fid_weights(p)
    return p


@pytest.fixture(scope='session')
def ex(weights): return M.Extractor(weights=weights, device='cpu', batch=8)


@pytest.fixture(scope='session')
def good(tmp_path_factory):
    "Six small PNGs, one side of every comparison"
    d = tmp_path_factory.mktemp('good')
    for i, a in enumerate(np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)): Image.fromarray(a).save(d/f'{i}.png')
    return d


def png(a) -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, 'PNG'); return b.getvalue()  # the mode follows the array's shape and dtype


def npy_member(zf, name, header:dict, data:bytes):
    "A `.npy` member with any header at all (a lying shape, an object dtype) and any bytes"
    b = io.BytesIO(); np.lib.format.write_array_header_1_0(b, header); zf.writestr(f'{name}.npy', b.getvalue() + data)


class Unpickled:
    "Unpickling this creates the file `path`: the proof that nothing was unpickled is that the file is absent"
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (open, (self.path, 'w'))


# ---- the hostile inputs: name -> (maker(dir) -> path, words the error must contain) -----------------------------------

def _stats(d, name='s.npz', compressed=False, **arrays):
    base = dict(mu=np.zeros(2048), sigma=np.eye(2048))
    (np.savez_compressed if compressed else np.savez)(d/name, **{**base, **arrays})
    return d/name

def _pickled(d, key):
    (d/'marker').unlink(missing_ok=True)
    arr = np.array([Unpickled(d/'marker'), 1.0], dtype=object)
    p = d/f'pickled-{key}.npz'
    if key in ('mu', 'sigma'): np.savez(p, **{'mu': np.zeros(2048), 'sigma': np.eye(2048), key: arr}, allow_pickle=True)
    else: np.savez(p, images=np.zeros((2, 8, 8, 3), np.uint8), ids=arr)
    return p

def _raw(d, name, members):
    p = d/name
    with zipfile.ZipFile(p, 'w') as zf:
        for m in members: npy_member(zf, *m)
    return p

def _bytes(p, data:bytes):
    p.write_bytes(data); return p

def _zip_of(d, name, files:dict):
    p = d/name
    with zipfile.ZipFile(p, 'w', zipfile.ZIP_DEFLATED) as zf:
        for k, v in files.items(): zf.writestr(k, v)
    return p

STATS_CASES = {  # a statistics .npz as a side of `fid`
    'pickled mu': (lambda d: _pickled(d, 'mu'), 'mu holds Python objects'),
    'pickled sigma': (lambda d: _pickled(d, 'sigma'), 'sigma holds Python objects'),
    'NaN in sigma': (lambda d: _stats(d, sigma=np.full((2048, 2048), np.nan)), 'sigma holds 4,194,304 non-finite'),
    'infinity in mu': (lambda d: _stats(d, mu=np.full(2048, np.inf)), 'mu holds 2,048 non-finite'),
    'text mu': (lambda d: _stats(d, mu=np.array(['a'] * 2048)), 'mu is <U1, not a number array'),
    'complex mu': (lambda d: _stats(d, mu=np.zeros(2048, complex)), 'not a number array'),
    'mu and sigma disagree': (lambda d: _stats(d, sigma=np.eye(3)), 'do not fit together'),
    'asymmetric sigma': (lambda d: _stats(d, sigma=np.triu(np.ones((2048, 2048)))), 'sigma is not a covariance'),
    'negative variance': (lambda d: _stats(d, sigma=-np.eye(2048)), 'sigma is not a covariance'),
    'huge declared mu': (lambda d: _raw(d, 'huge.npz', [('mu', {'descr': '<f8', 'fortran_order': False, 'shape': (10 ** 12,)}, b'\0' * 64),
                                                       ('sigma', {'descr': '<f8', 'fortran_order': False, 'shape': (1, 1)}, b'\0' * 8)]), 'mu is truncated'),
    'truncated sigma': (lambda d: _raw(d, 'trunc.npz', [('mu', {'descr': '<f8', 'fortran_order': False, 'shape': (2048,)}, b'\0' * 2048 * 8),
                                                        ('sigma', {'descr': '<f8', 'fortran_order': False, 'shape': (2048, 2048)}, b'\0' * 1000)]), 'sigma is truncated'),
    'features that unpack a thousandfold': (lambda d: _stats(d, 'bomb.npz', True, features=np.zeros((10_000, 2048), np.float32)), 'features unpacks'),
    'non-finite features': (lambda d: _stats(d, features=np.full((4, 2048), np.nan, np.float32)), 'features holds'),
    'features of another width': (lambda d: _stats(d, features=np.zeros((4, 7), np.float32)), 'do not fit mu'),
    'negative count': (lambda d: _stats(d, n=np.int64(-5)), 'n must be one positive count'),
    'too many dimensions': (lambda d: _stats(d, mu=np.zeros(5000), sigma=np.eye(3)), 'mu is (5000,) float64'),
    'other dimensions': (lambda d: _stats(d, mu=np.zeros(3), sigma=np.eye(3)), 'statistics have 3 dimensions'),
    'not a zip': (lambda d: _bytes(d/'junk.npz', b'PK\x03\x04 not really'), 'not a readable .npz'),
    'no known arrays': (lambda d: np.savez(d/'other.npz', x=np.zeros(3)) or d/'other.npz', 'neither images nor mu and sigma'),
}

IMAGE_CASES = {  # an image side (decoded .npz, zip, folder): every entry point
    'pickled ids': (lambda d: _pickled(d, 'ids'), 'ids holds Python objects'),
    'object images': (lambda d: _raw(d, 'objimg.npz', [('images', {'descr': '|O', 'fortran_order': False, 'shape': (2,)}, b'\0' * 16)]), 'images holds Python objects'),
    'float images': (lambda d: np.savez(d/'f.npz', images=np.zeros((2, 8, 8, 3), np.float32)) or d/'f.npz', 'images must be N x H x W x 3 uint8'),
    'truncated images': (lambda d: _raw(d, 'ti.npz', [('images', {'descr': '|u1', 'fortran_order': False, 'shape': (100, 32, 32, 3)}, b'\0' * 3072)]), 'images is truncated'),
    'images of a huge declared size': (lambda d: _raw(d, 'hi.npz', [('images', {'descr': '|u1', 'fortran_order': False, 'shape': (1, 10 ** 6, 10 ** 6, 3)}, b'\0' * 64)]), 'images is truncated'),
    'no images': (lambda d: np.savez(d/'e.npz', images=np.zeros((0, 8, 8, 3), np.uint8)) or d/'e.npz', 'holds no images'),
    'ids and images disagree': (lambda d: np.savez(d/'ids.npz', images=np.zeros((2, 8, 8, 3), np.uint8), ids=np.array(['a', 'b', 'c'])) or d/'ids.npz', 'ids (3,) for 2 images'),
    'corrupt PNG in a zip': (lambda d: _zip_of(d, 'c.zip', {'a.png': png(np.zeros((8, 8, 3), np.uint8)), 'b.png': b'\x89PNG\r\n\x1a\nbroken'}), 'c.zip:b.png'),
    'a canvas over the pixel limit': (lambda d: _zip_of(d, 'bomb.zip', {'big.png': png(np.zeros((4097, 4097), np.uint8))}), 'bomb.zip:big.png'),
    'a zip that is not one': (lambda d: _bytes(d/'x.zip', b'PK\x05\x06' + b'\0' * 10), 'x.zip'),
    'a truncated zip': (lambda d: _bytes(d/'half.zip', _zip_of(d, 'full.zip', {f'{i}.png': png(np.full((64, 64, 3), i, np.uint8)) for i in range(4)}).read_bytes()[:300]), 'half.zip'),
    'an empty folder': (lambda d: (d/'empty').mkdir() or d/'empty', 'folder holds no images'),
}


def _check(e, words, path):
    msg = str(e.value)
    assert words in msg and '\n' not in msg, msg
    assert path.name in msg or str(path) in msg, msg


@pytest.mark.parametrize('case', list(STATS_CASES))
@pytest.mark.parametrize('side', ['a', 'b'])
def test_fid_stats_side(case, side, ex, good, tmp_path):
    p = STATS_CASES[case][0](tmp_path)
    with pytest.raises(GanlabError) as e: M.compare(*((p, good) if side == 'a' else (good, p)), ex, quiet=True)
    _check(e, STATS_CASES[case][1], p)
    assert not (tmp_path/'marker').exists()  # nothing was unpickled


@pytest.mark.parametrize('case', list(IMAGE_CASES))
@pytest.mark.parametrize('entry', ['fid', 'stats', 'features'])
def test_image_side(case, entry, ex, good, tmp_path):
    p = IMAGE_CASES[case][0](tmp_path)
    run = {'fid': lambda: M.compare(good, p, ex, quiet=True), 'stats': lambda: M.write_stats(p, tmp_path/'out.npz', ex, quiet=True),
           'features': lambda: M.write_features_csv(p, tmp_path/'out.csv', ex, quiet=True)}[entry]
    with pytest.raises(GanlabError) as e: run()
    _check(e, IMAGE_CASES[case][1], p)
    assert not (tmp_path/'marker').exists() and not (tmp_path/'out.npz').exists() and not (tmp_path/'out.csv').exists()


# ---- odd but valid input: every image is counted ----------------------------------------------------------------------

@pytest.mark.slow
def test_large_images_stream_and_count(ex, good, tmp_path):
    "Large images (a few MB each decoded, a few KB each in the zip) are fitted one by one: all counted, same as one at a time"
    big = np.zeros((1500, 1400, 3), np.uint8); big[::7] = 255
    z = _zip_of(tmp_path, 'big.zip', {f'{i}.png': png(np.roll(big, i, 0)) for i in range(3)})
    st = M.measure(z, ex, features=True, quiet=True)
    assert st.n == 3
    one = ex(np.roll(big, 1, 0)[None])[0].numpy()[0]
    assert np.abs(st.features[1] - one).max() <= 1e-4 * np.abs(one).max()
    assert M.write_features_csv(z, tmp_path/'f.csv', ex, quiet=True) == 3


@pytest.mark.slow
def test_every_mode_is_counted(ex, tmp_path):
    "Grey, grey+alpha, RGBA, palette, 16-bit and CMYK images of several sizes: no image is dropped"
    g = np.random.default_rng(1)
    files = {'l.png': png(g.integers(0, 256, (20, 30), dtype=np.uint8)),
             'la.png': png(g.integers(0, 256, (20, 30, 2), dtype=np.uint8)),
             'rgba.png': png(g.integers(0, 256, (40, 40, 4), dtype=np.uint8)),
             'i16.png': png(g.integers(0, 65535, (32, 32), dtype=np.uint16))}
    b = io.BytesIO(); Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert('P').save(b, 'PNG'); files['p.png'] = b.getvalue()
    b = io.BytesIO(); Image.fromarray(g.integers(0, 256, (33, 31, 3), dtype=np.uint8)).convert('CMYK').save(b, 'JPEG'); files['cmyk.jpg'] = b.getvalue()
    z = _zip_of(tmp_path, 'modes.zip', files)
    assert M.measure(z, ex, quiet=True).n == len(files)
    assert M.write_features_csv(z, tmp_path/'f.csv', ex, quiet=True) == len(files)


def test_broken_weights_are_refused(good, tmp_path):
    sd = M.random_fid_weights()
    torch.save({**sd, 'Mixed_6b.branch1x1.conv.weight': sd['Mixed_6b.branch1x1.conv.weight'] * math.inf}, tmp_path/'inf.pth')
    for run in (lambda: M.compare(good, good, weights=tmp_path/'inf.pth', device='cpu', quiet=True),
                lambda: M.write_stats(good, tmp_path/'s.npz', weights=tmp_path/'inf.pth', device='cpu', quiet=True),
                lambda: M.write_features_csv(good, tmp_path/'f.csv', weights=tmp_path/'inf.pth', device='cpu', quiet=True)):
        with pytest.raises(GanlabError, match='inf.pth holds non-finite values'): run()


# ---- output paths ------------------------------------------------------------------------------------------------------

OUTPUTS = {
    'an existing folder': (lambda d: d, 'is a folder'),
    'under a file': (lambda d: _bytes(d/'f', b'x')/'out', 'is a file, not a folder'),
    'a place that cannot be written': (lambda d: '/proc/ganlab-out', 'cannot write in /proc'),
}


@pytest.mark.parametrize('case', list(OUTPUTS))
@pytest.mark.parametrize('entry', ['fid --json', 'stats --out', 'features --out'])
def test_output_paths(case, entry, ex, good, tmp_path):
    out = OUTPUTS[case][0](tmp_path)
    run = {'fid --json': lambda: M.write_metrics_json({'fid': 1.0}, out),
           'stats --out': lambda: M.write_stats(good, out, ex, quiet=True),
           'features --out': lambda: M.write_features_csv(good, out, ex, quiet=True)}[entry]
    with pytest.raises(GanlabError) as e: run()
    assert OUTPUTS[case][1] in str(e.value) and str(out) in str(e.value)


def test_outputs_never_replace_an_input(ex, good, tmp_path):
    np.savez(tmp_path/'imgs.npz', images=np.zeros((2, 8, 8, 3), np.uint8))
    before = (tmp_path/'imgs.npz').read_bytes()
    for run in (lambda: M.write_stats(tmp_path/'imgs.npz', tmp_path/'imgs.npz', ex, quiet=True),
                lambda: M.write_features_csv(tmp_path/'imgs.npz', tmp_path/'imgs.npz', ex, quiet=True),
                lambda: M.write_metrics_json({'fid': 1.0}, tmp_path/'imgs.npz', inputs=[good, tmp_path/'imgs.npz'])):
        with pytest.raises(GanlabError, match='is also an input'): run()
    assert (tmp_path/'imgs.npz').read_bytes() == before


def test_non_finite_metrics_are_strict_json(tmp_path):
    res = {'fid': math.inf, 'kid': -math.inf, 'kid_std': float('nan'), 'is_a': np.float64(np.nan), 'n_a': 3, 'extractor': 'fid'}
    M.write_metrics_json(res, tmp_path/'m.json')
    text = (tmp_path/'m.json').read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f'{c} in the JSON'))
    assert m['fid'] is m['kid'] is m['kid_std'] is m['is_a'] is None and m['n_a'] == 3
    assert 'fid=inf' in m['notes'][0] and 'kid_std=nan' in m['notes'][0]


# ---- through the command: one line on stderr, exit status 2 -------------------------------------------------------------

@pytest.mark.parametrize('args,words', [
    (['fid', 'GOOD', 'PICKLED'], 'mu holds Python objects'),
    (['fid', 'GOOD', 'NAN'], 'non-finite'),
    (['stats', 'IDS', '--out', 'OUT/s.npz'], 'ids holds Python objects'),
    (['stats', 'GOOD', '--out', 'OUT'], 'is a folder'),
    (['features', 'GOOD', '--out', 'OUT'], 'is a folder'),
    (['features', 'GOOD', '--out', '/proc/x.csv'], 'cannot write in /proc'),
])
def test_the_command_says_one_line(args, words, weights, good, tmp_path, capsys):
    from ganlab.cli import main
    paths = {'GOOD': good, 'PICKLED': _pickled(tmp_path, 'mu'), 'IDS': _pickled(tmp_path, 'ids'), 'OUT': tmp_path,
             'NAN': _stats(tmp_path, 'nan.npz', sigma=np.full((2048, 2048), np.nan))}
    argv = [str(paths[a.split('/')[0]]) + a[len(a.split('/')[0]):] if a.split('/')[0] in paths else a for a in args]
    code = main(argv + ['--weights', str(weights), '--device', 'cpu', '--quiet'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path/'marker').exists()
