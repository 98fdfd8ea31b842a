"""Shard reading: order and ids across workers, gzip members and damage, long lines in bounded memory."""
import gzip, json, base64, io, tracemalloc
import numpy as np
import pytest
from PIL import Image
from ganlab.core import GanlabError
from ganlab.records import Decoded, Rejection
from ganlab.shards import decode_shards, shard_lines, iter_decode, ShardCut


def png_line(i, **extra):
    rgb = np.full((32, 32, 3), i % 256, np.uint8)
    b = io.BytesIO(); Image.fromarray(rgb).save(b, 'PNG')
    return json.dumps({'id': f'r{i}', 'img_b64': base64.b64encode(b.getvalue()).decode(), **extra}).encode()


@pytest.fixture(scope='module')
def digits_shards(tmp_path_factory):
    from ganlab.data import draw_digits
    from ganlab.noisy import write_noisy_shards
    d = tmp_path_factory.mktemp('noisy')
    write_noisy_shards(draw_digits(700, seed=3, show_progress=False)[0], d, seed=3, n_shards=5, show_progress=False)
    return d


def test_workers_give_the_same_decode(digits_shards):
    "One process or three, small pieces or whole files: the same ids, images, rejections, in the same order"
    a = decode_shards(digits_shards, workers=1, show_progress=False)
    b = decode_shards(digits_shards, workers=3, show_progress=False)
    assert a.ids == b.ids and np.array_equal(a.images, b.images)
    assert [(r.shard, r.line, r.id, r.reason) for r in a.report.rejections] == [(r.shard, r.line, r.id, r.reason) for r in b.report.rejections]
    assert a.report.to_dict()['counts'] == b.report.to_dict()['counts']


def test_small_batches_keep_line_numbers(digits_shards):
    "Lines handed to workers three at a time still come back with their true line numbers and made-up ids"
    whole = decode_shards(digits_shards, workers=1, show_progress=False)
    small = decode_shards(digits_shards, workers=2, batch_lines=3, show_progress=False)
    assert [(i['shard'], i['line']) for i in whole.info] == [(i['shard'], i['line']) for i in small.info]
    assert whole.ids == small.ids and np.array_equal(whole.images, small.images)


def test_duplicates_across_shards_keep_the_first(tmp_path):
    (tmp_path/'a.jsonl').write_bytes(png_line(1) + b'\n' + png_line(2) + b'\n')
    (tmp_path/'b.jsonl').write_bytes(png_line(1) + b'\n')
    res = decode_shards([tmp_path/'a.jsonl', tmp_path/'b.jsonl'], workers=2, show_progress=False)
    assert res.ids == ['r1', 'r2']
    (dup,) = res.report.rejections
    assert (dup.reason, dup.line, dup.id) == ('duplicate_id', 1, 'r1') and 'a.jsonl line 1' in dup.detail


