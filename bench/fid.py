#!/usr/bin/env python3
"""Feature-extraction throughput: ganlab vs torch-fidelity vs pytorch-fid, same images, weights and batch size.

    python bench/fid.py [--n 2000] [--batch 50] [--device cpu] [--repeat 1] [--weights PATH]

Writes the first N CIFAR-10 test images of ../shared/data/cifar10-jpg.zip as PNG files into a temporary folder, then
runs each tool on that folder as a fresh process, the way a user runs it, and times the whole process (Python
start-up, imports, loading the weights, decoding the PNGs, the network, the statistics):

- ganlab:         ganlab stats DIR --out OUT.npz --weights W --batch B --device D --quiet
- pytorch-fid:    python -m pytorch_fid --save-stats DIR OUT.npz --batch-size B --device D   (weights from a temporary
                  torch hub cache under the name pytorch-fid expects; its default DataLoader workers)
- torch-fidelity: torch_fidelity.calculate_metrics(input1=DIR, isc=True, batch_size=B, cuda=D=='cuda',
                  feature_extractor_weights_path=W, cache=False) -- one pass of the same network over the images
                  (the Inception Score needs nothing else; FID would need a second input)

Weights: the real FID file when this machine has it, else a seeded random state dict in its exact layout (the
network's cost does not depend on the values). Prints one line per run and a table of images/s; `--in-process`
adds each network's steady throughput alone (no start-up, no image decoding), to show where the difference comes from.
`--repeat 0 --in-process` runs only that.
"""
import argparse, io, os, platform, shutil, statistics, subprocess, sys, tempfile, time, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')


def write_pngs(out:Path, n:int):
    "The first n CIFAR-10 test images (sorted names) as PNGs"
    from PIL import Image
    sys.path.insert(0, str(ROOT))
    from ganlab.core import shared_data
    z = shared_data('cifar10-jpg.zip')
    if z is None: sys.exit('bench/fid.py needs ../shared/data/cifar10-jpg.zip (or GANLAB_SHARED_DATA)')
    with zipfile.ZipFile(z) as zf:
        names = sorted(m for m in zf.namelist() if m.startswith('test/') and m.endswith('.jpg'))[:n]
        for i, m in enumerate(names): Image.open(io.BytesIO(zf.read(m))).convert('RGB').save(out/f'{i:05d}.png')
    return len(names)


def weights_file(tmp:Path, given):
    from ganlab.core import GanlabError, find_weights
    from ganlab.metrics import FID_WEIGHTS, WEIGHTS_ENV, random_fid_weights
    if given: return Path(given), 'given'
    try: return find_weights(FID_WEIGHTS, env=WEIGHTS_ENV, download=False), 'real'
    except GanlabError: pass
    random_fid_weights(tmp/'random-fid.pth', seed=0)
    return tmp/'random-fid.pth', 'random, in the FID layout'


FIDELITY = '''
import sys, torch_fidelity
m = torch_fidelity.calculate_metrics(input1=sys.argv[1], isc=True, cuda=sys.argv[4] == 'cuda', batch_size=int(sys.argv[3]),
        feature_extractor_weights_path=sys.argv[2], cache=False, verbose=False)
'''


def commands(d, w, batch, device, out):
    return {
        'ganlab': [GANLAB, 'stats', d, '--out', out/'ganlab.npz', '--weights', w, '--batch', batch, '--device', device, '--quiet'],
        'pytorch-fid': [sys.executable, '-m', 'pytorch_fid', '--save-stats', d, out/'pytorch-fid.npz', '--batch-size', batch, '--device', device],
        'torch-fidelity': [sys.executable, '-c', FIDELITY, d, w, batch, device],
    }


