"""ganlab.classifier: the ruler that needs no download; ganlab.fidelity: class fidelity measured with it.

A tiny classifier trained on drawn digits (`ganlab.data.draw_digits`) must learn, be reproducible bit for bit, refuse
unsafe or malformed files with a clear message, give through `ganlab.metrics` the Fréchet distance that
`frechet_distance` gives on its features, and count accuracy per class right on a hand-made case. The CIFAR-10 zip in
../shared/data, when present, is read through the same paths (train/ for training, test/ for evaluation). Class fidelity
both ways: GAN-test reads `ganlab generate`'s file names as their classes; CAS (trained on generated, tested on real) is
high on separable classes and near chance when the generated images' classes are shuffled.
"""
import colorsys, io, os, pickle, re, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.core import GanlabError
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab import metrics as M
from ganlab import classifier as C
from ganlab.fidelity import classification_accuracy_score, evaluate_classifier

TINY = dict(widths=(16, 32, 64), batch=32, lr=0.1, flip=False, device='cpu', quiet=True)


def digits(n, seed):
    x, y = draw_digits(n, seed=seed, show_progress=False)
    return ImageArrayDataset(x, labels=y, classes=[str(d) for d in range(10)])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A tiny digit classifier, saved: `(classifier, path)`"
    p = tmp_path_factory.mktemp('clf')/'digits.pt'
    return C.train_classifier(digits(600, 1), p, epochs=8, seed=0, **TINY), p


def write_pngs(folder, images, labels=None):
    "Images as PNGs (lossless), in class subfolders when labels are given"
    for i, im in enumerate(images):
        d = folder if labels is None else folder/str(labels[i])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d/f'{i:04d}.png')
    return folder


@pytest.mark.slow
def test_learns(trained):
    clf, _ = trained
    x, y = draw_digits(300, seed=77, show_progress=False)  # digits it never saw
    acc = C.classification_accuracy(x, y, clf)['accuracy']
    assert clf.info['accuracy'] > 0.4 and acc > 0.4, (clf.info['accuracy'], acc)  # chance is 0.1
    assert clf.info['held_out'] == 60 and clf.info['trained_on'] == 540


def _weights(clf):
    return b''.join(v.numpy().tobytes() for _, v in sorted(clf.net.state_dict().items()))


@pytest.mark.slow
def test_deterministic():
    ds = digits(160, 3)
    a, b = (C.train_classifier(ds, epochs=2, seed=5, shift=2, **{**TINY, 'flip': True}) for _ in range(2))
    assert _weights(a) == _weights(b) and a.digest == b.digest
    assert a.info['history'] == b.info['history']
    c = C.train_classifier(ds, epochs=2, seed=6, **TINY)
    assert _weights(a) != _weights(c)


class Boom:
    "An object whose unpickling would run code"
    def __reduce__(self): return (os.system, ('touch /tmp/ganlab-classifier-pwned',))


@pytest.mark.slow
def test_bad_files_refused(trained, tmp_path):
    clf, good = trained
    ck = torch.load(good, weights_only=True)
    cases = {
        'bare state dict': (ck['state_dict'], 'not a ganlab classifier'),
        'other version': ({**ck, 'version': 99}, 'version 99'),
        'wrong class count': ({**ck, 'classes': ['a', 'b']}, 'do not fit'),
        'missing weights': ({**ck, 'state_dict': {k: v for k, v in ck['state_dict'].items() if k != 'head.weight'}}, 'do not fit'),
        'wrong widths': ({**ck, 'widths': [8, 8, 8]}, 'do not fit'),
        'bad channels': ({**ck, 'channels': 4}, 'channels must be 1 or 3'),
        'infinite weights': ({**ck, 'state_dict': {**ck['state_dict'], 'head.bias': torch.full((10,), float('inf'))}}, 'NaN or infinite'),
        'not tensors': ({**ck, 'state_dict': {'head.bias': [1, 2]}}, 'not a dict of tensors'),
    }
    for name, (obj, msg) in cases.items():
        p = tmp_path/f'{name}.pt'
        torch.save(obj, p)
        with pytest.raises(GanlabError, match=msg): C.load_classifier(p)
    if os.path.exists('/tmp/ganlab-classifier-pwned'): os.remove('/tmp/ganlab-classifier-pwned')
    evil = tmp_path/'evil.pt'
    torch.save({**ck, 'info': {'x': Boom()}}, evil, pickle_protocol=2)
    with pytest.raises(GanlabError, match='cannot be loaded safely'): C.load_classifier(evil)
    assert not os.path.exists('/tmp/ganlab-classifier-pwned')
    raw = tmp_path/'raw.pt'; raw.write_bytes(pickle.dumps({'format': C.CLASSIFIER_FORMAT}, protocol=2))
    with pytest.raises(GanlabError, match='cannot be loaded safely'): C.load_classifier(raw)
    junk = tmp_path/'junk.pt'; junk.write_bytes(b'\x00' * 100)
    with pytest.raises(GanlabError, match='cannot be loaded safely'): C.load_classifier(junk)
    with pytest.raises(GanlabError, match='no such classifier file'): C.load_classifier(tmp_path/'nothing.pt')
    with pytest.raises(GanlabError, match='needs a classifier file'): M.Extractor('classifier')
    with pytest.raises(GanlabError, match='not a ganlab classifier'): M.Extractor(f'classifier:{tmp_path}/bare state dict.pt')


