#!/usr/bin/env python3
"""Decode throughput and peak memory of `ganlab doctor`, and what it does with hostile input.

    python bench/decode.py [--repeat 5] [--workers 2] [--synthetic 20000]
    python bench/decode.py --issue18 [--images 20000] [--repeat 5] [--compare ../main]
    python bench/decode.py --hostile

Default: runs `ganlab doctor <shards> --out <tmp> --workers N --quiet` as a fresh process, the way a user does, `--repeat`
times on `../shared/data/noisy-shards/shard-*` (2,006 records) and, with `--synthetic N`, on N synthetic digit
records written as noisy shards (a larger set, where start-up costs fade). For each run it prints:
- decode records/s: records / the decode stage's seconds (doctor's own clock in report.json: reading, decoding in
  the workers, writing decoded.npz), the figure the target is stated in;
- whole-process records/s: records / wall time of the entire command, Python start-up, imports and plots included;
- calibration: how fast one core decodes the same records right now (the VM's speed drifts by a fifth over
  minutes, so figures from different sessions compare only through it);
- peak memory, in one more run (sampling costs CPU, so timed runs are not sampled): the largest sum of resident
  memory of the process and its workers, every 5 ms (an upper bound: pages the forked workers share with their
  parent are counted twice).

`--issue18`: the figure issue 18 states its target in. Writes the first `--images` CIFAR-10 training images of
../shared/data/cifar10-jpg.zip as noisy shards (`ganlab.noisy.write_noisy_shards`, seed 0, 4 shards), cuts a
one-line shard from the first, and runs `ganlab doctor ... --workers 2 --quiet` on each, interleaved, `--repeat`
times: records / (T(set) - T(one line)), each T the wall time of a whole command. The same, as a library call in a
fresh Python (`doctor(...)`, no CLI start-up), with the time of the plots from doctor's own clock (matplotlib's
import included); and the CPU seconds (user + system, workers included) of each, since on a shared machine CPU
time moves less than wall time.

`--hostile`: issue 19's classes of hostile input through each entry point (`shard_lines`, `decode_shards`, the
library `doctor`, the `ganlab doctor` command): how many cases, how many ended in a clear error, a traceback, or
lost a line silently; and the peak memory (process tree, psutil, every 5 ms) of the worst of the small inputs.
"""
import argparse, gzip, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time, zlib
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parent.parent
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))


def watch(cmd, **kw):
    "Run `cmd`, sampling the resident memory of its process tree every 5 ms: (return code, stdout, stderr, peak bytes)"
    p, peak = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, **kw), 0
    out, err = [], []
    import threading
    ts = [threading.Thread(target=lambda s, b: b.append(s.read()), args=(s, b)) for s, b in ((p.stdout, out), (p.stderr, err))]
    for t in ts: t.start()
    while p.poll() is None:
        try: peak = max(peak, sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
        except psutil.Error: pass
        time.sleep(0.005)
    for t in ts: t.join()
    return p.returncode, out[0].decode(errors='replace'), err[0].decode(errors='replace'), peak


def run_doctor(shards, workers, watch_memory=False):
    "One doctor run in a fresh process: (records, decode seconds, wall seconds, peak bytes or None)"
    out = tempfile.mkdtemp(prefix='bench-doctor-')
    cmd = [GANLAB, 'doctor', *shards, '--out', out, '--workers', str(workers), '--quiet']
    t0, peak = time.perf_counter(), None
    if watch_memory: rc, _, _, peak = watch(cmd)  # sampling costs CPU that the workers would otherwise use: only in runs that are not timed
    else: rc = subprocess.run(cmd, env=ENV).returncode
    wall = time.perf_counter() - t0
    if rc: sys.exit(f'ganlab doctor failed with status {rc}')
    rep = json.loads((Path(out)/'report.json').read_text())
    shutil.rmtree(out)
    return rep['counts']['records'], rep['seconds'], wall, peak


def bench(name, shards, workers, repeat):
    print(f'\n{name}: ganlab doctor {" ".join(map(str, shards))} --workers {workers}')
    print(f"{'run':>4} {'records':>8} {'decode s':>9} {'decode rec/s':>13} {'wall s':>7} {'whole rec/s':>12}")
    rows = []
    for i in range(repeat):
        n, dec, wall, _ = run_doctor(shards, workers)
        rows.append((dec, wall))
        print(f'{i + 1:>4} {n:>8,} {dec:>9.3f} {n / dec:>13,.0f} {wall:>7.2f} {n / wall:>12,.0f}')
    peak = run_doctor(shards, workers, watch_memory=True)[3]
    dec, wall = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    print(f'median: decode {n / dec:,.0f} records/s, whole process {n / wall:,.0f} records/s ({wall:.2f} s); '
          f'peak memory {peak / 2**20:.0f} MiB (one more run, sampled every 5 ms)')
    print(f'calibration: one core decodes the same records at {calibrate(shards):,.0f} records/s right now '
          f'(in-process, best CPU time of 3): the VM\'s speed drifts, so compare runs through this figure')


def calibrate(shards):
    "Records per CPU-second of a one-process decode of `shards`, best of three"
    from ganlab.records import register_formats
    from ganlab.shards import iter_decode
    register_formats(); best = None
    for _ in range(3):
        c = time.process_time(); n = sum(1 for _ in iter_decode(shards, workers=1, show_progress=False))
        best = min(best or 1e9, time.process_time() - c)
    return n / best


# --- issue 18: the whole command, beyond a one-line run -------------------------------------------------------------

LIB = '''import json, sys
from ganlab.eda import doctor
r = doctor(sys.argv[1], sys.argv[2], workers=2, show_progress=False)
print(json.dumps(dict(getattr(r, 'seconds', None) or {'decode': r.report.seconds}, records=r.report.records)))'''


def timed(cmd, root):
    "(wall seconds, CPU seconds of the process tree, stdout) of one command run with `root`'s ganlab"
    c0, t0 = os.times(), time.perf_counter()
    p = subprocess.run(cmd, env=dict(ENV, PYTHONPATH=str(root)), capture_output=True, text=True)
    wall, c1 = time.perf_counter() - t0, os.times()
    if p.returncode: sys.exit(f'{cmd[:3]} failed with status {p.returncode}: {p.stderr[-2000:]}')
    return wall, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system), p.stdout


