"""Training datasets from folders and zips of images, CIFAR-10, CelebA, `open_dataset`, DiffAugment."""
import io, pickle, time, zipfile
from pathlib import Path
from unittest import mock
from urllib.error import URLError
import numpy as np
import pytest
import torch
from PIL import Image
from ganlab.core import GanlabError, shared_data
from ganlab.data import (CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, ImageArrayDataset, celeba, cifar10, diff_augment,
                         draw_digits, image_bytes, list_images, load_images, open_dataset)
from ganlab.noisy import write_noisy_shards


def _png(a, fmt='PNG'):
    b = io.BytesIO(); Image.fromarray(a).save(b, fmt); return b.getvalue()


def _zip(path, members):
    "A zip of `members` (name -> bytes), stored uncompressed so that its bytes can be corrupted on purpose"
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        for n, b in members.items(): z.writestr(n, b)
    return path


@pytest.fixture(scope='module')
def pets(tmp_path_factory):
    "Folder of random 40x30 images in class subfolders: 3 cats, 4 dogs, 2 owls"
    d = tmp_path_factory.mktemp('pets')
    rng = np.random.default_rng(0)
    for c, n in (('cat', 3), ('dog', 4), ('owl', 2)):
        (d/c).mkdir()
        for i in range(n): Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d/c/f'{i:03d}.png')
    return d


def _cifar_zip():
    z = shared_data('cifar10-jpg.zip')
    if z is None: pytest.skip('../shared/data/cifar10-jpg.zip is absent (set GANLAB_SHARED_DATA to point at the data folder)')
    return z


# --- folders and zips -------------------------------------------------------------------------------------------