def in_process(w, batch, device, rounds=3, profile=False):
    "Steady-state network throughput of each implementation on one batch of CIFAR-10-sized images, in this process"
    import numpy as np, torch
    from ganlab.metrics import Extractor
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
    os.environ['TORCH_HOME'] = str(Path(w).parent.parent.parent)  # the temporary hub cache holding pytorch-fid's file name
    from pytorch_fid.inception import InceptionV3
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    pf = InceptionV3([3]).eval().to(device)
    tf = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=str(w)).to(device)
    fns = {'ganlab (fused, channels-last)': Extractor(weights=w, device=device, batch=batch),
           'ganlab fused=False (torchvision modules, channels-last)': Extractor(weights=w, device=device, batch=batch, fused=False),
           'pytorch-fid network': lambda _: pf(xt.float() / 255), 'torch-fidelity network': lambda _: tf(xt)}
    print(f'\nin-process, one batch of {batch}, best of {rounds} after a warm-up:')
    for name, f in fns.items():
        with torch.inference_mode():
            f(x); ts = []
            for _ in range(rounds):
                if device.startswith('cuda'): torch.cuda.synchronize()
                t0 = time.perf_counter(); f(x)
                if device.startswith('cuda'): torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
        print(f'  {name:55s} {batch / min(ts):7.1f} images/s')
    if profile:  # where ganlab's time goes, by operator
        from torch.profiler import profile as prof
        with torch.inference_mode(), prof() as p: fns['ganlab (fused, channels-last)'](x)
        print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=6))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=2000, help='images (default: 2000)')
    ap.add_argument('--batch', type=int, default=50, help='batch size for every tool (default: 50)')
    ap.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    ap.add_argument('--repeat', type=int, default=1, help='runs per tool, interleaved (default: 1)')
    ap.add_argument('--weights', default=None, help='FID weights file (default: the real one if present, else random)')
    ap.add_argument('--only', nargs='*', default=None, help='run only these tools')
    ap.add_argument('--in-process', action='store_true', help='also time each network alone, in this process')
    ap.add_argument('--profile', action='store_true', help="with --in-process: ganlab's time by operator (torch.profiler)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='bench-fid-'))
    try:
        (tmp/'images').mkdir(); (tmp/'out').mkdir()
        n = write_pngs(tmp/'images', a.n)
        w, kind = weights_file(tmp, a.weights)
        home = tmp/'torch-home'; (home/'hub'/'checkpoints').mkdir(parents=True)
        shutil.copy(w, home/'hub'/'checkpoints'/'pt_inception-2015-12-05-6726825d.pth')
        env = {**os.environ, 'TORCH_HOME': str(home), 'PYTHONWARNINGS': 'ignore'}
        import torch
        print(f'{n} CIFAR-10 test images as PNG, batch {a.batch}, device {a.device}, weights: {kind}')
        print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}'
              + (f', {torch.cuda.get_device_name()}' if a.device.startswith('cuda') else ''))
        cmds = commands(tmp/'images', w, a.batch, a.device, tmp/'out')
        if a.only: cmds = {k: v for k, v in cmds.items() if k in a.only}
        times = {k: [] for k in cmds}
        for r in range(a.repeat):
            for name, cmd in cmds.items():
                for f in (tmp/'out').iterdir(): f.unlink()  # pytorch-fid refuses to overwrite its output
                t0 = time.perf_counter()
                p = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if p.returncode: sys.exit(f'{name} failed ({p.returncode}):\n{p.stderr[-2000:]}')
                times[name].append(dt)
                print(f'run {r + 1} {name:15s} {dt:7.1f} s  {n / dt:7.1f} images/s', flush=True)
        if a.repeat:
            med = {k: statistics.median(v) for k, v in times.items()}
            peers = [k for k in med if k != 'ganlab']
            fastest = min(peers, key=med.get) if peers else None
            print(f'\n| tool | whole process, median of {a.repeat} | images/s | ganlab speed-up |\n| --- | ---: | ---: | ---: |')
            for k, v in med.items():
                up = '' if k == 'ganlab' or 'ganlab' not in med else f"{v / med['ganlab']:.2f}x"
                print(f'| {k} | {v:.1f} s | {n / v:.1f} | {up} |')
            if fastest and 'ganlab' in med:
                print(f'\nganlab vs the faster peer ({fastest}): {med[fastest] / med["ganlab"]:.2f}x')
        if a.in_process: in_process(home/'hub'/'checkpoints'/'pt_inception-2015-12-05-6726825d.pth', a.batch, a.device, profile=a.profile)
    finally: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