@pytest.mark.slow
def test_extractor_fd_equals_direct(trained, tmp_path):
    clf, path = trained
    a = draw_digits(90, seed=21, show_progress=False)[0]
    b = C.degrade(draw_digits(70, seed=22, show_progress=False)[0], 'blur', 1.0)
    fa, fb = clf.features(a), clf.features(b)
    direct = M.frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    da, db = write_pngs(tmp_path/'a', a), write_pngs(tmp_path/'b', b)
    ex = M.Extractor(f'classifier:{path}', device='cpu')
    assert isinstance(ex, C.ClassifierExtractor) and isinstance(ex, M.Extractor) and ex.dims == 64
    res = M.compare(da, db, extractor=ex, metrics=('fid', 'kid'), kid_subset_size=50, quiet=True)
    assert 'fid' not in res and res['extractor'] == f'classifier:{clf.digest}'
    assert res['fd_classifier'] == pytest.approx(direct, rel=1e-6)
    assert 'not FID' in M.format_metrics(res)
    # the same through compare's own extractor arguments, and through a statistics file
    res2 = M.compare(da, db, kind='classifier', weights=path, device='cpu', quiet=True)
    assert res2['fd_classifier'] == pytest.approx(direct, rel=1e-6)
    st = M.write_stats(db, tmp_path/'b.npz', extractor=ex, quiet=True)
    assert st.meta['extractor'] == ex.kind
    assert M.compare(da, tmp_path/'b.npz', extractor=ex, quiet=True)['fd_classifier'] == pytest.approx(direct, rel=1e-6)
    assert C.fd_classifier(a, b, clf) == pytest.approx(direct, rel=1e-6)
    # statistics of another classifier are refused, not silently compared
    other = C.train_classifier(digits(100, 4), tmp_path/'other.pt', epochs=1, seed=1, **TINY)
    assert other.digest != clf.digest
    with pytest.raises(GanlabError, match='statistics were made with'):
        M.compare(da, tmp_path/'b.npz', extractor=M.Extractor('classifier', tmp_path/'other.pt', device='cpu'), quiet=True)
    with pytest.raises(GanlabError, match='cannot be compared'): C.fd_classifier(st, a, other)


def _brightness_classifier():
    "Class 0 'dark', 1 'bright', 2 'never' (its bias keeps it out): a hand-set network reading mean brightness"
    net = C.RulerNet(3, 1, (1,))
    with torch.no_grad():
        conv, bn = net.body[0], net.body[2]
        conv.weight.zero_(); conv.weight[0, 0, 1, 1] = 1
        bn.weight.fill_(1); bn.bias.zero_(); bn.running_mean.zero_(); bn.running_var.fill_(1)
        net.mean.fill_(127.5); net.std.fill_(127.5)
        net.head.weight.copy_(torch.tensor([[-1.], [1.], [0.]])); net.head.bias.copy_(torch.tensor([0.5, 0., -9.]))
    return C.Classifier(net, ['dark', 'bright', 'never'], 4, 1)


