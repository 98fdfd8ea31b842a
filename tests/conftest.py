import os
from pathlib import Path
import pytest
from hypothesis import HealthCheck, settings

# CI runs the same examples every time (HYPOTHESIS_PROFILE=ci); developers get fresh ones.
settings.register_profile('ci', derandomize=True, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('dev', deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'dev'))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def shared():
    "The shared test data folder beside the project; skips the test when it is absent"
    from ganlab.core import shared_data
    d = shared_data()
    if d is None: pytest.skip('../shared/data is not beside the project (set GANLAB_SHARED_DATA to point at it)')
    return d


@pytest.fixture(scope='module')
def npz(tmp_path_factory):
    "128 synthetic 16x16 digits as a decoded .npz (ids and images), for commands that read a data file"
    import numpy as np
    from ganlab.data import draw_digits
    d = tmp_path_factory.mktemp('data')
    np.savez(d/'digits.npz', images=draw_digits(128, seed=0, size=16)[0], ids=np.array([f'd{i}' for i in range(128)]))
    return d/'digits.npz'


@pytest.fixture(scope='module')
def digits():
    "256 synthetic 16x16 digits as a training set (8 steps per epoch at batch 32)"
    from ganlab.data import ImageArrayDataset, draw_digits
    return ImageArrayDataset(draw_digits(256, seed=3, size=16)[0])


@pytest.fixture(scope='module')
def labelled_digits():
    "The same 256 digits with their labels and class names, for the conditional GAN"
    from ganlab.data import ImageArrayDataset, draw_digits
    images, labels = draw_digits(256, seed=3, size=16)
    return ImageArrayDataset(images, labels=labels, classes=[str(k) for k in range(10)])


@pytest.fixture(scope='module')
def pairs():
    "Unpaired 64x64 domains for CycleGAN and CUT: 12 random 'Monet' images and 20 digit 'photos' (2 held out for the grid)"
    import numpy as np
    from ganlab.data import draw_digits
    rng = np.random.default_rng(0)
    return {'monet': (rng.random((12, 64, 64, 3)) * 255).astype(np.uint8), 'photo': draw_digits(20, seed=1, size=64)[0]}
