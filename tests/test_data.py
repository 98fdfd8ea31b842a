"""Datasets feeding training: tensors, DataLoader batches, the shard cache."""
import os, time
import numpy as np
import pytest
import torch
from ganlab.core import GanlabError
from ganlab.data import ShardDataset, NpzDataset, ImageArrayDataset, to_tensor, to_images, draw_digits
from ganlab.noisy import write_noisy_shards


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp('s')
    write_noisy_shards(draw_digits(200, seed=1, show_progress=False)[0], d, seed=1, show_progress=False)
    return d


def test_batches_in_range(shards):
    ds = ShardDataset(shards, workers=2)
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)))
    assert b.shape == (32, 3, 32, 32) and b.dtype == torch.float32 and -1 <= b.min() and b.max() <= 1
    assert np.array_equal(to_images(to_tensor(ds.images)), ds.images)


def test_cache_is_used_only_while_current(shards, tmp_path):
    cache = tmp_path/'c.npz'
    a = ShardDataset(shards, cache=cache); assert not a.from_cache and cache.exists()
    b = ShardDataset(shards, cache=cache); assert b.from_cache and b.ids == a.ids and np.array_equal(b.images, a.images)
    assert not ShardDataset(shards, cache=cache, background='black').from_cache  # other settings
    assert ShardDataset(shards, cache=cache, background='black').from_cache
    first = sorted(shards.glob('shard-*'))[0]
    os.utime(first, (time.time() + 5, time.time() + 5))  # a shard changed
    assert not ShardDataset(shards, cache=cache, background='black').from_cache


def test_doctor_output_is_a_dataset_and_a_cache(shards, tmp_path):
    from ganlab.eda import doctor
    doctor(shards, tmp_path, workers=1, plots=False, show_progress=False)
    ds = NpzDataset(tmp_path/'decoded.npz')
    assert len(ds) > 150 and ds[0].shape == (3, 32, 32)
    assert ShardDataset(shards, cache=tmp_path/'decoded.npz').from_cache


def test_bad_arrays_are_refused():
    with pytest.raises(GanlabError, match='N x H x W x 3 uint8'): ImageArrayDataset(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(GanlabError, match='3 ids for 2 images'): ImageArrayDataset(np.zeros((2, 8, 8, 3), np.uint8), ids=['a', 'b', 'c'])
