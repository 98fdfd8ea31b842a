#!/usr/bin/env python3
"""Peak memory of `ganlab fid` / `ganlab stats` on small hostile inputs (issue 19), each in a fresh process.

    python bench/metrics_memory.py [--root PATH] [--only NAME ...]

Builds each input in a temporary folder, runs the `ganlab` command on it (CPU, seeded random weights in the FID
layout), samples the process's resident memory with psutil every 10 ms, and prints one row per input: the input's
size on disk, the peak resident memory, the exit status and the first line of stderr. `--root` runs another checkout
of ganlab (e.g. ../main, a checkout beside this one, to see the memory before a change).
"""
import argparse, io, os, subprocess, sys, tempfile, time, zipfile
from pathlib import Path
import numpy as np, psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def png(a) -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, 'PNG', optimize=True); return b.getvalue()


def inputs(d:Path) -> dict:
    "name -> (command arguments after `ganlab`, the input file)"
    small = d/'small'; small.mkdir()
    for i, a in enumerate(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)): Image.fromarray(a).save(small/f'{i}.png')
    flat = np.zeros((4096, 4096), np.uint8)
    with zipfile.ZipFile(d/'twelve-4096.zip', 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(12): zf.writestr(f'{i:02d}.png', png(flat + i))
    np.savez_compressed(d/'big-rows.npz', images=np.zeros((12, 4096, 4096, 3), np.uint8))
    np.savez_compressed(d/'feature-bomb.npz', mu=np.zeros(2048), sigma=np.eye(2048), features=np.zeros((100_000, 2048), np.float32))
    b = io.BytesIO(); np.lib.format.write_array_header_1_0(b, {'descr': '<f8', 'fortran_order': False, 'shape': (200_000, 200_000)})
    with zipfile.ZipFile(d/'huge-header.npz', 'w') as zf:
        zf.writestr('mu.npy', b.getvalue() + b'\0' * 64); zf.writestr('sigma.npy', b.getvalue() + b'\0' * 64)
    return {'4 small PNGs (baseline)': (['fid', small, small], small),
            'zip of twelve 4096x4096 PNGs': (['fid', d/'twelve-4096.zip', small], d/'twelve-4096.zip'),
            'same zip, `stats`': (['stats', d/'twelve-4096.zip', '--out', d/'s.npz'], d/'twelve-4096.zip'),
            'compressed .npz of twelve 4096x4096 images': (['fid', d/'big-rows.npz', small], d/'big-rows.npz'),
            'statistics .npz with 800 MB of zero features': (['fid', small, d/'feature-bomb.npz'], d/'feature-bomb.npz'),
            'statistics .npz whose header says 200,000 x 200,000': (['fid', small, d/'huge-header.npz'], d/'huge-header.npz')}


def peak_rss(cmd, env) -> tuple:
    p = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        try: peak = max(peak, proc.memory_info().rss)
        except psutil.Error: break
        time.sleep(0.01)
    out, err = p.communicate()
    return peak, p.returncode, (err.strip().splitlines() or [''])[-1 if p.returncode not in (0, 2) else 0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--root', default=str(ROOT), help='the ganlab checkout to run (default: this one)')
    ap.add_argument('--only', nargs='*', default=None, help='run only inputs whose name contains one of these')
    a = ap.parse_args()
    sys.path.insert(0, a.root)
    from ganlab.metrics import random_fid_weights
    with tempfile.TemporaryDirectory(prefix='bench-mem-') as t:
        d = Path(t); w = d/'w.pth'; random_fid_weights(w)
        env = {**os.environ, 'PYTHONPATH': a.root, 'PYTHONWARNINGS': 'ignore'}
        ganlab = Path(sys.executable).parent/'ganlab'
        print(f'ganlab from {a.root}; machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; load average {os.getloadavg()[0]:.1f}\n')
        print('| input | size on disk | peak resident memory | exit | stderr (first line) |\n| --- | ---: | ---: | ---: | --- |')
        for name, (args, f) in inputs(d).items():
            if a.only and not any(o in name for o in a.only): continue
            size = sum(q.stat().st_size for q in f.rglob('*')) if f.is_dir() else f.stat().st_size
            peak, code, line = peak_rss([ganlab, *args, '--weights', w, '--device', 'cpu', '--quiet'], env)
            print(f'| {name} | {size / 1024:,.0f} KB | {peak / 2**20:,.0f} MB | {code} | {line[:150]} |', flush=True)


if __name__ == '__main__': main()
