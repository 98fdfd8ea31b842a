"""The Monet CycleGAN's data side: TFRecord framing under damage, CRC-32C, domains from every kind of source, pairing, augmentation."""
import io, tempfile, warnings, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from PIL import Image
from ganlab.core import GanlabError
from ganlab.data import to_tensor
from ganlab.unpaired import (SKIP_REASONS, DomainReport, crc32c, cyclegan_augment, domain_parts, iter_domain,
                             iter_encoded, iter_tfrecord, kaggle_record, load_domain, make_example, masked_crc, parse_example,
                             tfrecord_frame, write_tfrecord)


def crc32c_bitwise(data: bytes) -> int:
    "CRC-32C by the definition (reflected Castagnoli polynomial 0x82F63B78), bit by bit: an oracle independent of google-crc32c"
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8): c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF


def jpeg(a, q=90):
    b = io.BytesIO(); Image.fromarray(a).save(b, 'JPEG', quality=q); return b.getvalue()


# --- CRC-32C --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('data,crc', [
    (b'123456789', 0xE3069283),          # the CRC catalogue's check value
    (bytes(32), 0x8A9136AA),             # RFC 3720 B.4
    (b'\xff' * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_vectors(data, crc):
    assert crc32c(data) == crc == crc32c_bitwise(data)


@given(st.binary(max_size=200))
def test_crc32c_matches_the_definition(data):
    assert crc32c(data) == crc32c_bitwise(data)
    c = crc32c_bitwise(data)
    assert masked_crc(data) == ((((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


# --- framing: round trip and damage ----------------------------------------------------------------------------------

records = st.lists(st.binary(max_size=300), min_size=1, max_size=8)


@given(records)
def test_round_trip(recs):
    with tempfile.TemporaryDirectory() as d:
        p = write_tfrecord(Path(d)/'x.tfrecord', recs)
        out = list(iter_tfrecord(p))
    assert [r for _, _, r in out] == recs
    assert [i for i, _, _ in out] == list(range(len(recs)))
    assert [o for _, o, _ in out] == list(np.cumsum([0] + [len(r) + 16 for r in recs[:-1]]))


@settings(max_examples=300)
@given(records, st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4), st.one_of(st.none(), st.integers(0, 10**6)))
def test_damage_is_reported_never_silent(recs, flips, cut):
    "Flipped bytes and a cut tail: good records come through intact, every lost one is reported, nothing else is raised"
    blob = bytearray(b''.join(tfrecord_frame(r) for r in recs))
    offsets = list(np.cumsum([0] + [len(r) + 16 for r in recs]))
    hit = set()
    for pos, x in flips:
        pos %= len(blob); blob[pos] ^= x; hit.add(pos)
    end = len(blob) if cut is None else cut % (len(blob) + 1)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)/f'x00-{len(recs)}.tfrec'; p.write_bytes(bytes(blob[:end]))  # a Kaggle name: a cut between records shows too
        r = DomainReport()
        try: out = list(iter_tfrecord(p, r))
        except GanlabError as e:  # the one documented refusal: damage that makes the file look gzip-compressed
            assert blob[:2] == b'\x1f\x8b' and 'gzip' in str(e); return
    got = {i: (o, data) for i, o, data in out}
    for i, (o, data) in got.items(): assert (o, data) == (offsets[i], recs[i])  # what comes through is exactly what was written
    assert all(s.reason in SKIP_REASONS and s.source == str(p) for s in r.skipped)
    assert [s.index for s in r.skipped] == sorted(s.index for s in r.skipped)
    stop = min((s.index for s in r.skipped if s.reason in ('length_crc', 'truncated', 'short_file')), default=None)
    assert stop is None or r.skipped[-1].index == stop  # nothing is read after the file was given up
    reported = {s.index for s in r.skipped}
    header_ok = True
    for i, rec in enumerate(recs):
        lo, hi = offsets[i], offsets[i + 1]
        if i in got: continue
        assert i in reported or (stop is not None and stop <= i), f'record {i} lost without a report'
        intact = hi <= end and not any(lo <= h < hi for h in hit)
        assert not (intact and header_ok), f'record {i} is intact and reachable, yet was not read'
        header_ok = header_ok and hi <= end and not any(lo <= h < lo + 12 for h in hit)


def test_each_kind_of_damage(tmp_path):
    recs = [b'a' * 10, b'b' * 20, b'c' * 30]
    good = tfrecord_frame(recs[0]) + tfrecord_frame(recs[1]) + tfrecord_frame(recs[2])
    def read(blob, **kw):
        p = tmp_path/'f.tfrec'; p.write_bytes(blob); r = DomainReport()
        return [d for _, _, d in iter_tfrecord(p, r, **kw)], [(s.index, s.offset, s.reason) for s in r.skipped]
    b = bytearray(good); b[26 + 12 + 5] ^= 1  # data of record 1
    assert read(bytes(b)) == ([recs[0], recs[2]], [(1, 26, 'data_crc')])
    b = bytearray(good); b[26 + 12 + 20 + 1] ^= 1  # the data CRC of record 1 itself
    assert read(bytes(b)) == ([recs[0], recs[2]], [(1, 26, 'data_crc')])
    b = bytearray(good); b[26 + 9] ^= 1  # the length CRC of record 1
    assert read(bytes(b)) == ([recs[0]], [(1, 26, 'length_crc')])
    assert read(good[:-1]) == (recs[:2], [(2, 62, 'truncated')])
    assert read(good + b'\0' * 5) == (recs, [(3, 108, 'truncated')])
    assert read(good, max_record=25) == ([recs[0], recs[1]], [(2, 62, 'too_large')])
    huge = (2**62).to_bytes(8, 'little'); huge += masked_crc(huge).to_bytes(4, 'little')
    assert read(good + huge) == (recs, [(3, 108, 'truncated')])  # an absurd length is never allocated
    with pytest.raises(GanlabError, match=r'f\.tfrec: record 1 \(byte 26\): data crc'):
        b = bytearray(good); b[26 + 12 + 5] ^= 1; (tmp_path/'f.tfrec').write_bytes(bytes(b)); list(iter_tfrecord(tmp_path/'f.tfrec'))


# --- Examples and domains --------------------------------------------------------------------------------------------

def test_example_round_trip():
    ex = make_example({'image_name': 'n1', 'image': b'\xff\xd8x', 'target': b'photo', 'ints': [1, -2, 2**40], 'f': 0.25})
    assert parse_example(ex) == {'image_name': [b'n1'], 'image': [b'\xff\xd8x'], 'target': [b'photo'], 'ints': [1, -2, 2**40], 'f': [0.25]}
    assert kaggle_record(ex, 'photo03-9.tfrec', 4) == ('n1', b'\xff\xd8x')
    with pytest.raises(GanlabError, match='p.tfrec: record 4: not a tf.train.Example'): kaggle_record(b'\x0a\xff', 'p.tfrec', 4)


@pytest.fixture(scope='module')
def domain(tmp_path_factory):
    "Six random images as a TFRecord folder (two shards), a PNG folder with a subfolder, a zip of it, and the arrays"
    d = tmp_path_factory.mktemp('dom')
    small = np.random.default_rng(0).integers(0, 256, (6, 6, 8, 3), dtype=np.uint8)  # smooth pictures, so JPEG keeps them close
    a = np.stack([np.asarray(Image.fromarray(x).resize((64, 48), Image.Resampling.BICUBIC)) for x in small])
    (d/'tf').mkdir(); (d/'png'/'sub').mkdir(parents=True)
    ex = [make_example({'image_name': f'im{k}', 'image': jpeg(x), 'target': 'monet'}) for k, x in enumerate(a)]
    write_tfrecord(d/'tf'/'monet00-4.tfrec', ex[:4]); write_tfrecord(d/'tf'/'monet01-2.tfrec', ex[4:])
    for k, x in enumerate(a): Image.fromarray(x).save(d/'png'/(f'sub/im{k}.png' if k == 5 else f'im{k}.png'))
    with zipfile.ZipFile(d/'png.zip', 'w') as z:
        for q in sorted((d/'png').rglob('*.png')): z.write(q, q.relative_to(d/'png').as_posix())
    return d, a


def test_domain_sources_agree(domain):
    d, a = domain
    tf = load_domain(d/'tf', 32)
    assert tf.images.shape == (6, 32, 32, 3) and tf.names == [f'im{k}' for k in range(6)] and tf.report.skipped == []
    assert load_domain(str(d/'tf'/'*.tfrec'), 32).names == tf.names
    assert load_domain([d/'tf'/'monet01-2.tfrec', d/'tf'/'monet00-4.tfrec'], 32).names == tf.names[4:] + tf.names[:4]
    png, z = load_domain(d/'png', 48), load_domain(d/'png.zip', 48)
    assert png.names == z.names == [f'im{k}' for k in range(5)] + ['sub/im5'] and np.array_equal(png.images, z.images)
    assert np.array_equal(png.images[0], a[0][:, 8:56])  # lossless PNG at the target size: the exact centre square
    glob_png = load_domain(str(d/'png'/'*.png'), 48)
    assert glob_png.names == [f'im{k}' for k in range(5)]
    assert np.abs(tf.images.astype(int) - load_domain(d/'png', 32).images.astype(int)).mean() < 6  # JPEG (q90, 4:2:0) vs PNG, same pictures
    assert 'nothing skipped' in repr(tf) and '6 images of 32x32 from 2 files' in repr(tf)


def test_domain_errors_name_the_input(domain, tmp_path):
    d, _ = domain
    for spec, msg in [(tmp_path/'none', 'none: no such file or folder'), (str(tmp_path/'*.tfrec'), 'the pattern matches no files')]:
        with pytest.raises(GanlabError, match=msg): load_domain(spec)
    (tmp_path/'e').mkdir()
    with pytest.raises(GanlabError, match='e: folder holds no images'): load_domain(tmp_path/'e')
    (tmp_path/'t.txt').write_text('x')
    with pytest.raises(GanlabError, match='t.txt: not a TFRecord file'): load_domain(tmp_path/'t.txt')
    (tmp_path/'k'/'monet_tfrec').mkdir(parents=True); (tmp_path/'k'/'photo_jpg').mkdir()
    with pytest.raises(GanlabError, match='several domains'): load_domain(tmp_path/'k')
    write_tfrecord(tmp_path/'bad.tfrec', [b'\x0a\xff'])
    with pytest.raises(GanlabError, match='bad.tfrec: no image came through'), warnings.catch_warnings():
        warnings.simplefilter('ignore'); load_domain(tmp_path/'bad.tfrec')
    with pytest.raises(GanlabError, match='size must be a positive int'): load_domain(d/'tf', size=-1)


def test_duplicates_are_deterministic(domain):
    d, _ = domain
    both = [d/'tf', d/'tf'/'monet00-4.tfrec']
    with pytest.warns(UserWarning, match='4 records or images skipped'):
        skip = load_domain(both, 16)
    assert skip.names == [f'im{k}' for k in range(6)] and [s.reason for s in skip.report.skipped] == ['duplicate'] * 4
    ren = load_domain(both, 16, duplicates='rename')
    assert ren.names[6:] == [f'im{k}~2' for k in range(4)] and len(set(ren.names)) == 10
    assert load_domain(both, 16, duplicates='rename').names == ren.names
    with pytest.raises(GanlabError, match="an image named 'im0' was read before"): load_domain(both, 16, duplicates='error')


def test_iter_domain_streams(domain):
    "The generator decodes one image at a time and stops at `limit` without reading further"
    d, _ = domain
    it = iter_domain(d/'tf', 16)
    name, img = next(it)
    assert name == 'im0' and img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert [n for n, _ in iter_domain(d/'tf', 16, limit=5)] == [f'im{k}' for k in range(5)]
    assert list(iter_domain(d/'tf', 16, limit=0)) == []


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 10**5), st.integers(1, 255)), min_size=1, max_size=6), st.integers(0, 3))
def test_damaged_payloads_are_reported(flips, which):
    "Sound framing around damaged Examples and JPEGs: each record is an image or a report entry, never an exception"
    a = np.random.default_rng(which).integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    payload = [bytearray(make_example({'image_name': f'n{k}', 'image': jpeg(x)})) for k, x in enumerate(a)]
    for pos, x in flips: payload[which][pos % len(payload[which])] ^= x
    with tempfile.TemporaryDirectory() as d:
        p = write_tfrecord(Path(d)/'x.tfrec', map(bytes, payload))
        r = DomainReport()
        out = list(iter_domain(p, 16, report=r))
    names = [n for n, _ in out]
    assert len(out) + len(r.skipped) == 4 and all(img.shape == (16, 16, 3) for _, img in out)  # each record: an image or one report
    dup = {s.index for s in r.skipped if s.reason == 'duplicate'}  # the damaged name may take a later record's name
    assert all(f'n{k}' in names or k in dup for k in range(4) if k != which)
    assert all(s.index == which or s.reason == 'duplicate' for s in r.skipped) and len(set(names)) == len(names)


