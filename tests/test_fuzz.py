"""Property tests: whatever the bytes, the decoder returns an S x S x 3 uint8 image or a rejection with a known
reason, and never raises."""
import base64, gzip, io, json, zlib
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from ganlab.records import REASONS, Decoded, Rejection, decode_line, IMAGE_KEYS
from ganlab.shards import decode_shards, shard_lines, ShardCut


def check(o, size=32):
    "The outcome contract"
    assert isinstance(o, (Decoded, Rejection))
    if isinstance(o, Decoded):
        assert o.image.shape == (size, size, 3) and o.image.dtype == np.uint8 and o.image.flags.c_contiguous
        assert isinstance(o.id, str) and o.id
    else:
        assert o.reason in REASONS, o.reason
    return o


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


@given(st.binary(max_size=300))
def test_arbitrary_bytes(b): check(decode_line(b))


@given(json_values)
def test_arbitrary_json(v): check(decode_line(json.dumps(v).encode()))


@given(st.dictionaries(st.sampled_from(list(IMAGE_KEYS) + ['id', 'mode', 'size', 'exif_rot', 'invert', 'alpha_b64', 'other']),
                       json_values, max_size=7))
def test_arbitrary_fields(rec): check(decode_line(json.dumps(rec).encode()))


@given(st.sampled_from(IMAGE_KEYS), st.text(max_size=200))
def test_arbitrary_text_as_image(key, text): check(decode_line(json.dumps({key: text}).encode()))


@given(st.binary(max_size=400), st.booleans())
def test_arbitrary_bytes_as_base64(b, urlsafe):
    t = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(b).decode()
    check(decode_line(json.dumps({'img_b64': t}).encode()))


def _seeds():
    "Valid images in many formats and modes, to be damaged"
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    def enc(im, fmt, **kw): b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()
    im = Image.fromarray(rgb)
    return [enc(im, 'PNG'), enc(im.convert('RGBA'), 'PNG'), enc(im.convert('L'), 'PNG'), enc(im.quantize(8), 'PNG', transparency=1),
            enc(Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), 'PNG'), enc(im.convert('LA'), 'PNG'), enc(im.convert('1'), 'PNG'),
            enc(im, 'JPEG'), enc(im.convert('CMYK'), 'JPEG'), enc(im, 'WEBP'), enc(im, 'BMP'), enc(im, 'TIFF'), enc(im.quantize(8), 'GIF'),
            enc(im.convert('CMYK'), 'TIFF'), enc(Image.fromarray(rgb[..., 0].astype('>u2') * 257), 'TIFF'), enc(im, 'PPM'), enc(im, 'ICO', sizes=[im.size])]


SEEDS = _seeds()


@st.composite
def damaged(draw):
    "A seed image with random byte edits: flips, cuts, insertions, deletions, repeats"
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op, pos = draw(st.sampled_from(['flip', 'cut', 'insert', 'delete', 'repeat'])), draw(st.integers(0, max(len(data) - 1, 0)))
        if not data: break
        if op == 'flip': data[pos] ^= draw(st.integers(1, 255))
        elif op == 'cut': del data[pos:]
        elif op == 'insert': data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == 'delete': del data[pos:pos + draw(st.integers(1, 16))]
        else: data[pos:pos] = data[pos:pos + draw(st.integers(1, 64))]
    return bytes(data)


flags = st.fixed_dictionaries({}, optional={'exif_rot': st.sampled_from([0, 90, '180', 270, '270', 45, 'x', None, -90, 1e308]),
                                            'invert': st.sampled_from([True, 'yes', 1, 0, 'no', None, [1]]),
                                            'mode': json_values, 'size': json_values, 'id': json_values})


@settings(max_examples=300)
@given(damaged(), flags, st.sampled_from([16, 32, 64]))
def test_damaged_images(data, extra, size):
    rec = {'img_b64': base64.b64encode(data).decode(), **extra}
    check(decode_line(json.dumps(rec).encode(), size=size), size)


@settings(max_examples=100)
@given(damaged(), damaged())
def test_damaged_alpha_masks(data, mask):
    check(decode_line(json.dumps({'img_b64': base64.b64encode(data).decode(), 'alpha_b64': base64.b64encode(mask).decode()}).encode()))


def test_seeds_decode():
    "The undamaged seeds all decode: the damage test starts from images that work"
    for s in SEEDS: assert isinstance(decode_line(json.dumps({'img_b64': base64.b64encode(s).decode()}).encode()), Decoded)


lines_st = st.lists(st.one_of(st.binary(max_size=60).filter(lambda b: b'\n' not in b),
                              st.builds(lambda d: json.dumps({'img_b64': base64.b64encode(d).decode()}).encode(), damaged())), max_size=12)


