#!/usr/bin/env python3
"""FID speed: ganlab vs torch-fidelity vs pytorch-fid, whole process, same images, weights and batch size.

    python bench/fid.py --mode fid --n 200 --repeat 5 --in-process   # `ganlab fid A B`, 200 vs 200 images, then each network alone
    python bench/fid.py --mode stats --n 2000 --repeat 3        # `ganlab stats DIR`, 2,000 images
    python bench/fid.py --mode network                          # each network alone, in this process
    python bench/fid.py --mode fd                               # the Frechet distance alone (ganlab, pytorch-fid, torch-fidelity)
    python bench/fid.py --mode phases --n 200                   # where a fresh `fid` process spends its time
    python bench/fid.py --mode stats --n 10000 --device cuda --check   # on a GPU: images/s over 10,000 images

Images: CIFAR-10 JPEGs from ../shared/data/cifar10-jpg.zip, extracted as they are into temporary folders (N evenly
spaced test images for side A, N train images for side B). Weights: the real FID file when this machine has it,
else a seeded random state dict in its exact layout (the cost does not depend on the values), given to every tool.

Each tool runs as a fresh process, as a user types it, the tools interleaved in every repeat (in reverse order every
other repeat):

- `fid`:   ganlab fid A B --json OUT    |  python -m pytorch_fid A B   |  fidelity --fid --input1 A --input2 B
- `stats`: ganlab stats A --out OUT.npz  |  python -m pytorch_fid --save-stats A OUT.npz  |  fidelity --isc --input1 A
           (torch-fidelity has no statistics file; `--isc` is one pass of the same network over the images)

plus `ganlab-lib`: the same library calls as the `ganlab` command in `python -c` (`compare` + `write_metrics_json`,
or `write_stats`): what the command costs once its start-up imports only what the subcommand needs.

Every tool gets `--batch` (default 50) and the device. The speed-up is the median over repeats of (faster peer's time
/ ganlab's time) within the repeat, so drift between repeats on a shared machine cancels. `fid` mode also checks
that the results are equal: ganlab's FID against torch-fidelity's (same TF1 resize), and `ganlab fid --resize torch`
(one extra run, not timed) against pytorch-fid's. `--check` in `stats` mode compares `ganlab stats --resize torch`
with pytorch-fid's mu and sigma the same way.
"""
import argparse, json, os, platform, re, shutil, statistics, subprocess, sys, tempfile, time, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
FIDELITY = shutil.which('fidelity') or str(Path(sys.executable).parent/'fidelity')
HUB_NAME = 'pt_inception-2015-12-05-6726825d.pth'


