#!/usr/bin/env python3
"""`ganlab demo` as a new user runs it, timed and scored, on this CPU and on emulated CPU kinds.

    python bench/demo.py [--kinds native,avx2] [--seeds 0] [--busy] [--out demo-bench]

Each run is `ganlab demo --out OUT/KIND-SEED --seed SEED` in a fresh process, timed from the outside (wall seconds,
Python's start-up included). `avx2` emulates a CPU without AVX-512, such as the AMD EPYC of issue 25, on a machine that
has it: PyTorch's own kernels are held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`) and so is oneDNN, which runs the
convolutions (`ONEDNN_MAX_CPU_ISA=AVX2`). It does not emulate an older core's clock or caches, so a real CPU of that
kind may be slower still. `--busy` keeps one core busy with a spinning process during the demo, as another program
(or a noisy neighbour on a shared VM) would.

The generated digits are then read by `bench/demo_digits.py`'s classifier (trained once, on digits drawn with another
seed): the share read as a digit with p > 0.9, the share seen as no digit, the class entropy (1: all ten equally
often) and how many of the ten digits occur among those read.
"""
import argparse, os, re, subprocess, sys, time, multiprocessing as mp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'bench'))
KINDS = {'native': {}, 'avx2': {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2'}}


def spin(stop):
    "Keep one core busy until `stop` is set"
    while not stop.is_set(): sum(range(10_000))


def cpu_model() -> str:
    "The CPU's model name, as lscpu gives it"
    try: out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    except OSError: return 'unknown CPU'
    m = re.search(r'^Model name:\s*(.+)$', out, re.M)
    flags = 'AVX-512' if 'avx512f' in out else 'no AVX-512'
    return f'{m[1].strip() if m else "unknown CPU"} ({flags}, {os.cpu_count()} CPUs)'


def run_demo(out:Path, seed:int, env:dict, busy:bool) -> dict:
    "Run `ganlab demo` in a fresh process; its wall time and what it said"
    stop = mp.Event()
    spinner = mp.Process(target=spin, args=(stop,), daemon=True) if busy else None
    if spinner: spinner.start()
    t = time.perf_counter()
    r = subprocess.run(['ganlab', 'demo', '--out', str(out), '--seed', str(seed)], capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t
    if spinner: stop.set(); spinner.join()
    if r.returncode: sys.exit(f'ganlab demo failed:\n{r.stderr[-2000:]}')
    steps = re.search(r'trained ([\d,]+) steps at ([\d,]+) images/s', r.stdout)
    threads = re.search(r', on (\d+) CPU thread', r.stdout)
    return dict(wall=wall, steps=int(steps[1].replace(',', '')), ips=int(steps[2].replace(',', '')), threads=threads[1] if threads else '?')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--kinds', default='native,avx2', help='CPU kinds to run as: native, avx2 (default: both)')
    ap.add_argument('--seeds', default='0', help='demo seeds, comma-separated (default: 0)')
    ap.add_argument('--busy', action='store_true', help='keep one core busy during each demo')
    ap.add_argument('--out', default='demo-bench', help='where the demos write (default: demo-bench)')
    a = ap.parse_args(argv)
    import torch, demo_digits as dd
    from ganlab.data import load_images
    out = Path(a.out)
    print(f'CPU: {cpu_model()}; torch {torch.__version__}' + ('; one core kept busy' if a.busy else ''))
    t = time.perf_counter()
    net, acc = dd.train_classifier(12000, 6, 123)
    print(f'classifier: held-out accuracy {acc:.1%} ({time.perf_counter() - t:.0f} s)')
    print('| CPU kind | seed | demo wall s | threads | steps | img/s | read (p > 0.9) | no digit | entropy | digits present |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for kind in a.kinds.split(','):
        for seed in map(int, a.seeds.split(',')):
            d = out/f'{kind}-{seed}'
            r = run_demo(d, seed, KINDS[kind], a.busy)
            q = dd.read(net, load_images(d/'generated', 32, show_progress=False).images, 0.9)
            present = sum(v > 0 for v in q['classes'])
            print(f"| {kind} | {seed} | {r['wall']:.1f} | {r['threads']} | {r['steps']:,} | {r['ips']:,} | {q['confident']:.1%} | "
                  f"{q['no_digit']:.1%} | {q['entropy']:.3f} | {present} |", flush=True)


if __name__ == '__main__': main()