@settings(max_examples=60)
@given(lines_st, st.booleans(), st.floats(0, 1), st.booleans())
def test_whole_shards(tmp_path_factory, lines, gz, cut, do_cut):
    "Any shard, plain or gzipped, whole or cut anywhere: every non-blank line is decoded or reported, in order"
    body = b'\n'.join(lines) + b'\n'
    stored = gzip.compress(body) if gz else body
    if do_cut: stored = stored[:int(len(stored) * cut)]
    p = tmp_path_factory.mktemp('shard')/('s.jsonl.gz' if gz else 's.jsonl')
    p.write_bytes(stored)
    res = decode_shards(p, show_progress=False)
    r = res.report
    assert r.records == r.decoded + r.rejected and r.decoded == len(res.ids) == len(res.images)
    assert [x['line'] for x in res.info] == sorted(x['line'] for x in res.info)
    nonblank = lambda text: sum(1 for l in text.split(b'\n') if l.strip())
    if not gz: assert r.records == nonblank(stored)  # a plain shard cut mid-line still has that partial line
    elif not do_cut: assert r.records == nonblank(body)
    else:  # the whole lines before the cut, each decoded or reported, then one entry for the cut
        readable = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(stored)
        whole_lines = b'\n'.join(readable.split(b'\n')[:readable.count(b'\n')])
        cut_entry = int(len(stored) < len(gzip.compress(body)))
        assert r.records == nonblank(whole_lines) + cut_entry
        assert r.by_reason['truncated_shard'] + r.by_reason['corrupt_shard'] == cut_entry


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b'\n', b' ')), min_size=1, max_size=40), st.floats(0, 1), st.integers(1, 9))
def test_gzip_cut_keeps_the_lines_before_it(tmp_path_factory, lines, cut, level):
    "A .gz cut anywhere yields exactly the whole lines its readable prefix holds, then says it was cut"
    gz = gzip.compress(b'\n'.join(lines) + b'\n', compresslevel=level)
    cut_gz = gz[:int(len(gz) * cut)]
    p = tmp_path_factory.mktemp('gz')/'s.jsonl.gz'; p.write_bytes(cut_gz)
    readable = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut_gz)  # what zlib itself can recover
    expect = readable.split(b'\n')[:readable.count(b'\n')]
    got, cut_seen = [], None
    try:
        for l in shard_lines(p): got.append(l)
    except ShardCut as e: cut_seen = e.reason
    assert got == expect
    assert cut_seen == ('truncated_shard' if len(cut_gz) < len(gz) else None)


big_text = st.builds(lambda n, wrap, extra: (lambda s: '\n'.join(s[i:i + 76] for i in range(0, len(s), 76)) if wrap else s)(
                     base64.b64encode(bytes(n)).decode()) + extra, st.integers(50_000, 70_000), st.booleans(),
                     st.sampled_from(['', '/', '\\', '"', '\t', '\\n', 'é', '\x00', '\u2028']))


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(list(IMAGE_KEYS) + ['id', 'meta', 'mode']), json_values | big_text, max_size=4),
       st.sampled_from(list(IMAGE_KEYS)), big_text, st.booleans(), st.booleans())
def test_long_line_parse_equals_json(rec, key, text, nest, ascii_only):
    "The long-line shortcut of parse_line gives exactly what json.loads gives, or leaves the line to json.loads"
    from ganlab.records import _parse_long, parse_line, Reject
    rec = dict(rec, **({'meta': {key: text}} if nest else {key: text}))
    line = json.dumps(rec, ensure_ascii=ascii_only).encode()
    tab = line.replace(b'AAAA', b'AA\tAA', 1)  # a raw control character inside a string: not JSON
    for variant in (line, line.replace(b', ', b',\t'), line[:-1], line + b' x', tab, json.dumps({'id': 'x', key: text}).encode()):
        try: ref = json.loads(variant)
        except ValueError: ref = None
        fast = _parse_long(variant)
        assert fast is None or fast == ref
        try: got = parse_line(variant)
        except Reject: got = None
        assert got == (ref if isinstance(ref, dict) else None)


def test_long_line_shortcut_is_taken():
    "Clean long lines do take the shortcut (the property above would also pass if it never did)"
    from ganlab.records import _parse_long
    text = base64.b64encode(bytes(80_000)).decode()
    for key in IMAGE_KEYS:
        for rec in ({'id': 'a', key: text}, {key: '\n'.join(text[i:i + 76] for i in range(0, len(text), 76)), 'mode': 'L', 'x': [1, {'y': None}]}):
            line = json.dumps(rec).encode()
            assert _parse_long(line) == json.loads(line) == rec