def extract(out:Path, split:str, n:int) -> int:
    "N evenly spaced CIFAR-10 images of `split` (all classes), as the JPEG files they are"
    sys.path.insert(0, str(ROOT))
    from ganlab.core import shared_data
    z = shared_data('cifar10-jpg.zip')
    if z is None: sys.exit('bench/fid.py needs ../shared/data/cifar10-jpg.zip (or GANLAB_SHARED_DATA)')
    out.mkdir(parents=True)
    with zipfile.ZipFile(z) as zf:
        names = sorted(m for m in zf.namelist() if m.startswith(f'{split}/') and m.endswith('.jpg'))
        if n > len(names): sys.exit(f'{split} has {len(names)} images, fewer than {n}')
        for i in range(n): (out/f'{i:05d}.jpg').write_bytes(zf.read(names[i * len(names) // n]))
    return n


def weights_file(tmp:Path, given):
    sys.path.insert(0, str(ROOT))
    from ganlab.core import GanlabError, find_weights
    from ganlab.metrics import FID_WEIGHTS, WEIGHTS_ENV, random_fid_weights
    if given: return Path(given), 'given'
    try: return find_weights(FID_WEIGHTS, env=WEIGHTS_ENV, download=False), 'real'
    except GanlabError: pass
    random_fid_weights(tmp/'random-fid.pth', seed=0)
    return tmp/'random-fid.pth', 'random, in the FID layout'


LIB_FID = '''
import sys
from ganlab.metrics import compare, write_metrics_json
a, b, w, dev, batch, out = sys.argv[1:7]
write_metrics_json(compare(a, b, weights=w, device=dev, batch=int(batch), quiet=True), out)
'''
LIB_STATS = '''
import sys
from ganlab.metrics import write_stats
d, w, dev, batch, out = sys.argv[1:6]
write_stats(d, out, weights=w, device=dev, batch=int(batch), quiet=True)
'''


def commands(mode, a, b, w, batch, device, out):
    "The command of each tool"
    fdev = ['--gpu', device.split(':')[1] if ':' in device else '0'] if device.startswith('cuda') else ['--cpu']
    fid = [FIDELITY, *fdev, '--batch-size', batch, '--feature-extractor-weights-path', w, '--no-cache', '--silent', '--json']
    if mode == 'fid': return {
        'ganlab': [GANLAB, 'fid', a, b, '--weights', w, '--batch', batch, '--device', device, '--quiet', '--json', out/'ganlab.json'],
        'ganlab-lib': [sys.executable, '-c', LIB_FID, a, b, w, device, batch, out/'lib.json'],
        'pytorch-fid': [sys.executable, '-m', 'pytorch_fid', a, b, '--batch-size', batch, '--device', device],
        'torch-fidelity': [*fid, '--fid', '--input1', a, '--input2', b]}
    return {
        'ganlab': [GANLAB, 'stats', a, '--out', out/'ganlab.npz', '--weights', w, '--batch', batch, '--device', device, '--quiet'],
        'ganlab-lib': [sys.executable, '-c', LIB_STATS, a, w, device, batch, out/'lib.npz'],
        'pytorch-fid': [sys.executable, '-m', 'pytorch_fid', '--save-stats', a, out/'pytorch-fid.npz', '--batch-size', batch, '--device', device],
        'torch-fidelity': [*fid, '--isc', '--input1', a]}


def run(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode: sys.exit(f'{cmd[:3]} failed ({p.returncode}):\n{p.stderr[-3000:]}')
    return dt, p.stdout


def fid_of(name, stdout, out):
    "The FID a tool printed or wrote"
    if name.startswith('ganlab'): return json.loads((out/('ganlab.json' if name == 'ganlab' else 'lib.json')).read_text())['fid']
    if name == 'torch-fidelity': return json.loads(stdout)['frechet_inception_distance']  # `--json`: all digits
    m = re.search(r'FID:\s*([-0-9.eE+]+)', stdout)
    return float(m.group(1)) if m else None


def rel(a, b): return abs(a - b) / max(abs(b), 1e-12)


def whole_process(a):
    tmp = Path(tempfile.mkdtemp(prefix='bench-fid-'))
    try:
        n = extract(tmp/'A', 'test', a.n)
        if a.mode == 'fid': extract(tmp/'B', 'train', a.n)
        (tmp/'out').mkdir()
        w, kind = weights_file(tmp, a.weights)
        home = tmp/'torch-home'; (home/'hub'/'checkpoints').mkdir(parents=True)
        shutil.copy(w, home/'hub'/'checkpoints'/HUB_NAME)  # where pytorch-fid looks for its weights
        env = {**os.environ, 'TORCH_HOME': str(home), 'PYTHONWARNINGS': 'ignore'}
        import torch
        side = f'{n} vs {n}' if a.mode == 'fid' else f'{n}'
        print(f'mode {a.mode}: {side} CIFAR-10 JPEGs, batch {a.batch}, device {a.device}, weights: {kind}')
        print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}'
              + (f', {torch.cuda.get_device_name()}' if a.device.startswith('cuda') else '') + f'; load average {os.getloadavg()[0]:.1f}')
        cmds = commands(a.mode, tmp/'A', tmp/'B', w, a.batch, a.device, tmp/'out')
        if a.only: cmds = {k: v for k, v in cmds.items() if k in a.only}
        times, fids = {k: [] for k in cmds}, {}
        for r in range(a.repeat):
            for name, cmd in (list(cmds.items()) if r % 2 == 0 else list(cmds.items())[::-1]):  # every other repeat backwards: drift cancels
                for f in (tmp/'out').iterdir(): f.unlink()  # pytorch-fid refuses to overwrite its output
                dt, stdout = run(cmd, env)
                times[name].append(dt)
                if a.mode == 'fid': fids[name] = fid_of(name, stdout, tmp/'out')
                imgs = 2 * n if a.mode == 'fid' else n
                print(f'run {r + 1} {name:15s} {dt:7.1f} s  {imgs / dt:7.1f} images/s' + (f'  FID {fids[name]:.6g}' if a.mode == 'fid' else '')
                      + f'  (load {os.getloadavg()[0]:.1f})', flush=True)
        summary(a, times, n)
        if a.mode == 'fid' and {'ganlab', 'torch-fidelity'} <= set(fids):
            print(f"\nequal results: ganlab FID {fids['ganlab']:.6f}, torch-fidelity {fids['torch-fidelity']:.6f}: relative difference {rel(fids['ganlab'], fids['torch-fidelity']):.1e}")
        if a.mode == 'fid' and 'pytorch-fid' in fids:
            _, _ = run([GANLAB, 'fid', tmp/'A', tmp/'B', '--resize', 'torch', '--weights', w, '--batch', a.batch, '--device', a.device, '--quiet', '--json', tmp/'out'/'ganlab.json'], env)
            g = fid_of('ganlab', '', tmp/'out')
            print(f"equal results: ganlab fid --resize torch {g:.6f}, pytorch-fid {fids['pytorch-fid']:.6f}: relative difference {rel(g, fids['pytorch-fid']):.1e}")
        if a.mode == 'stats' and a.check: check_stats(a, tmp, w, env)
    finally: shutil.rmtree(tmp, ignore_errors=True)


def summary(a, times, n):
    if not a.repeat: return
    imgs = 2 * n if a.mode == 'fid' else n
    med = {k: statistics.median(v) for k, v in times.items()}
    peers = [k for k in med if not k.startswith('ganlab')]
    print(f'\n| tool | whole process, median of {a.repeat} | images/s | ganlab / ganlab-lib speed-up (median of per-repeat ratios) |\n| --- | ---: | ---: | ---: |')
    for k, v in med.items():
        ups = [f'{statistics.median(p / g for p, g in zip(times[k], times[o])):.2f}x' for o in ('ganlab', 'ganlab-lib') if o in times]
        print(f"| {k} | {v:.1f} s | {imgs / v:.1f} | {'' if k.startswith('ganlab') else ' / '.join(ups)} |")
    for g in ('ganlab', 'ganlab-lib'):
        if g in times and peers:
            per = [min(times[p][r] for p in peers) / times[g][r] for r in range(a.repeat)]
            print(f"{g} vs the faster peer in each repeat: {', '.join(f'{x:.2f}x' for x in per)}; median {statistics.median(per):.2f}x")


def check_stats(a, tmp, w, env):
    "ganlab stats --resize torch against pytorch-fid --save-stats: mu and sigma"
    import numpy as np
    for f in (tmp/'out').iterdir(): f.unlink()
    run([GANLAB, 'stats', tmp/'A', '--out', tmp/'out'/'g.npz', '--resize', 'torch', '--weights', w, '--batch', a.batch, '--device', a.device, '--quiet'], env)
    run([sys.executable, '-m', 'pytorch_fid', '--save-stats', tmp/'A', tmp/'out'/'p.npz', '--batch-size', a.batch, '--device', a.device], env)
    g, p = np.load(tmp/'out'/'g.npz'), np.load(tmp/'out'/'p.npz')
    for k in ('mu', 'sigma'):
        d = np.abs(g[k] - p[k]).max() / np.abs(p[k]).max()
        print(f'equal results: ganlab stats --resize torch vs pytorch-fid --save-stats: {k} max relative difference {d:.1e}')


def network(a):
    "Each network alone on one batch of CIFAR-sized images, in this process, interleaved rounds"
    import numpy as np, torch
    sys.path.insert(0, str(ROOT))
    from ganlab.metrics import Extractor
    tmp = Path(tempfile.mkdtemp(prefix='bench-fid-'))
    try:
        w, kind = weights_file(tmp, a.weights)
        home = tmp/'torch-home'; (home/'hub'/'checkpoints').mkdir(parents=True)
        shutil.copy(w, home/'hub'/'checkpoints'/HUB_NAME); os.environ['TORCH_HOME'] = str(home)
        from pytorch_fid.inception import InceptionV3
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        dev, sync = a.device, (torch.cuda.synchronize if a.device.startswith('cuda') else lambda: None)
        x = np.random.default_rng(0).integers(0, 256, (a.batch, 32, 32, 3), dtype=np.uint8)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev)
        pf = InceptionV3([3]).eval().to(dev)
        tf = FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=str(w)).to(dev)
        ours = Extractor(weights=w, device=dev, batch=a.batch)
        one = Extractor(weights=w, device=dev, batch=a.batch); one.workers = 1  # PyTorch's own threads on the whole batch
        fns = {f'ganlab ({ours.workers} single-threaded workers)': lambda: ours(x), 'ganlab (1 worker, PyTorch threads)': lambda: one(x),
               'pytorch-fid network': lambda: pf(xt.float() / 255), 'torch-fidelity network': lambda: tf(xt)}
        print(f'in-process, one batch of {a.batch} 32x32 images, device {dev}, weights: {kind}; {a.rounds} interleaved rounds after a warm-up; '
              f'torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}')
        ts = {k: [] for k in fns}
        with torch.inference_mode():
            for f in fns.values(): f()
            for _ in range(a.rounds):
                for k, f in fns.items():
                    sync(); t0 = time.perf_counter(); f(); sync(); ts[k].append(time.perf_counter() - t0)
        base = min(statistics.median(ts['pytorch-fid network']), statistics.median(ts['torch-fidelity network']))
        for k, v in ts.items():
            print(f'  {k:45s} median {a.batch / statistics.median(v):7.1f} images/s  (best {a.batch / min(v):7.1f})  {base / statistics.median(v):.2f}x the faster peer')
    finally: shutil.rmtree(tmp, ignore_errors=True)


