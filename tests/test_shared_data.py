"""The real noisy shards in ../shared/data: the contract's score, with ganlab's scorer and with the reference script."""
import gzip, subprocess, sys
import numpy as np
import pytest
from ganlab.eda import doctor
from ganlab.noisy import score
from ganlab.shards import decode_shards, load_npz


@pytest.fixture(scope='module')
def noisy(shared):
    d = shared/'noisy-shards'
    if not (d/'truth.jsonl').exists(): pytest.skip(f'{d} has no truth.jsonl')
    return d


@pytest.fixture(scope='module')
def doctored(noisy, tmp_path_factory):
    out = tmp_path_factory.mktemp('doctor')
    return doctor(noisy, out, workers=2, truth=noisy, show_progress=False), out


def test_contract_score_is_100(doctored):
    res, out = doctored
    assert res.score['score'] == 100.0, res.score
    assert res.report.records == res.report.decoded + res.report.rejected
    assert 'truth.jsonl' not in str(res.report.shards)  # the answer key beside the shards is not read as one


def test_reference_scorer_agrees(doctored, shared):
    "../shared/tools/score_noisy.py on doctor's decoded.npz"
    script = shared.parent/'tools'/'score_noisy.py'
    if not script.exists(): pytest.skip(f'{script} is absent')
    _, out = doctored
    r = subprocess.run([sys.executable, str(script), str(shared/'noisy-shards'), str(out/'decoded.npz')], capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1].startswith('score 100.00%'), r.stdout


def test_lossless_records_are_exact(doctored, noisy):
    "Records stored losslessly decode to the truth pixel for pixel (the contract allows 3)"
    import json
    _, out = doctored
    ids, images, _ = load_npz(out/'decoded.npz')
    got = dict(zip(ids, images)); T = np.load(noisy/'truth.npz')
    lossless = {t['id'] for t in map(json.loads, open(noisy/'truth.jsonl')) if t['expect'] == 'ok' and not t.get('lossy') and not t.get('id_missing')}
    errs = [np.abs(got[i].astype(int) - t.astype(int)).max() for i, t in zip(T['ids'], T['images']) if i in lossless]
    assert len(errs) > 900 and max(errs) == 0


def test_one_and_two_workers_agree(noisy):
    a, b = decode_shards(noisy, workers=1, show_progress=False), decode_shards(noisy, workers=2, show_progress=False)
    assert a.ids == b.ids and np.array_equal(a.images, b.images)


@pytest.mark.parametrize('frac', [0.1, 0.5, 0.93])
def test_a_cut_gzip_shard_keeps_what_came_before(noisy, tmp_path, frac):
    "The real .gz shard cut short: the records decoded are exactly the first ones of the whole shard"
    src = noisy/'shard-004.jsonl.gz'
    whole = decode_shards(src, show_progress=False)
    data = src.read_bytes(); (tmp_path/src.name).write_bytes(data[:int(len(data) * frac)])
    cut = decode_shards(tmp_path/src.name, show_progress=False)
    assert cut.ids == whole.ids[:len(cut.ids)] and np.array_equal(cut.images, whole.images[:len(cut.ids)])
    assert cut.report.by_reason['truncated_shard'] == 1 and 0 < len(cut.ids) < len(whole.ids)