def test_accuracy_per_class_by_hand():
    clf = _brightness_classifier()
    # 3 dark, 4 bright images (RGB, read as grayscale); asked for: dark x3 -> right; bright asked for 2 dark ones (wrong), 2 bright (right)
    imgs = np.concatenate([np.zeros((3, 4, 4, 3), np.uint8), np.full((4, 4, 4, 3), 250, np.uint8)])
    asked = ['dark', 'dark', 'dark', 'dark', 'dark', 'bright', 'bright']
    assert clf.run(imgs)[1].argmax(1).tolist() == [0, 0, 0, 1, 1, 1, 1]
    r = C.classification_accuracy(imgs, asked, clf)
    assert r['accuracy'] == pytest.approx(5 / 7) and r['n'] == 7
    assert r['per_class']['dark'] == pytest.approx(3 / 5) and r['per_class']['bright'] == 1.0 and np.isnan(r['per_class']['never'])
    assert r['counts'] == {'dark': 5, 'bright': 2, 'never': 0}
    assert r['confusion'].tolist() == [[3, 2, 0], [0, 2, 0], [0, 0, 0]]
    assert C.classification_accuracy(imgs, np.array([0, 0, 0, 0, 0, 1, 1]), clf)['accuracy'] == r['accuracy']
    assert C.classification_accuracy(torch.from_numpy(imgs).permute(0, 3, 1, 2), asked, clf)['accuracy'] == r['accuracy']
    assert re.search(r'dark +60.0% of 5', C.format_accuracy(r))
    for bad, msg in ((asked[:-1], 'one per image'), (['dark'] * 6 + ['cat'], 'does not know: cat'), ([0] * 6 + [5], r'0\.\.2'),
                     ([0.5] * 7, 'indices')):
        with pytest.raises(GanlabError, match=msg): C.classification_accuracy(imgs, bad, clf)


@pytest.mark.slow
def test_split_layout_zip(tmp_path):
    "A zip in CIFAR-10's layout: training reads train/ (and holds a share out), evaluation reads test/"
    x, y = draw_digits(260, seed=8, show_progress=False)
    z = tmp_path/'digits.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        for i, (im, lab) in enumerate(zip(x, y)):
            buf = io.BytesIO(); Image.fromarray(im).save(buf, 'PNG')
            zf.writestr(f"{'train' if i < 200 else 'test'}/{lab}/{i:04d}.png", buf.getvalue())
    clf = C.train_classifier(z, tmp_path/'z.pt', epochs=1, seed=0, **TINY)
    assert clf.info['trained_on'] + clf.info['held_out'] == 200 and clf.classes == [str(d) for d in range(10)]
    r = evaluate_classifier(z, tmp_path/'z.pt', quiet=True)
    assert r['n'] == 60 and r['accuracy'] == pytest.approx(C.classification_accuracy(x[200:], y[200:], clf)['accuracy'])


def test_bad_training_input(tmp_path):
    flat = write_pngs(tmp_path/'flat', draw_digits(8, seed=0, show_progress=False)[0])
    with pytest.raises(GanlabError, match='no class labels'): C.train_classifier(flat, **TINY)
    one = write_pngs(tmp_path/'one', draw_digits(8, seed=0, show_progress=False)[0], ['7'] * 8)
    with pytest.raises(GanlabError, match='at least 2 classes'): C.train_classifier(one, **TINY)
    ds = digits(40, 0)
    for kw, msg in ((dict(epochs=0), 'epochs'), (dict(holdout=1.0), 'holdout'), (dict(size=4), 'too small'), (dict(channels=2), 'channels'),
                    (dict(shift=40), 'shift'), (dict(device='tpu'), 'device')):
        with pytest.raises(GanlabError, match=msg): C.train_classifier(ds, **{**TINY, **kw})


@pytest.mark.slow
def test_cifar_zip(shared, tmp_path):
    "The real CIFAR-10 zip read in place through the training and evaluation paths (a few hundred images)"
    z = shared/'cifar10-jpg.zip'
    if not z.is_file(): pytest.skip('../shared/data/cifar10-jpg.zip is absent')
    clf = C.train_classifier(z, tmp_path/'c.pt', limit=500, epochs=1, seed=0, widths=(8, 16, 32), device='cpu', quiet=True)
    assert clf.classes == ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    assert clf.info['trained_on'] + clf.info['held_out'] == 500
    r = evaluate_classifier(z, tmp_path/'c.pt', limit=200, quiet=True)
    assert r['n'] == 200 and set(r['counts'].values()) == {20}


# Class fidelity both ways: GAN-test (a classifier of real images reads generated files) and CAS (a classifier trained on
# generated images is tested on real ones)