def fd(a):
    "The Frechet distance alone, on covariances of n ReLU features of 2048 dimensions, as each tool computes it"
    import numpy as np, inspect, scipy.linalg
    sys.path.insert(0, str(ROOT))
    from ganlab.metrics import frechet_distance
    from pytorch_fid import fid_score
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    if 'disp' not in inspect.signature(scipy.linalg.sqrtm).parameters:  # pytorch-fid 0.3.0 on SciPy >= 1.18 (see tests/test_metrics.py)
        class Old:
            @staticmethod
            def sqrtm(m, disp=True): return (scipy.linalg.sqrtm(m), None) if not disp else scipy.linalg.sqrtm(m)
        fid_score.linalg = Old
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((2048, 2048)) * 0.05
    def stats(n, shift):
        f = np.maximum(rng.standard_normal((n, 2048)) @ mix + shift, 0)
        return f.mean(0), np.cov(f, rowvar=False)
    print(f'Frechet distance of two sets of n x 2048 ReLU features; load average {os.getloadavg()[0]:.1f}')
    for n in a.fd_n:
        (m1, s1), (m2, s2) = stats(n, 0.0), stats(n, 0.02)
        tools = {'ganlab eigh (pivoted Cholesky)': lambda: frechet_distance(m1, s1, m2, s2),
                 'ganlab sqrtm': lambda: frechet_distance(m1, s1, m2, s2, 'sqrtm'),
                 'pytorch-fid (scipy sqrtm)': lambda: fid_score.calculate_frechet_distance(m1, s1, m2, s2),
                 'torch-fidelity (numpy eigvals)': lambda: fid_statistics_to_metric({'mu': m1, 'sigma': s1}, {'mu': m2, 'sigma': s2}, False)['frechet_inception_distance']}
        res = {}
        for k, f in tools.items():
            t0 = time.perf_counter(); v = f(); res[k] = (time.perf_counter() - t0, v)
        ref = res['pytorch-fid (scipy sqrtm)'][1]
        for k, (t, v) in res.items(): print(f'  n={n:5d}  {k:32s} {t:7.2f} s  FID {v:.6f}  (relative to pytorch-fid {rel(v, ref):.1e})', flush=True)


