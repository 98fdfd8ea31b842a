"""ganlab.classifier: the ruler that needs no download.

A tiny classifier trained on drawn digits (`ganlab.data.draw_digits`) must learn, be reproducible bit for bit, refuse
unsafe or malformed files with a clear message, give through `ganlab.metrics` the Fréchet distance that
`frechet_distance` gives on its features, and count accuracy per class right on a hand-made case. The CIFAR-10 zip in
../shared/data, when present, is read through the same paths (train/ for training, test/ for evaluation).
"""
import io, os, pickle, re, zipfile
import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.core import GanlabError
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab import metrics as M
from ganlab import classifier as C

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
    r = C.evaluate_classifier(z, tmp_path/'z.pt', quiet=True)
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
    r = C.evaluate_classifier(z, tmp_path/'c.pt', limit=200, quiet=True)
    assert r['n'] == 200 and set(r['counts'].values()) == {20}