# --- the real data ---------------------------------------------------------------------------------------------------

def test_real_monet_shard(shared):
    shard = shared/'monet'/'monet00-60.tfrec'
    if not shard.exists(): pytest.skip(f'{shard} is absent')
    m = load_domain(shard, 256)
    assert m.images.shape == (60, 256, 256, 3) and m.images.dtype == np.uint8
    assert len(set(m.names)) == 60 and m.report.skipped == [] and m.report.kept == 60
    sizes = {Image.open(io.BytesIO(e.data)).size + (Image.open(io.BytesIO(e.data)).mode,) for e in iter_encoded(shard)}
    assert sizes == {(256, 256, 'RGB')}
    assert m.images.std() > 30  # real paintings, not blank decodes


def test_photo_stand_in_upscaled(shared):
    "CelebA faces brought up to 256 x 256: the photo domain the training tests use"
    z = shared/'celeba-10k-jpg.zip'
    if not z.exists(): pytest.skip(f'{z} is absent')
    p = load_domain(z, 256, limit=8)
    assert p.images.shape == (8, 256, 256, 3) and p.names[:2] == ['000001', '000002']


# --- augmentation ----------------------------------------------------------------------------------------------------

xb = to_tensor(np.random.default_rng(3).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize('load,flip', [(None, True), (72, False), (64, True)])
def test_augment_shape_range_determinism(load, flip):
    g = lambda s: torch.Generator().manual_seed(s)
    out = cyclegan_augment(xb, g(0), load=load, flip=flip)
    assert out.shape == xb.shape and out.dtype == xb.dtype and -1 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, cyclegan_augment(xb, g(0), load=load, flip=flip))
    assert not torch.equal(out, cyclegan_augment(xb, g(1), load=load, flip=flip))
    big = F.interpolate(xb, size=(load or 72,) * 2, mode='bilinear', align_corners=False) if load != 64 else xb
    m = big.shape[-1] - 64
    for k in range(6):  # each output is a window of the resized image, mirrored or not
        wins = [big[k, :, y:y + 64, x:x + 64] for y in range(m + 1) for x in range(m + 1)]
        assert any(torch.equal(out[k], w) or (flip and torch.equal(out[k], w.flip(-1))) for w in wins)


def test_augment_default_load_and_memory_format():
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    g = torch.Generator().manual_seed(0)
    out = cyclegan_augment(x.contiguous(memory_format=torch.channels_last), g)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, cyclegan_augment(x, torch.Generator().manual_seed(0)))
    with pytest.raises(GanlabError, match='load must be an int >= the image side 256'): cyclegan_augment(x, load=255)
    with pytest.raises(GanlabError, match='N x C x S x S float tensor'): cyclegan_augment(x.to(torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_augment_cuda_matches_cpu():
    out = cyclegan_augment(xb.cuda(), torch.Generator().manual_seed(4))
    assert out.is_cuda and torch.allclose(out.cpu(), cyclegan_augment(xb, torch.Generator().manual_seed(4)), atol=1e-5)
    assert cyclegan_augment(xb.cuda().half(), torch.Generator('cuda').manual_seed(0)).dtype == torch.float16