PHASES = '''
import sys, time
t0 = time.perf_counter(); marks = []
def lap(w): marks.append((w, time.perf_counter()))
import torch; lap('import torch')
import ganlab.metrics as M; lap('import ganlab.metrics (rest)')
ex = M.Extractor(weights=sys.argv[3], device=sys.argv[4], batch=int(sys.argv[5]), quiet=True); lap('find, load, check and fuse the weights')
sa, sb = M.image_source(sys.argv[1]), M.image_source(sys.argv[2]); lap('list the images')
ma = M.measure(sa, ex, quiet=True); lap(f'measure A ({len(sa)} images: decode, network, statistics)')
mb = M.measure(sb, ex, quiet=True); lap(f'measure B ({len(sb)} images)')
d = M.frechet_distance(ma.mu, ma.sigma, mb.mu, mb.sigma); lap('Frechet distance (imports SciPy)')
prev = t0
for w, t in marks: print(f'  {w:55s} {t - prev:6.2f} s'); prev = t
print(f'  {"in-process total":55s} {prev - t0:6.2f} s  (FID {d:.4f})')
'''


def phases(a):
    tmp = Path(tempfile.mkdtemp(prefix='bench-fid-'))
    try:
        extract(tmp/'A', 'test', a.n); extract(tmp/'B', 'train', a.n)
        w, kind = weights_file(tmp, a.weights)
        print(f'a fresh process: ganlab.metrics library calls of `ganlab fid A B`, {a.n} vs {a.n} CIFAR-10 JPEGs, weights: {kind}, device {a.device}; '
              f'load average {os.getloadavg()[0]:.1f}')
        for r in range(max(1, a.repeat)):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, '-c', PHASES, tmp/'A', tmp/'B', w, a.device, str(a.batch)], capture_output=True, text=True,
                               env={**os.environ, 'PYTHONPATH': str(ROOT)})
            if p.returncode: sys.exit(p.stderr[-3000:])
            print(f'run {r + 1}:\n{p.stdout}  whole process (with Python start-up): {time.perf_counter() - t0:.2f} s')
    finally: shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--mode', choices=['fid', 'stats', 'network', 'fd', 'phases'], default='fid', help='what to time (default: fid)')
    ap.add_argument('--n', type=int, default=200, help='images (per side for fid; default: 200)')
    ap.add_argument('--batch', type=int, default=50, help='batch size for every tool (default: 50)')
    ap.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    ap.add_argument('--repeat', type=int, default=3, help='runs per tool, interleaved (default: 3)')
    ap.add_argument('--rounds', type=int, default=5, help='network mode: timed rounds per network (default: 5)')
    ap.add_argument('--fd-n', type=int, nargs='*', default=[200, 2000], help='fd mode: image counts (default: 200 2000)')
    ap.add_argument('--weights', default=None, help='FID weights file (default: the real one if present, else random)')
    ap.add_argument('--only', nargs='*', default=None, help='run only these tools (ganlab, ganlab-lib, pytorch-fid, torch-fidelity)')
    ap.add_argument('--check', action='store_true', help='stats mode: also check ganlab --resize torch against pytorch-fid (two untimed runs)')
    ap.add_argument('--in-process', action='store_true', help='fid and stats modes: then also time each network alone (as --mode network)')
    a = ap.parse_args()
    {'fid': whole_process, 'stats': whole_process, 'network': network, 'fd': fd, 'phases': phases}[a.mode](a)
    if a.in_process and a.mode in ('fid', 'stats'): print(); network(a)


if __name__ == '__main__': main()
