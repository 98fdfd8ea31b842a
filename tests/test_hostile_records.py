"""Hostile input to the decoding side (issue 19): damaged gzip shards, huge ids, floods of blank lines, lone surrogates
and non-UTF-8 file names, and output folders that cannot be written. Whatever comes in: a clear `GanlabError` or a
complete output, never a traceback, every line accounted for. (Speed and peak memory of these inputs are measured
by `bench/decode.py --hostile`, not here.)"""
import base64, csv, gzip, io, json, os, zlib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from ganlab.core import GanlabError, check_out_dir, check_out_file, safe_text
from ganlab.eda import doctor
from ganlab.records import MAX_ID, REASONS
from ganlab.shards import decode_shards, read_batches, shard_lines, ShardCut

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def png_line(i, **extra):
    rgb = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = io.BytesIO(); Image.fromarray(rgb).save(b, 'PNG')
    return json.dumps({'id': f'r{i}', 'img_b64': base64.b64encode(b.getvalue()).decode(), **extra}).encode()


BODY = b'\n'.join(png_line(i) for i in range(40)) + b'\n'
GZ = gzip.compress(BODY, mtime=0)


def accounted(r):
    "Every record is decoded or rejected, and the output files agree with the counts"
    assert r.records == r.decoded + r.rejected
    assert set(r.by_reason) <= set(REASONS)


def zlib_salvage(data):
    "What zlib itself yields from `data` fed one byte at a time: (output, offset of the byte it fails at or None, message, whether the stream ended)"
    d, out = zlib.decompressobj(zlib.MAX_WBITS | 16), []
    for i in range(len(data)):
        try: out.append(d.decompress(data[i:i + 1]))
        except zlib.error as e: return b''.join(out), i, str(e), False
        if d.eof: break
    return b''.join(out), None, '', d.eof


def nonblank(text): return sum(1 for l in text.split(b'\n') if l.strip())


# --- a gzip shard damaged in the middle ---------------------------------------------------------------------------

@FAST
@given(st.integers(12, len(GZ) - 9), st.sampled_from(['flip', 'zero']), st.integers(0, 7), st.integers(1, 6))
def test_damaged_gzip_every_line_the_stream_yields_is_read(tmp_path_factory, pos, how, bit, n):
    "Flipped bits or zeroed bytes anywhere in the deflate data: every whole line zlib can still produce is read and "
    "accounted, the shard is named damaged, its decoded records flagged, and the offset named is where zlib stops"
    bad = bytearray(GZ)
    if how == 'flip': bad[pos] ^= 1 << bit
    else: bad[pos:pos + n] = bytes(n)
    bad = bytes(bad)
    p = tmp_path_factory.mktemp('gz')/'s.jsonl.gz'; p.write_bytes(bad)
    res = decode_shards(p, show_progress=False)
    r = res.report; accounted(r)
    got, err_at, msg, ended = zlib_salvage(bad)
    if err_at is None and got == BODY:  # nothing that matters was hit (padding bits of the last byte, say)
        assert not r.damaged and res.ids == [f'r{i}' for i in range(40)]
        return
    if err_at is None and not ended:  # zlib read every byte without an error or the stream's end: to zlib, a cut file
        whole = got[:got.rfind(b'\n') + 1]  # (zeroed bytes at the end of the last block, say); the whole lines are read
        assert r.by_reason.get('truncated_shard') == 1 and r.rejections[-1].reason == 'truncated_shard'
        assert r.records == nonblank(whole) + 1
        return
    assert str(p) in r.damaged and all(i['damaged'] for i in res.info)  # named damaged, every record from it flagged
    checksum = err_at is None or 'incorrect' in msg  # all data came out, only the check failed
    whole = got if checksum else got[:got.rfind(b'\n') + 1]
    assert r.records == nonblank(whole) + 1  # every line zlib yields, plus the one entry for the damage
    tail = r.rejections[-1]
    lines = whole.count(b'\n') + (whole[-1:] not in (b'', b'\n'))  # a last line without its newline counts too
    assert tail.reason == 'corrupt_shard' and tail.line == lines + 1
    if checksum: assert 'fails its check' in tail.detail
    else: assert f'zlib stops at compressed byte {err_at:,}' in tail.detail


