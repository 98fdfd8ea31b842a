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