def issue18(images, repeat, compare=None):
    from ganlab.core import shared_data
    z = shared_data('cifar10-jpg.zip')
    if z is None: sys.exit('--issue18 needs ../shared/data/cifar10-jpg.zip (or GANLAB_SHARED_DATA)')
    from ganlab.data import load_images
    from ganlab.noisy import write_noisy_shards
    d = Path(tempfile.mkdtemp(prefix='bench-issue18-'))
    t = time.perf_counter()
    ims = load_images(z, 32, limit=images, split='train', show_progress=False).images
    write_noisy_shards(ims, d/'set', seed=0, n_shards=4, show_progress=False)
    first = (d/'set'/'shard-000.jsonl').read_bytes().split(b'\n', 1)[0]
    (d/'one').mkdir(); (d/'one'/'one.jsonl').write_bytes(first + b'\n')
    print(f'(wrote {images:,} CIFAR-10 training images as noisy shards in {time.perf_counter() - t:.0f} s)')
    roots = {'this checkout': ROOT, **({f'{compare}': Path(compare)} if compare else {})}
    sets = {'one line': d/'one'/'one.jsonl', 'set': d/'set'}
    runs = {(r, how, k): [] for r in roots for how in ('CLI', 'library') for k in sets}
    for i in range(repeat):  # interleaved: the machine's speed drifts
        for r, root in roots.items():
            for k, src in sets.items():
                out = d/'out'; shutil.rmtree(out, ignore_errors=True)
                runs[r, 'CLI', k].append(timed([GANLAB, 'doctor', str(src), '--out', str(out), '--workers', '2', '--quiet'], root)[:2] + (None,))
                rep = json.loads((out/'report.json').read_text())['counts']; shutil.rmtree(out, ignore_errors=True)
                w, c, so = timed([sys.executable, '-c', LIB, str(src), str(out)], root)
                runs[r, 'library', k].append((w, c, json.loads(so.strip().splitlines()[-1])))
                if k == 'set': rec, lines = rep['records'], rep['lines']
            print(f'run {i + 1}, {r}: ' + ', '.join(f'{how} {k} {runs[r, how, k][-1][0]:.2f} s' for how in ('CLI', 'library') for k in sets)
                  + f"; doctor's clock on the set: {', '.join(f'{a} {v:.2f} s' for a, v in runs[r, 'library', 'set'][-1][2].items() if a != 'records')}")
    med = lambda xs, j: statistics.median(x[j] for x in xs)
    print(f'\nset: {lines:,} lines read, {rec:,} records (the first {images:,} CIFAR-10 training images); one-line shard: 1 record; '
          f'medians of {repeat} interleaved runs')
    for r in roots:
        for how in ('CLI', 'library'):
            one, full = runs[r, how, 'one line'], runs[r, how, 'set']
            dw, dc = med(full, 0) - med(one, 0), med(full, 1) - med(one, 1)
            print(f'{r}, {"ganlab doctor" if how == "CLI" else "doctor() in a fresh Python"}: wall {med(one, 0):.2f} s (one line), '
                  f'{med(full, 0):.2f} s (set): {rec / dw:,.0f} records/s beyond the one-line run; '
                  f'CPU {med(one, 1):.2f} s / {med(full, 1):.2f} s: {rec / dc:,.0f} records per CPU-second beyond it')
        secs = [x[2] for x in runs[r, 'library', 'set']]
        if 'plots' in secs[0]:
            pl = [x['plots'] for x in secs]
            print(f"{r}, plots (contact sheet and three figures, matplotlib's import included), doctor's clock: median {statistics.median(pl):.2f} s, "
                  f"max {max(pl):.2f} s; on one line {statistics.median(x[2]['plots'] for x in runs[r, 'library', 'one line']):.2f} s")
        print(f"{r}, decode stage (doctor's clock): median {statistics.median(x['decode'] for x in secs):.2f} s")
    shutil.rmtree(d)