def generated_name(i, cls, prefix='img'):
    "A file name as `ganlab generate --class all` writes it (see `ganlab.generate.generate`)"
    from ganlab.generate import _safe
    return f'{prefix}-{i:06d}-{_safe(cls)}.png'


def write_generated(folder, images, classes):
    "Images as PNGs named as `ganlab generate` names them, in one flat folder"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (im, c) in enumerate(zip(images, classes)):
        Image.fromarray(im).save(folder/generated_name(i, c))
    return folder


def zip_folder(folder, z):
    with zipfile.ZipFile(z, 'w') as zf:
        for f in sorted(folder.iterdir()): zf.write(f, f.name)
    return z


def test_gan_test_reads_generated_file_names(tmp_path):
    "A flat folder (or zip) of generate's files reads as the same arrays with their classes, odd class names included"
    net = _brightness_classifier().net
    clf = C.Classifier(net, ['dark night', 'bright-day', 'never'], 4, 1)  # written dark_night, bright-day
    imgs = np.concatenate([np.zeros((3, 4, 4, 3), np.uint8), np.full((4, 4, 4, 3), 250, np.uint8)])
    asked = ['dark night'] * 5 + ['bright-day'] * 2
    direct = C.classification_accuracy(imgs, asked, clf)
    flat = write_generated(tmp_path/'gen', imgs, asked)
    assert sorted(p.name for p in flat.iterdir())[:1] == ['img-000000-dark_night.png']
    for src in (flat, zip_folder(flat, tmp_path/'gen.zip')):
        r = evaluate_classifier(src, clf, quiet=True)
        assert r['accuracy'] == pytest.approx(direct['accuracy']) and r['n'] == 7
        assert r['confusion'].tolist() == direct['confusion'].tolist() and r['counts'] == direct['counts']
    assert evaluate_classifier(flat, clf, limit=4, quiet=True)['n'] == 4
    # class subfolders are read as before
    sub = write_pngs(tmp_path/'sub', imgs, asked)
    assert evaluate_classifier(sub, clf, quiet=True)['confusion'].tolist() == direct['confusion'].tolist()


def test_gan_test_unknown_names_are_one_clear_error(tmp_path):
    clf = _brightness_classifier()
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    for name, files in (('plain', ['img-000000.png', 'img-000001.png']),  # an unconditional run's names
                        ('unknown', ['img-000000-dark.png', 'img-000001-cat.png', 'img-000002-bright.png'])):
        d = tmp_path/name
        d.mkdir()
        for f, im in zip(files, imgs): Image.fromarray(im).save(d/f)
        bad = next(f for f in files if not f.endswith(('-dark.png', '-bright.png')))
        with pytest.raises(GanlabError) as e: evaluate_classifier(d, clf, quiet=True)
        msg = str(e.value)
        assert str(d) in msg and f'e.g. {bad}' in msg and 'no known class' in msg and 'dark, bright, never' in msg, msg
        with pytest.raises(GanlabError, match=re.escape(f'e.g. {bad}')):
            evaluate_classifier(zip_folder(d, tmp_path/f'{name}.zip'), clf, quiet=True)
    clash = C.Classifier(_brightness_classifier().net, ['a b', 'a_b', 'c'], 4, 1)
    with pytest.raises(GanlabError, match="both written 'a_b'"):
        evaluate_classifier(tmp_path/'plain', clash, quiet=True)


PALETTE = np.array([colorsys.hsv_to_rgb(k / 10, 1, 1) for k in range(10)]) * 255
HUES = [f'hue{k}' for k in range(10)]
QUICK = dict(size=8, epochs=5, batch=20, widths=(16,), device='cpu', quiet=True)


def hues(n, seed, shuffle=False):
    "`n` 8x8 images of ten hues in turn with noise (classes that a tiny network separates), and their class names"
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = (PALETTE[y][:, None, None] + rng.normal(0, 20, (n, 8, 8, 3))).clip(0, 255).astype(np.uint8)
    return x, np.array(HUES)[rng.permutation(y) if shuffle else y]


