#!/usr/bin/env python3
"""Candidate settings for `ganlab demo`'s DCGAN, each trained for the same number of steps over several seeds, and scored.

    ganlab demo --out demo0 --epochs 0          # the decoded digits, once
    python bench/demo_settings.py demo0 --steps 1584 --seeds 0,1,2,3 base lr_g=4e-4 "d_dropout=0.3" ...

Each candidate is `name` (the demo's settings) or `KEY=VALUE[,KEY=VALUE...]` changing the demo's settings
(`ganlab.demo.DEMO_TRAIN`). A run trains one thread (two runs fit the two cores side by side) for `--steps` steps on
DEMO/doctor/decoded.npz, then its EMA generator draws the demo's 1,000 digits (seed 0's noise), which
`bench/demo_digits.py`'s classifier reads (trained once per call). Equal steps, not equal time: quality per step is
what a slower CPU keeps; how many steps a CPU trains in the demo's budget is `bench/demo.py`'s job.
"""
import argparse, sys, time
from pathlib import Path
import numpy as np, torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'bench'))


def value(text:str):
    "A setting's value from the command line: int, float or text"
    for tp in (int, float):
        try: return tp(text)
        except ValueError: pass
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('demo', help='a folder `ganlab demo --out` wrote (its doctor/decoded.npz is trained on)')
    ap.add_argument('candidates', nargs='+', help="'base' or KEY=VALUE[,KEY=VALUE...] over the demo's settings")
    ap.add_argument('--steps', type=int, default=1584, help='training steps per run (default: 1584, 16 epochs of the demo)')
    ap.add_argument('--seeds', default='0,1', help='training seeds, comma-separated (default: 0,1)')
    ap.add_argument('--out', default='demo-settings', help='where the runs go (default: demo-settings)')
    a = ap.parse_args(argv)
    import demo_digits as dd
    from ganlab.demo import DEMO_TRAIN
    from ganlab.train import train
    from ganlab.generate import load_generator, iter_generated
    torch.set_num_threads(1)
    net, acc = dd.train_classifier(12000, 6, 123)
    print(f'classifier: held-out accuracy {acc:.1%}; {a.steps:,} steps per run, one thread')
    print('| candidate | seed | read (p > 0.9) | no digit | entropy | train s |')
    print('|---|---:|---:|---:|---:|---:|')
    for cand in a.candidates:
        kw = {} if cand == 'base' else dict((k, value(v)) for k, v in (kv.split('=', 1) for kv in cand.split(',')))
        reads = []
        for seed in map(int, a.seeds.split(',')):
            out = Path(a.out)/f"{cand.replace('=', '').replace(',', '_')}-{seed}"
            t = time.perf_counter()
            train('dcgan', data=Path(a.demo)/'doctor'/'decoded.npz', out=out, overwrite=True, quiet=True, seed=seed,
                  until_step=a.steps, **{**DEMO_TRAIN, 'epochs': 10_000, 'sample_every': 10_000, **kw})
            secs = time.perf_counter() - t
            g, _ = load_generator(out/'checkpoints'/'last.pt', device='cpu')
            r = dd.read(net, np.stack([img for _, img in iter_generated(g, 1000, seed=0)]), 0.9)
            reads.append(r['confident'])
            print(f"| {cand} | {seed} | {r['confident']:.1%} | {r['no_digit']:.1%} | {r['entropy']:.3f} | {secs:.0f} |", flush=True)
        print(f'| {cand} | mean | {np.mean(reads):.1%} | | | |', flush=True)


if __name__ == '__main__': main()