def test_damaged_member_does_not_stop_the_next_one(tmp_path):
    "Two gzip members, the first failing its CRC: the second is read too, and both members' lines are accounted"
    a = bytearray(gzip.compress(png_line(1) + b'\n', mtime=0)); a[-8] ^= 0xFF  # the stored CRC itself is wrong
    p = tmp_path/'m.jsonl.gz'; p.write_bytes(bytes(a) + gzip.compress(png_line(2) + b'\n', mtime=0))
    res = decode_shards(p, show_progress=False)
    assert res.ids == ['r1', 'r2'] and res.report.by_reason == {'corrupt_shard': 1} and 'member 1' in res.report.damaged[str(p)]


def test_a_cut_shard_works_as_before(tmp_path):
    "Cut, not damaged: the lines before the cut, one truncated_shard entry, nothing flagged"
    p = tmp_path/'c.jsonl.gz'; p.write_bytes(GZ[:len(GZ) * 2 // 3])
    res = decode_shards(p, show_progress=False)
    assert res.report.by_reason['truncated_shard'] == 1 and not res.report.damaged and res.ids and not any(i['damaged'] for i in res.info)


@pytest.mark.parametrize('strict', [False, True])
def test_doctor_flags_or_leaves_out_damaged_records(tmp_path, strict):
    bad = bytearray(GZ); bad[len(bad) // 2] ^= 0x08
    (tmp_path/'in').mkdir(); (tmp_path/'in'/'a.jsonl').write_bytes(png_line(100) + b'\n'); (tmp_path/'in'/'b.jsonl.gz').write_bytes(bytes(bad))
    res = doctor(tmp_path/'in', tmp_path/'out', strict=strict, plots=False, show_progress=False)
    r = res.report; accounted(r)
    rows = list(csv.DictReader(open(tmp_path/'out'/'decoded.csv', encoding='utf-8')))
    rejected = list(csv.DictReader(open(tmp_path/'out'/'rejected.csv', encoding='utf-8')))
    ids = np.load(tmp_path/'out'/'decoded.npz')['ids'].tolist()
    assert [x['id'] for x in rows] == ids and len(rows) == r.decoded and len(rejected) == r.rejected
    damaged = [x for x in rows if x['damaged'] == 'True']
    flagged = r.per_shard[str(tmp_path/'in'/'b.jsonl.gz')]['flagged']
    if strict: assert not damaged and ids == ['r100'] and r.by_reason['damaged_shard'] == flagged > 0
    else: assert len(damaged) == flagged > 0 and all(x['shard'].endswith('b.jsonl.gz') for x in damaged)
    rep = json.loads((tmp_path/'out'/'report.json').read_text())
    assert rep['counts']['records'] == rep['counts']['decoded'] + rep['counts']['rejected'] and rep['damaged_shards']
    assert 'damaged: b.jsonl.gz fails its gzip check' in res.summary()


# --- ids ----------------------------------------------------------------------------------------------------------

def test_a_million_character_id_costs_its_own_length(tmp_path):
    "The issue's case: one 1,000,000-character id made a 2.2 MB shard into a 1.2 GB decoded.npz"
    lines = [png_line(i) for i in range(300)] + [png_line(300, id='x' * 1_000_000)]
    (tmp_path/'s.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    res = doctor(tmp_path/'s.jsonl', tmp_path/'out', plots=False, show_progress=False)
    assert res.report.by_reason == {'id_too_long': 1} and res.report.decoded == 300
    assert (tmp_path/'out'/'decoded.npz').stat().st_size < 300 * 3072 + 100_000  # images plus a little
    assert (tmp_path/'out'/'report.json').stat().st_size < 20_000 and (tmp_path/'out'/'rejected.csv').stat().st_size < 2_000


@FAST
@given(st.lists(st.integers(1, 3 * MAX_ID), min_size=1, max_size=12))
def test_ids_up_to_the_limit_are_kept_longer_ones_rejected(tmp_path_factory, lengths):
    lines = [png_line(i, id=f'{i}-' + 'y' * n) for i, n in enumerate(lengths)]
    d = tmp_path_factory.mktemp('ids'); (d/'s.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    res = decode_shards(d/'s.jsonl', show_progress=False)
    want = [f'{i}-' + 'y' * n for i, n in enumerate(lengths) if len(f'{i}-') + n <= MAX_ID]
    assert res.ids == want and res.report.by_reason.get('id_too_long', 0) == len(lengths) - len(want)


def test_long_ids_pad_the_npz_only_a_little(tmp_path):
    "One id at the limit among many short ones: on disk the npz grows by far less than the padding it implies"
    short = [png_line(i) for i in range(2000)]
    for name, extra in (('a', []), ('b', [png_line(5000, id='z' * MAX_ID)])):
        (tmp_path/name).mkdir(); (tmp_path/name/'s.jsonl').write_bytes(b'\n'.join(short + extra) + b'\n')
        doctor(tmp_path/name, tmp_path/name/'out', plots=False, show_progress=False)
    grow = (tmp_path/'b'/'out'/'decoded.npz').stat().st_size - (tmp_path/'a'/'out'/'decoded.npz').stat().st_size
    assert grow < 3072 + 2000 * MAX_ID * 4 // 50, grow  # the image, and the padding squeezed at least 50-fold


# --- blank lines --------------------------------------------------------------------------------------------------

blank_lines = st.lists(st.one_of(st.sampled_from([b'', b' ', b'\t', b'  \r', b'\x0b\x0c']), st.just(None)), max_size=60)


@FAST
@given(blank_lines, st.booleans(), st.booleans())
def test_blank_lines_are_counted_exactly(tmp_path_factory, spec, gz, final_newline):
    "Any mix of blank, whitespace-only and record lines, plain or gzip: lines, records and line numbers are exact"
    lines = [png_line(i) if s is None else s for i, s in enumerate(spec)]
    body = b'\n'.join(lines) + (b'\n' if final_newline and lines else b'')
    d = tmp_path_factory.mktemp('blank'); p = d/('s.jsonl.gz' if gz else 's.jsonl')
    p.write_bytes(gzip.compress(body) if gz else body)
    res = decode_shards(p, show_progress=False, workers=1)
    assert (res.report.lines, res.report.records) == (len(body.split(b'\n')) - (body.endswith(b'\n') or not body), nonblank(body))
    assert [i['line'] for i in res.info] == [k + 1 for k, s in enumerate(spec) if s is None]


def test_blank_lines_never_reach_a_worker(tmp_path):
    "A flood of blank lines is counted by the reader in runs: no batch carries them"
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    (tmp_path/'b.jsonl.gz').write_bytes(c.compress(b'\n' * 10_000_000) + c.flush())
    (tmp_path/'b.jsonl').write_bytes(b'\n  \n' * 500_000 + png_line(1) + b'\n')
    for name, lines, records in (('b.jsonl.gz', 10_000_000, 0), ('b.jsonl', 1_000_001, 1)):
        batches = list(read_batches([tmp_path/name]))
        assert (sum(b.n for b in batches), sum(b.blank for b in batches), sum(len(b.nums) for b in batches)) == (lines, lines - records, records)
        assert len(batches) == 1


# --- text that UTF-8 cannot hold ----------------------------------------------------------------------------------

surrogate = st.sampled_from(['\ud800', '\udfff', 'a\udc80b', '\ud83d'])  # lone surrogates: legal JSON escapes, not UTF-8


@pytest.mark.slow
@FAST
@given(st.sampled_from(['id', 'mode', 'exif_rot', 'invert', 'img_b64', 'alpha_b64', 'key']), surrogate)
def test_lone_surrogates_anywhere(tmp_path_factory, field, s):
    "A lone surrogate in any string field: the doctor writes everything, the record is decoded or rejected with a reason"
    rec = json.loads(png_line(7))
    if field == 'key': rec[s] = 1
    else: rec[field] = s if field != 'img_b64' else rec[field][:100] + s
    d = tmp_path_factory.mktemp('sur'); (d/'s.jsonl').write_bytes(json.dumps(rec).encode() + b'\n' + png_line(8) + b'\n')
    res = doctor(d/'s.jsonl', d/'out', plots=True, show_progress=False)
    accounted(res.report); assert res.report.records == 2 and 'r8' in np.load(d/'out'/'decoded.npz')['ids'].tolist()
    for f in ('decoded.csv', 'rejected.csv', 'report.json'): (d/'out'/f).read_text(encoding='utf-8')  # valid UTF-8
    json.loads((d/'out'/'report.json').read_text()); res.summary().encode('utf-8')
    if field == 'id': assert res.report.by_reason == {'bad_id': 1}


def test_non_utf8_shard_name(tmp_path):
    "A shard whose file name is not UTF-8: read, named with \\xNN in every output, ids made from that name"
    d = os.fsencode(tmp_path)
    name = os.fsdecode(d + b'/shard-\xff\xfe.jsonl')
    with open(name, 'wb') as f: f.write(json.dumps({'img_b64': json.loads(png_line(1))['img_b64']}).encode() + b'\n' + png_line(2) + b'\n')
    res = doctor(tmp_path, tmp_path/'out', plots=True, show_progress=False)
    assert res.report.decoded == 2 and res.report.shards == [safe_text(name)]
    ids = np.load(tmp_path/'out'/'decoded.npz')['ids'].tolist()
    assert ids == ['shard-\\xff\\xfe-L000001', 'r2'] and all(safe_text(i) == i for i in ids)
    for f in ('decoded.csv', 'rejected.csv', 'report.json'): (tmp_path/'out'/f).read_text(encoding='utf-8')
    print(res.summary())  # printable (the CLI prints it)


# --- output folders -----------------------------------------------------------------------------------------------

def test_out_that_is_a_file_or_unwritable_is_one_clear_error(tmp_path):
    (tmp_path/'s.jsonl').write_bytes(png_line(1) + b'\n'); (tmp_path/'file').write_text('x')
    cases = [(tmp_path/'file', 'exists and is not a folder'), (tmp_path/'file'/'sub', 'cannot create the folder')]
    try: check_out_dir('/sys')  # read-only even for root, where it exists
    except GanlabError: cases.append(('/sys', 'cannot write in /sys'))
    for out, msg in cases:
        with pytest.raises(GanlabError, match=msg) as e: doctor(tmp_path/'s.jsonl', out, show_progress=False)
        assert str(out) in str(e.value) and str(e.value).startswith('out: ')
    assert (tmp_path/'file').read_text() == 'x'  # untouched
    with pytest.raises(GanlabError, match='is a folder, not a file'): check_out_file(tmp_path, '--zip')


# --- no entry point lets anything but GanlabError out ---------------------------------------------------------------

@pytest.mark.slow
@FAST
@given(st.binary(max_size=400), st.sampled_from(['s.jsonl', 's.jsonl.gz']))
def test_any_bytes_as_a_shard_file(tmp_path_factory, data, name):
    "Any bytes under either name: shard_lines raises only ShardCut, the doctor only finishes"
    d = tmp_path_factory.mktemp('any'); (d/name).write_bytes(data)
    try: list(shard_lines(d/name))
    except ShardCut: pass
    res = doctor(d/name, d/'out', plots=False, show_progress=False)
    accounted(res.report)


def test_both_kinds_of_damage_are_met():
    "The property above sees both outcomes: zlib stopping mid-stream, and the whole member read with a failing CRC"
    seen = set()
    for pos in range(12, len(GZ) - 8, 7):
        bad = bytearray(GZ); bad[pos] ^= 0x04
        seen.add(zlib_salvage(bytes(bad))[1] is None or 'incorrect' in zlib_salvage(bytes(bad))[2])
        if len(seen) == 2: break
    assert seen == {True, False}