def test_cas_separable_high_shuffled_near_chance():
    real = hues(100, 2)
    r = classification_accuracy_score(hues(100, 1), real, **QUICK)
    assert r['accuracy'] > 0.9 and r['n'] == 100 and r['trained_on'] == 100 and r['epochs'] == 5
    assert set(r) == {'accuracy', 'n', 'per_class', 'counts', 'confusion', 'trained_on', 'epochs'}
    assert list(r['per_class']) == HUES and r['confusion'].shape == (10, 10)
    assert C.format_accuracy(r).startswith(f"CAS {r['accuracy']:.1%}: a classifier trained on 100 generated images")
    for seed in (1, 3):  # a generator that ignores the class asked for: chance is 10%
        s = classification_accuracy_score(hues(100, seed, shuffle=True), real, **QUICK)
        assert s['accuracy'] < 0.5, (seed, s['accuracy'])


def test_cas_input_forms_agree(tmp_path):
    "Generate's flat folder and zip read as the arrays they hold; an .npz test set (indices) as its arrays"
    gen, real = hues(60, 1), hues(40, 2)
    arrays = classification_accuracy_score(gen, real, **QUICK)
    flat = write_generated(tmp_path/'gen', *gen)
    np.savez(tmp_path/'real.npz', images=real[0], labels=np.array([HUES.index(c) for c in real[1]]))
    np.savez(tmp_path/'real-names.npz', images=real[0], labels=real[1])
    for g, t in ((flat, real), (zip_folder(flat, tmp_path/'gen.zip'), tmp_path/'real-names.npz'),
                 (ImageArrayDataset(gen[0], labels=np.arange(60) % 10, classes=HUES), real)):
        r = classification_accuracy_score(g, t, **QUICK)
        assert r['accuracy'] == arrays['accuracy'] and r['confusion'].tolist() == arrays['confusion'].tolist(), (g, t)
    # labelled by indices, the test set's classes are '0'..'9': generated names must be those
    with pytest.raises(GanlabError, match='no known class'):
        classification_accuracy_score(flat, tmp_path/'real.npz', **QUICK)
    idx = classification_accuracy_score((gen[0], np.arange(60) % 10), tmp_path/'real.npz', **QUICK)
    assert idx['accuracy'] == arrays['accuracy'] and list(idx['per_class']) == [str(k) for k in range(10)]
    sub = write_pngs(tmp_path/'sub', *real)  # class subfolders: the same images in another order
    assert classification_accuracy_score(flat, sub, **QUICK)['n'] == 40
    assert classification_accuracy_score(flat, real, limit=30, **QUICK)['trained_on'] == 30


def test_cas_classes_must_match(tmp_path):
    (x, y), real = hues(40, 1), hues(40, 2)
    keep = ~np.isin(y, ['hue0', 'hue1'])
    with pytest.raises(GanlabError, match='only generated: none; only in the test set: hue0, hue1'):
        classification_accuracy_score((x[keep], y[keep]), real, **QUICK)
    with pytest.raises(GanlabError, match='only generated: hue0, hue1; only in the test set: none'):
        classification_accuracy_score((x, y), (real[0][keep], real[1][keep]), **QUICK)
    flat = write_pngs(tmp_path/'flat', real[0])
    with pytest.raises(GanlabError, match='has no class labels'): classification_accuracy_score((x, y), flat, **QUICK)
    with pytest.raises(GanlabError, match=r'indices in 0\.\.9'):
        classification_accuracy_score((x, np.full(40, 12)), real, **QUICK)


def _ganlab(*args):
    import shutil, subprocess, sys
    exe = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 0, r.stderr
    return r


def test_cli_cas(tmp_path):
    "`ganlab classifier cas GENERATED --test REAL` on generate's files and class subfolders; then GAN-test of those"
    gen = write_generated(tmp_path/'gen', *hues(100, 1))
    real = write_pngs(tmp_path/'real', *hues(50, 2))
    r = _ganlab('classifier', 'cas', gen, '--test', real, '--size', 8, '--epochs', 5, '--batch', 20, '--device', 'cpu',
                '--out', tmp_path/'cas.pt')
    head = r'^CAS \d+\.\d%: a classifier trained on 100 generated images \(5 epochs\), tested on 50 real ones$'
    assert re.search(head, r.stdout, re.M), r.stdout
    clf = C.load_classifier(tmp_path/'cas.pt')
    assert clf.classes == HUES and clf.info['source'] == str(gen) and clf.info['test'] == str(real)
    assert 'hue9' in _ganlab('classifier', 'eval', gen, '--clf', tmp_path/'cas.pt').stdout
