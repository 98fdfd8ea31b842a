#!/usr/bin/env python3
"""Decode throughput and peak memory of `ganlab doctor`.

    python bench/decode.py [--repeat 5] [--workers 2] [--synthetic 20000]

Runs `ganlab doctor <shards> --out <tmp> --workers N --quiet` as a fresh process, the way a user does, `--repeat`
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
"""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parent.parent
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')


def run_doctor(shards, workers, watch_memory=False):
    "One doctor run in a fresh process: (records, decode seconds, wall seconds, peak bytes or None)"
    out = tempfile.mkdtemp(prefix='bench-doctor-')
    cmd = [GANLAB, 'doctor', *shards, '--out', out, '--workers', str(workers), '--quiet']
    t0, peak = time.perf_counter(), None
    if watch_memory:  # sampling costs CPU that the workers would otherwise use: only in runs that are not timed
        p, peak = psutil.Popen(cmd), 0
        while p.poll() is None:
            try: peak = max(peak, sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
            except psutil.Error: pass
            time.sleep(0.005)
        rc = p.returncode
    else: rc = subprocess.run(cmd).returncode
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
    from ganlab.records import iter_decode, register_formats
    register_formats(); best = None
    for _ in range(3):
        c = time.process_time(); n = sum(1 for _ in iter_decode(shards, workers=1, show_progress=False))
        best = min(best or 1e9, time.process_time() - c)
    return n / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--synthetic', type=int, default=0, help='also bench N synthetic records (0: skip)')
    a = ap.parse_args()
    if a.repeat < 1: ap.error('--repeat must be at least 1')
    print(f'machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, '
          f'{psutil.virtual_memory().total / 2**30:.0f} GiB; Python {platform.python_version()}')
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


if __name__ == '__main__': main()