# --- issue 19: hostile input --------------------------------------------------------------------------------------

def _png_line(i, **extra):
    import base64, io
    import numpy as np
    from PIL import Image
    b = io.BytesIO(); Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(b, 'PNG')
    return json.dumps({'id': f'r{i}', 'img_b64': base64.b64encode(b.getvalue()).decode(), **extra}).encode()


def hostile_cases(d:Path):
    "(name, shard files, --out, expected records or None when an error is expected)"
    body = b'\n'.join(_png_line(i) for i in range(60)) + b'\n'
    gz = gzip.compress(body, mtime=0)
    def put(name, data, folder=None):
        f = d/(folder or name.split('.')[0]); f.mkdir(exist_ok=True); p = f/name; p.write_bytes(data); return p
    def flip(pos, bit=0x10): b = bytearray(gz); b[pos] ^= bit; return bytes(b)
    def zero(pos, n): b = bytearray(gz); b[pos:pos + n] = bytes(n); return bytes(b)
    def salvage(data):  # what zlib yields byte by byte: the records expected (whole lines, +1 for the damage or the cut)
        dz, out = zlib.decompressobj(31), []
        for i in range(len(data)):
            try: out.append(dz.decompress(data[i:i + 1]))
            except zlib.error as e:
                got = b''.join(out)
                if 'incorrect' in str(e): return got.count(b'\n') + 1
                return got[:got.rfind(b'\n') + 1].count(b'\n') + 1
        got = b''.join(out)
        return got.count(b'\n') if dz.eof else got[:got.rfind(b'\n') + 1].count(b'\n') + 1
    cases = []
    for k, pos in enumerate((len(gz) // 4, len(gz) // 2, 3 * len(gz) // 4)):
        data = flip(pos); cases.append((f'gzip, bit flipped at byte {pos:,}', put(f'flip{k}.jsonl.gz', data), salvage(data)))
        data = zero(pos, 4); cases.append((f'gzip, 4 bytes zeroed at byte {pos:,}', put(f'zero{k}.jsonl.gz', data), salvage(data)))
    cut = gz[:len(gz) * 2 // 3]; cases.append(('gzip cut at two thirds', put('cut.jsonl.gz', cut), salvage(cut)))
    cases.append(('gzip with trailing junk', put('junk.jsonl.gz', gz + b'junk'), 61))
    m1 = bytearray(gzip.compress(_png_line(1) + b'\n', mtime=0)); m1[-8] ^= 1
    cases.append(('two gzip members, the first with a wrong CRC', put('members.jsonl.gz', bytes(m1) + gzip.compress(_png_line(2) + b'\n', mtime=0)), 3))
    cases.append(('empty .jsonl.gz', put('empty.jsonl.gz', b''), 1))
    cases.append(('gzip data named .jsonl', put('gzplain.jsonl', gz), sum(1 for l in gz.split(b'\n') if l.strip())))
    big = b'\n'.join(_png_line(i) for i in range(280)) + b'\n' + _png_line(280, id='x' * 1_000_000) + b'\n'
    cases.append((f'a 1,000,000-character id ({len(big) / 1e6:.1f} MB shard)', put('longid.jsonl', big), 281))
    c = zlib.compressobj(9, zlib.DEFLATED, 31); nl = c.compress(b'\n' * 10**8) + c.flush()
    cases.append((f'10^8 newlines, gzipped ({len(nl) / 1e3:.0f} KB)', put('newlines.jsonl.gz', nl), 0))
    cases.append(('10^7 blank lines, plain', put('blank.jsonl', b' \n\t\n' * 5_000_000), 0))
    for field in ('id', 'mode', 'exif_rot', 'key'):
        rec = json.loads(_png_line(5))
        if field == 'key': rec['\ud800'] = 1
        else: rec[field] = 'x\ud800'
        cases.append((f'a lone surrogate in {field}', put(f'sur-{field}.jsonl', json.dumps(rec).encode() + b'\n'), 1))
    nonutf = d/'nonutf8'; nonutf.mkdir()
    with open(os.fsdecode(os.fsencode(nonutf) + b'/shard-\xff.jsonl'), 'wb') as f: f.write(_png_line(1) + b'\n')
    cases.append(('a shard file name that is not UTF-8', nonutf, 1))
    cases.append(('a line of 70 MB (over the 64 MB limit)', put('long.jsonl', _png_line(1) + b'\n{"img_b64": "' + b'A' * (70 << 20) + b'"}\n'), 2))
    cases.append(('JSON nested 100,000 deep', put('deep.jsonl', b'[' * 100_000 + b']' * 100_000 + b'\n'), 1))
    ok = put('ok.jsonl', _png_line(1) + b'\n'); (d/'a-file').write_text('x')
    outs = [('--out is an existing file', d/'a-file'), ('--out under a file', d/'a-file'/'sub'), ('--out read-only (/sys)', Path('/sys/ganlab-out-test'))]
    return cases, [(name, ok, out) for name, out in outs]


PEAK = 'import sys\nfrom ganlab.eda import doctor\ndoctor(sys.argv[1], sys.argv[2], workers=2, show_progress=False)'


def hostile():
    import resource
    from ganlab.core import GanlabError
    from ganlab.eda import doctor
    from ganlab.shards import decode_shards, shard_lines, ShardCut
    d = Path(tempfile.mkdtemp(prefix='bench-hostile-'))
    cases, outs = hostile_cases(d)
    tally = {e: dict(cases=0, complete=0, clear=0, tracebacks=0, lost=0) for e in ('shard_lines', 'decode_shards', 'doctor()', 'ganlab doctor')}
    def lost(r, want): return r.records != r.decoded + r.rejected or (want is not None and r.records != want)
    peaks, cli_peaks = [], []
    for name, src, want in cases:
        files = sorted(src.iterdir()) if src.is_dir() else [src]
        t = tally['shard_lines']; t['cases'] += 1
        try:
            for f in files:
                try:
                    for _ in shard_lines(f): pass
                except ShardCut: pass
            t['complete'] += 1
        except Exception as e: t['tracebacks'] += 1; print(f'  shard_lines, {name}: {type(e).__name__}: {e}')
        for entry, fn in (('decode_shards', lambda: decode_shards(src, workers=2, show_progress=False).report),
                          ('doctor()', lambda: doctor(src, d/'out', workers=2, show_progress=False).report)):
            t = tally[entry]; t['cases'] += 1
            try:
                r = fn()
                if lost(r, want): t['lost'] += 1; print(f'  {entry}, {name}: {r.records:,} records, {r.decoded:,} + {r.rejected:,}, expected {want}')
                else: t['complete'] += 1
            except GanlabError as e: t['clear'] += 1
            except Exception as e: t['tracebacks'] += 1; print(f'  {entry}, {name}: {type(e).__name__}: {e}')
            shutil.rmtree(d/'out', ignore_errors=True)
        peaks.append((watch([sys.executable, '-c', PEAK, str(src), str(d/'out')])[3], name)); shutil.rmtree(d/'out', ignore_errors=True)
        t = tally['ganlab doctor']; t['cases'] += 1
        rc, so, se, peak = watch([GANLAB, 'doctor', str(src), '--out', str(d/'out'), '--workers', '2', '--quiet'])
        cli_peaks.append((peak, name))
        if 'Traceback' in se or rc not in (0, 2): t['tracebacks'] += 1; print(f'  ganlab doctor, {name}: status {rc}: {se[-600:]}')
        elif rc == 2: t['clear'] += 1
        else:
            rep = json.loads((d/'out'/'report.json').read_text())['counts']
            if rep['records'] != rep['decoded'] + rep['rejected'] or (want is not None and rep['records'] != want): t['lost'] += 1; print(f'  ganlab doctor, {name}: {rep}')
            else: t['complete'] += 1
        shutil.rmtree(d/'out', ignore_errors=True)
    for name, src, out in outs:
        for entry in ('doctor()', 'ganlab doctor'):
            t = tally[entry]; t['cases'] += 1
            if entry == 'doctor()':
                try: doctor(src, out, show_progress=False); t['lost'] += 1; print(f'  doctor(), {name}: no error')
                except GanlabError as e: t['clear'] += 1; print(f'  doctor(), {name}: GanlabError: {e}')
                except Exception as e: t['tracebacks'] += 1; print(f'  doctor(), {name}: {type(e).__name__}: {e}')
            else:
                p = subprocess.run([GANLAB, 'doctor', str(src), '--out', str(out), '--quiet'], env=ENV, capture_output=True, text=True)
                if p.returncode == 2 and 'Traceback' not in p.stderr and len(p.stderr.strip().splitlines()) == 1: t['clear'] += 1
                else: t['tracebacks'] += 1; print(f'  ganlab doctor, {name}: status {p.returncode}: {p.stderr[-600:]}')
    print(f"\n{'entry point':<15} {'cases':>6} {'complete':>9} {'clear errors':>13} {'tracebacks':>11} {'silent losses':>14}")
    for e, t in tally.items(): print(f"{e:<15} {t['cases']:>6} {t['complete']:>9} {t['clear']:>13} {t['tracebacks']:>11} {t['lost']:>14}")
    peaks.sort(reverse=True); cli_peaks.sort(reverse=True)
    print('\npeak memory (process tree, sampled every 5 ms) of doctor(..., workers=2) in a fresh Python, largest first:')
    for peak, name in peaks[:5]: print(f'  {peak / 2**20:6.0f} MiB  {name}')
    print(f'and of the `ganlab doctor --workers 2` command: {cli_peaks[-1][0] / 2**20:.0f} to {cli_peaks[0][0] / 2**20:.0f} MiB '
          f'(largest: {cli_peaks[0][1]})')
    shutil.rmtree(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--synthetic', type=int, default=0, help='also bench N synthetic records (0: skip)')
    ap.add_argument('--issue18', action='store_true', help="issue 18's figure: the whole command on CIFAR-10 noisy shards, beyond a one-line run")
    ap.add_argument('--images', type=int, default=20000, help='CIFAR-10 training images for --issue18')
    ap.add_argument('--compare', default=None, help='with --issue18: another checkout (a folder holding ganlab/) to time, interleaved')
    ap.add_argument('--hostile', action='store_true', help="issue 19's hostile inputs through every entry point")
    a = ap.parse_args()
    if a.repeat < 1: ap.error('--repeat must be at least 1')
    print(f'machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, '
          f'{psutil.virtual_memory().total / 2**30:.0f} GiB; Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}')
    if a.issue18: issue18(a.images, a.repeat, a.compare)
    elif a.hostile: hostile()
    else:
        from ganlab.core import shared_data
        src = shared_data('noisy-shards')
        if src is None: print('../shared/data/noisy-shards is absent: skipping the real shards')
        else: bench('real noisy shards', sorted(map(str, src.glob('shard-*'))), a.workers, a.repeat)
        if a.synthetic:
            from ganlab.data import draw_digits
            from ganlab.noisy import write_noisy_shards
            d = Path(tempfile.mkdtemp(prefix='bench-shards-'))
            t = time.perf_counter()
            write_noisy_shards(draw_digits(a.synthetic, seed=1, show_progress=False)[0], d, seed=1, n_shards=8, show_progress=False)
            print(f'\n(wrote {a.synthetic:,} synthetic records in {time.perf_counter() - t:.0f} s)')
            bench(f'{a.synthetic:,} synthetic digit records', [str(d)], a.workers, a.repeat)
            shutil.rmtree(d)
    print(f'load average at the end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__': main()
