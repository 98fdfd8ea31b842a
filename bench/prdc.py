#!/usr/bin/env python3
"""Time and peak memory of `ganlab.scores.prdc` on N x N random features (issue 24: "streamed so 50,000 x 50,000 fits
in memory on a CPU"), against the reference `prdc.compute_prdc` where its whole distance matrices fit.

    python bench/prdc.py [--n 50000] [--dims 2048] [--reference-up-to 5000]

Each size runs in a fresh process: the peak resident memory (sampled by psutil every 20 ms) is that process's, and
"added" is how far the computation raised the process's peak above what its imports and the features already took.
ganlab's blocked computation, and for sizes up to `--reference-up-to` the reference, which holds three N x N float64
distance matrices at once. Prints a Markdown table: size, seconds, peak resident memory, and the largest difference
of the four numbers from the reference where it ran.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parent.parent

RUN = r'''
import json, resource, sys, time
import numpy as np
n, d, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if which == 'ganlab': from ganlab.scores import prdc
else: from prdc import compute_prdc
g = np.random.default_rng(0)
real = g.normal(size=(n, d)).astype(np.float32)
fake = (g.normal(size=(n, d)) * 1.1 + 0.05).astype(np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # imports and the features: not the computation's
t = time.perf_counter()
r = prdc(real, fake, 5) if which == 'ganlab' else compute_prdc(real.astype(np.float64), fake.astype(np.float64), 5)
seconds, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({'seconds': seconds, 'added': max(0, after - before), **{k: float(r[k]) for k in ('precision', 'recall', 'density', 'coverage')}}))
'''


def run(n:int, d:int, which:str) -> tuple:
    "(result, peak resident bytes) of one computation in a process of its own"
    p = subprocess.Popen([sys.executable, '-c', RUN, str(n), str(d), which], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, 'PYTHONPATH': str(ROOT)})
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try: peak = max(peak, proc.memory_info().rss)
        except psutil.Error: break
        time.sleep(0.02)
    out = p.communicate()[0]
    return (json.loads(out.strip().splitlines()[-1]) if p.returncode == 0 else None), peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n', type=int, nargs='*', default=[2000, 5000, 20000, 50000], help='images per side')
    ap.add_argument('--dims', type=int, default=2048, help='feature dimensions (Inception: 2048)')
    ap.add_argument('--reference-up-to', type=int, default=5000, help='run the reference only up to this size')
    a = ap.parse_args()
    print(f'machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; features {a.dims}-d float32, k = 5\n')
    print('| images per side | ganlab: seconds | ganlab: peak (added) | reference: seconds | reference: peak (added) | largest difference |')
    print('| ---: | ---: | ---: | ---: | ---: | ---: |')
    for n in a.n:
        ours, mo = run(n, a.dims, 'ganlab')
        ref, mr = run(n, a.dims, 'reference') if n <= a.reference_up_to else (None, 0)
        diff = max(abs(ours[k] - ref[k]) for k in ('precision', 'recall', 'density', 'coverage')) if ours and ref else None
        cell = lambda r, m: (f"{r['seconds']:,.1f}", f"{m / 2**20:,.0f} MB ({r['added'] / 2**20:,.0f} MB)") if r else ('', '')
        print(f'| {n:,} | {" | ".join(cell(ours, mo))} | {" | ".join(cell(ref, mr))} | {"" if diff is None else f"{diff:.1e}"} |',
              flush=True)


if __name__ == '__main__': main()
