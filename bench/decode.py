#!/usr/bin/env python3
"""Decode throughput and peak memory of `ganlab doctor`.

    python bench/decode.py [--repeat 5] [--workers 2] [--synthetic 20000]

Runs `ganlab doctor <shards> --out <tmp> --workers N --quiet` as a fresh process, the way a user does, `--repeat`
times on `../shared/data/noisy-shards/shard-*` (2,006 records) and, with `--synthetic N`, on N synthetic digit
records written as noisy shards (a larger set, where start-up costs fade). For each run it prints:
- decode records/s: records / the decode stage's seconds (doctor's own clock in report.json: reading, decoding in
  the workers, writing decoded.npz), the figure the target is stated in;
- whole-process records/s: records / wall time of the entire command, Python start-up, imports and plots included;
- peak memory: the largest sum of resident memory of the process and its workers, sampled every 5 ms (an upper
  bound: pages the forked workers share with their parent are counted twice).
"""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parent.parent
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')


def run_doctor(shards, workers):
    "One doctor run in a fresh process: (records, decode seconds, wall seconds, peak bytes)"
    out = tempfile.mkdtemp(prefix='bench-doctor-')
    t0 = time.perf_counter()
    p = psutil.Popen([GANLAB, 'doctor', *shards, '--out', out, '--workers', str(workers), '--quiet'])
    peak = 0
    while p.poll() is None:
        try: rss = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
        except psutil.Error: rss = 0
        peak = max(peak, rss); time.sleep(0.005)
    wall = time.perf_counter() - t0
    if p.returncode: sys.exit(f'ganlab doctor failed with status {p.returncode}')
    rep = json.loads((Path(out)/'report.json').read_text())
    shutil.rmtree(out)
    return rep['counts']['records'], rep['seconds'], wall, peak


def bench(name, shards, workers, repeat):
    print(f'\n{name}: ganlab doctor {" ".join(map(str, shards))} --workers {workers}')
    print(f"{'run':>4} {'records':>8} {'decode s':>9} {'decode rec/s':>13} {'wall s':>7} {'whole rec/s':>12} {'peak MiB':>9}")
    rows = []
    for i in range(repeat):
        n, dec, wall, peak = run_doctor(shards, workers)
        rows.append((n, dec, wall, peak))
        print(f'{i + 1:>4} {n:>8,} {dec:>9.3f} {n / dec:>13,.0f} {wall:>7.2f} {n / wall:>12,.0f} {peak / 2**20:>9.0f}')
    n = rows[0][0]
    med = lambda k: statistics.median(r[k] for r in rows)
    print(f'median: decode {n / med(1):,.0f} records/s, whole process {n / med(2):,.0f} records/s ({med(2):.2f} s), '
          f'peak memory {max(r[3] for r in rows) / 2**20:.0f} MiB (max of runs)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--synthetic', type=int, default=0, help='also bench N synthetic records (0: skip)')
    a = ap.parse_args()
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