def test_gzip_members_and_damage(tmp_path):
    two = gzip.compress(png_line(1) + b'\n') + gzip.compress(png_line(2) + b'\n')
    (tmp_path/'m.jsonl.gz').write_bytes(two)
    assert decode_shards(tmp_path/'m.jsonl.gz', show_progress=False).ids == ['r1', 'r2']  # concatenated members: one stream
    (tmp_path/'t.jsonl.gz').write_bytes(gzip.compress(png_line(1) + b'\n') + b'trailing junk')
    r = decode_shards(tmp_path/'t.jsonl.gz', show_progress=False)
    assert r.ids == ['r1'] and r.report.by_reason == {'corrupt_shard': 1}
    bad = bytearray(gzip.compress(b'\n'.join(png_line(i) for i in range(50)) + b'\n')); bad[len(bad) // 2] ^= 0xFF
    (tmp_path/'c.jsonl.gz').write_bytes(bytes(bad))
    r = decode_shards(tmp_path/'c.jsonl.gz', show_progress=False).report
    assert r.records == r.decoded + r.rejected and r.by_reason['corrupt_shard'] + r.by_reason['truncated_shard'] == 1


def test_blank_lines_and_missing_final_newline(tmp_path):
    (tmp_path/'s.jsonl').write_bytes(b'\n  \n' + png_line(1) + b'\n\n' + png_line(2))
    r = decode_shards(tmp_path/'s.jsonl', show_progress=False)
    assert r.ids == ['r1', 'r2'] and (r.report.lines, r.report.records) == (5, 2) and [i['line'] for i in r.info] == [3, 5]


def test_gzip_without_suffix_is_named(tmp_path):
    (tmp_path/'s.jsonl').write_bytes(gzip.compress(png_line(1) + b'\n'))
    r = decode_shards(tmp_path/'s.jsonl', show_progress=False)
    assert r.report.rejections[0].detail.startswith('gzip data in a shard not named .gz')


def test_long_lines_are_skipped_in_bounded_memory(tmp_path):
    "A 40 MB line is reported as too long while the reader holds no more than about a megabyte"
    p = tmp_path/'s.jsonl'
    with open(p, 'wb') as f:
        f.write(png_line(1) + b'\n' + b'{"img_b64": "' + b'A' * (40 << 20) + b'"}\n' + png_line(2) + b'\n')
    tracemalloc.start()
    lines = [l if l is None else len(l) for l in shard_lines(p, max_line=1 << 20)]
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert lines[1] is None and len(lines) == 3 and peak < 8 << 20, peak
    r = decode_shards(p, max_line=1 << 20, show_progress=False)
    assert r.ids == ['r1', 'r2'] and r.report.by_reason == {'line_too_long': 1}


def test_bad_settings_are_clear_errors(tmp_path):
    (tmp_path/'s.jsonl').write_bytes(png_line(1) + b'\n')
    for kw, msg in [(dict(size=0), 'size must be a positive integer'), (dict(workers=0), 'workers must be at least 1'),
                    (dict(background='blurple'), "background: 'blurple' is not a colour"), (dict(sense='up'), "rotation sense must be one of cw, ccw, not 'up'")]:
        with pytest.raises(GanlabError, match=msg): decode_shards(tmp_path/'s.jsonl', show_progress=False, **{'size': 32, **kw})
    with pytest.raises(GanlabError, match='no such file or folder'): decode_shards(tmp_path/'none.jsonl')


@pytest.mark.slow
def test_a_big_gzip_shard_stays_in_bounded_memory(tmp_path):
    "200,000 garbage lines in one .gz shard: the reader holds a few batches, not the shard's outcomes"
    import gzip
    body = b'\n'.join(b'x%d' % i for i in range(200_000)) + b'\n'
    (tmp_path/'g.jsonl.gz').write_bytes(gzip.compress(body))
    report, n = None, 0
    tracemalloc.start()
    from ganlab.shards import DecodeReport
    report = DecodeReport(sink=lambda r: None)
    for o in iter_decode(tmp_path/'g.jsonl.gz', workers=1, report=report, show_progress=False): n += 1
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert n == 200_000 and report.by_reason == {'not_json': 200_000} and peak < 16 << 20, peak


def test_a_shard_gone_after_scanning_loses_no_line(tmp_path):
    "A worker that cannot read its span reports each of the span's lines"
    from ganlab.records import MAX_LINE
    from ganlab.shards import read_batches, decode_batch
    (tmp_path/'s.jsonl').write_bytes(b'\n'.join(png_line(i) for i in range(5)) + b'\n')
    (b,) = read_batches([tmp_path/'s.jsonl'])
    (tmp_path/'s.jsonl').unlink()
    outs, blank = decode_batch(b, dict(size=32, background=(255, 255, 255), sense='cw', max_pixels=1 << 24, max_line=MAX_LINE))
    assert b.n == 5 and blank == 0 and [(o.line, o.reason) for o in outs] == [(i, 'unreadable_shard') for i in range(1, 6)]


def test_consumer_may_stop_early(digits_shards):
    "Stopping half way through a parallel decode leaves no worker behind"
    import multiprocessing as mp
    it = iter_decode(digits_shards, workers=2, show_progress=False)
    first = [next(it) for _ in range(10)]
    it.close()
    assert len(first) == 10 and not mp.active_children()