def test_corrupt_image_in_a_zip_names_the_member(tmp_path):
    good = _png(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    z = _zip(tmp_path/'set.zip', {'a/0.png': good, 'a/1.png': good[:len(good) // 2], 'b/2.png': good})
    with pytest.raises(GanlabError, match=r'set\.zip:a/1\.png: truncated image'): load_images(z, 8)
    z = _zip(tmp_path/'junk.zip', {'0.png': good, '1.jpg': b'this is not a jpeg at all'})
    with pytest.raises(GanlabError, match=r'junk\.zip:1\.jpg: not image'): load_images(z, 8)


def test_damaged_zip_member_names_the_member(tmp_path):
    good = _png(np.full((8, 8, 3), 7, np.uint8))
    z = _zip(tmp_path/'crc.zip', {'0.png': good, '1.png': good})
    raw = bytearray(z.read_bytes())
    at = raw.rindex(good[-20:])  # the second member's stored bytes: change one, so its CRC no longer matches
    raw[at] ^= 0xFF; z.write_bytes(bytes(raw))
    with pytest.raises(GanlabError, match=r'crc\.zip:1\.png: cannot read the member'): load_images(z, 8)


def test_oversized_member_is_refused_before_reading(tmp_path):
    z = _zip(tmp_path/'big.zip', {'0.png': _png(np.zeros((64, 64, 3), np.uint8))})
    kind, ids, members = list_images(z)
    with pytest.raises(GanlabError, match='more than the 10 an image may have'): list(image_bytes(kind, z, members, max_bytes=10))


def test_limit_keeps_the_first_in_sorted_order_and_decodes_only_those(pets, tmp_path):
    ds = load_images(pets, 16, limit=4)
    assert ds.ids == ['cat/000', 'cat/001', 'cat/002', 'dog/000'] and ds.images.shape == (4, 16, 16, 3)
    assert ds.classes == ['cat', 'dog', 'owl'] and ds.labels.tolist() == [0, 0, 0, 1]  # classes from the whole set
    good = _png(np.zeros((8, 8, 3), np.uint8))
    z = _zip(tmp_path/'tail.zip', {'0.png': good, '1.png': good, '2.png': b'broken'})
    assert len(load_images(z, 8, limit=2)) == 2  # the broken image lies beyond the limit
    assert len(load_images(pets, 16, limit=0)) == 0
    with pytest.raises(GanlabError, match='limit must be'): load_images(pets, 16, limit=-1)


def test_class_labels_from_subfolders(pets, tmp_path):
    ds = load_images(pets, 24)
    assert ds.classes == ['cat', 'dog', 'owl'] and np.bincount(ds.labels).tolist() == [3, 4, 2]
    assert [ds.classes[k] for k in ds.labels] == [i.split('/')[0] for i in ds.ids]
    flat = load_images(pets/'dog', 24)
    assert flat.labels is None and flat.classes is None and flat.ids == ['000', '001', '002', '003']
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)))
    assert b.shape == (4, 3, 24, 24) and -1 <= b.min() and b.max() <= 1


def test_grayscale(pets):
    rgb, gray = load_images(pets, 20), load_images(pets, 20, channels=1)
    assert gray.images.shape == (9, 20, 20, 1) and gray[0].shape == (1, 20, 20)
    expect = np.stack([np.asarray(Image.fromarray(a).convert('L')) for a in rgb.images])
    assert np.abs(gray.images[..., 0].astype(int) - expect).mean() < 0.5  # converted before resizing: rounding and clipping apart, the same
    grey_files = ImageArrayDataset(gray.images)
    assert repr(grey_files) == 'ImageArrayDataset(9 images of 20x20 grayscale)'


def test_crop_modes(pets):
    a, b = load_images(pets, 16, limit=1), load_images(pets, 16, limit=1, crop='none')
    assert not np.array_equal(a.images, b.images)
    with pytest.raises(GanlabError, match="crop must be 'center', 'none'"): load_images(pets, 16, crop=1.5)


# --- CIFAR-10 ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cifar10_zip_split_counts_and_balance():
    z = _cifar_zip()
    t0 = time.time(); train = cifar10(z, 'train'); dt = time.time() - t0
    test = cifar10(z, 'test')
    assert train.images.shape == (50_000, 32, 32, 3) and test.images.shape == (10_000, 32, 32, 3)
    assert train.classes == test.classes == list(CIFAR10_CLASSES)
    assert np.bincount(train.labels).tolist() == [5000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    assert all(i.startswith('train/') for i in train.ids) and not set(train.ids) & set(test.ids)
    assert dt < 60, f'50,000 CIFAR-10 JPEGs took {dt:.0f} s'


@pytest.mark.slow
def test_open_dataset_reads_the_cifar_zip_by_split():
    z = _cifar_zip()
    ds = open_dataset(z, 32, split='test', limit=100)
    assert ds.ids[0].startswith('test/airplane/') and ds.images.shape == (100, 32, 32, 3)
    assert open_dataset(z, 16, channels=1, limit=10).images.shape == (10, 16, 16, 1)


def _fake_torchvision_cifar(root):
    "torchvision's `cifar-10-batches-py` layout with tiny batches (its MD5 check is patched out in the test)"
    d = root/'cifar-10-batches-py'; d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(d/name, 'wb') as f:
            pickle.dump({'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8), 'labels': [0, 1, 2, 9]}, f)
    with open(d/'batches.meta', 'wb') as f: pickle.dump({'label_names': list(CIFAR10_CLASSES)}, f)
    return d


@pytest.mark.slow
def test_cifar10_from_torchvision_folder(tmp_path):
    d = _fake_torchvision_cifar(tmp_path)
    with mock.patch('torchvision.datasets.cifar.check_integrity', return_value=True):
        train, test = cifar10(tmp_path), cifar10(d, 'test', limit=3)  # the root, or the batches folder itself
        assert train.images.shape == (20, 32, 32, 3) and train.labels.tolist() == [0, 1, 2, 9] * 5
        assert train.classes == list(CIFAR10_CLASSES) and train.ids[:2] == ['train/00000', 'train/00001']
        assert len(test) == 3
        assert open_dataset(tmp_path, 64, limit=2).images.shape == (2, 64, 64, 3)
    with pytest.raises(GanlabError, match='MD5 check failed'): cifar10(tmp_path)  # the real check: these are not CIFAR-10's files


def test_cifar10_offline_says_what_to_fetch_and_where(tmp_path, monkeypatch):
    root = tmp_path/'cache'
    with mock.patch('torchvision.datasets.utils.download_and_extract_archive', side_effect=URLError('no network')) as dl:
        with pytest.raises(GanlabError) as e: cifar10(root)
        assert dl.call_count == 1
        monkeypatch.setenv('GANLAB_DATA_HOME', str(tmp_path/'home'))
        with pytest.raises(GanlabError, match='no network'): open_dataset('cifar10', 32)
    for part in ('cifar-10-python.tar.gz', CIFAR10_URL, CIFAR10_MD5, str(root), 'could not be downloaded'): assert part in str(e.value)
    with pytest.raises(GanlabError, match='download=False'): cifar10(root, download=False)


# --- CelebA -----------------------------------------------------------------------------------------------------

def test_celeba_64_from_the_shared_zip():
    z = shared_data('celeba-10k-jpg.zip')
    if z is None: pytest.skip('../shared/data/celeba-10k-jpg.zip is absent')
    ds = celeba(z, 64, limit=300)
    assert ds.images.shape == (300, 64, 64, 3) and ds.ids[:3] == ['000001', '000002', '000003'] and ds.labels is None
    wide = celeba(z, 64, limit=300, crop='center')
    # the face crop fills more of the frame with skin than the wide crop, whose corners are background and hair
    assert 20 < ds.images.mean() < 235 and not np.array_equal(ds.images, wide.images)


def test_celeba_in_a_folder_has_no_labels(tmp_path):
    for i in range(1, 4): (tmp_path/'img_align_celeba').mkdir(exist_ok=True); Image.new('RGB', (178, 218), (i, 0, 0)).save(tmp_path/'img_align_celeba'/f'{i:06d}.jpg')
    ds = celeba(tmp_path)
    assert ds.images.shape == (3, 64, 64, 3) and ds.labels is None and ds.classes is None


# --- open_dataset -----------------------------------------------------------------------------------------------

def test_open_dataset_dispatch(tmp_path, pets):
    digits = draw_digits(40, seed=3, show_progress=False)[0]
    write_noisy_shards(digits, tmp_path/'shards', seed=3, show_progress=False)
    sh = open_dataset(tmp_path/'shards', 32, workers=1, crop='none', show_progress=False)
    assert type(sh).__name__ == 'ShardDataset' and sh.images.shape[1:] == (32, 32, 3)
    assert open_dataset(tmp_path/'shards', 16, limit=5).images.shape == (5, 16, 16, 3)
    np.savez(tmp_path/'d.npz', ids=np.array(['a', 'b']), images=digits[:2])
    assert type(open_dataset(tmp_path/'d.npz', 32)).__name__ == 'NpzDataset'
    assert open_dataset(pets, 8).classes == ['cat', 'dog', 'owl']
    for bad, msg in ((tmp_path/'missing', 'missing: no such file or folder'), (tmp_path/'d.txt', 'not a data set')):
        if bad.suffix: bad.write_text('x')
        with pytest.raises(GanlabError, match=msg): open_dataset(bad, 32)
    (tmp_path/'empty').mkdir()
    with pytest.raises(GanlabError, match='empty: folder holds no images'): open_dataset(tmp_path/'empty', 32)
    with pytest.raises(GanlabError, match='noimg.zip: zip holds no images'): open_dataset(_zip(tmp_path/'noimg.zip', {'a.txt': b'x'}), 32)
    with pytest.raises(GanlabError, match='unknown option bogus'): open_dataset(pets, 8, bogus=1)


def test_images_beside_a_metadata_jsonl_are_images(tmp_path):
    Image.new('RGB', (10, 10)).save(tmp_path/'0.png'); (tmp_path/'metadata.jsonl').write_text('{"file_name": "0.png"}\n')
    assert open_dataset(tmp_path, 10).ids == ['0']


# --- DiffAugment ------------------------------------------------------------------------------------------------

def test_diff_augment_seeded_differentiable_and_per_image():
    x = (torch.rand(8, 3, 16, 16) * 2 - 1).requires_grad_()
    y = diff_augment(x, generator=torch.Generator().manual_seed(0))
    y.sum().backward()
    assert x.grad is not None and y.shape == x.shape
    same = diff_augment(x.detach(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, y.detach())
    z = diff_augment(x.detach()[:1].expand(8, -1, -1, -1), 'color', torch.Generator().manual_seed(1))
    assert not torch.equal(z[0], z[1])  # each image its own draw
    assert diff_augment(torch.zeros(2, 1, 8, 8), 'translation,cutout').shape == (2, 1, 8, 8)
    with pytest.raises(GanlabError, match='valid: color, translation, cutout'): diff_augment(x, ['color', 'rotate'])
