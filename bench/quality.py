#!/usr/bin/env python3
"""Image quality at equal wall time on a CIFAR-10 subset, measured with the ruler (issue 15).

    python bench/quality.py --runs seed,default,pytorch,cgan,default@24m [--budget 12m] [--work DIR] [--examples DIR] [--grids bench/quality]

The data: the first 1,000 training images of each CIFAR-10 class (10,000 images) from ../shared/data/cifar10-jpg.zip,
written once as PNGs in class folders under --work. The ruler: `ganlab.classifier` trained on the zip's 50,000
training images (cached in --work), whose penultimate features give a Fréchet distance (not FID) between 10,000
generated images and the 10,000 test images. Each run trains for --budget of wall time (`--time-budget`) in a fresh
process, as a user runs it, then 10,000 images are generated and measured:

- `seed`: ganlab's `cifar10` preset, the seed-001 DCGAN as written (BCE, BatchNorm in both networks, no EMA);
- `default`: `ganlab train dcgan` with the family's defaults (the recipe this benchmark chose);
- `pytorch`: PyTorch's own DCGAN example (`dcgan/main.py` of github.com/pytorch/examples, 64 px, run as written
  from a checkout given with --examples, never copied here), stopped at the budget; its last epoch's generator is
  loaded by taking the `Generator` class from that file, and its 64 px images are resized to 32 px (antialiased) for
  the ruler;
- `cgan`: the class-conditional GAN with the same recipe; also its classification accuracy, overall and per class
  (the ruler reads the class each image was asked for; chance is 10%);
- any other name in CANDIDATES (unconditional) or CGAN (class-conditional): a recipe candidate.

Every run is also measured for fidelity and diversity apart: precision, recall, density and coverage (k = 5) in the
ruler's features against the 10,000 test images. A conditional run adds GAN-test (the ruler reads the class each
image was asked for, overall and per class) and, with --cas, the classification accuracy score (a fresh classifier of
the ruler's recipe trained on the 10,000 generated images, tested on the 10,000 real test images).

Prints one row per run (steps, images/s, Fréchet distance, and the accuracy for conditional runs) and saves an 8x8
grid of each run's generated images to --grids.
"""
import argparse, ast, json, os, platform, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')

SEED = dict(preset='cifar10')  # the seed-001 DCGAN
W64, AUG = dict(g_width=64, d_width=64), dict(diffaug='translation,cutout')  # the networks and DiffAugment before issue 24
BCE = dict(loss='bce', r1_gamma=0.0, r2_gamma=0.0, penalty_every=1, beta1=0.5, beta2=0.999)  # the loss before issue 24
CANDIDATES = {  # recipe candidates: ganlab train dcgan settings, on top of the seed's (noted where they differ)
    'seed': SEED,
    'seed+ema': dict(SEED, ema=0.999, lr_decay='linear'),
    'hinge-sn': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear'),
    'hinge-sn-da': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear', diffaug='translation,cutout'),
    'hinge-sn-da3': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear', diffaug='color,translation,cutout'),
    'hinge-sn-da-b64': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear', diffaug='translation,cutout', batch=64),
    'hinge-sn-da3-b64': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear', diffaug='color,translation,cutout', batch=64),
    'hinge-sn-b64': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear', batch=64),
    'seed+ema-b64': dict(SEED, ema=0.999, lr_decay='linear', batch=64),
    'bce-da-b64': dict(SEED, ema=0.999, lr_decay='linear', diffaug='translation,cutout', batch=64),
    'hinge-sn-da-beta': dict(SEED, loss='hinge', spectral=True, d_norm='none', ema=0.999, lr_decay='linear', diffaug='translation,cutout',
                             beta1=0.0, beta2=0.9, lr_d=4e-4),
    'bce-da': dict(SEED, ema=0.999, lr_decay='linear', diffaug='translation,cutout'),
    'resnet': dict(SEED, arch='resnet', g_width=128, d_width=128, latent=128, loss='hinge', spectral=True, ema=0.999, lr_decay='linear',
                   diffaug='translation,cutout', batch=64, beta1=0.0, beta2=0.9),
    'default': {},  # issue 24: R3GAN's loss (rpgan, lazy R1 and R2, beta1 0), half-width networks, no DiffAugment
    'default-bf16': dict(amp='bf16'),  # the default in bf16 autocast, and in float32: what `--amp auto` chooses between on a CPU (issue 18)
    'default-fp32': dict(amp='off'),
    # issue 24: on top of the default; each pins what it was measured with (R3GAN's loss; widths 64 and DiffAugment's
    # translation and cutout unless it names its own), since the default is now half-width without DiffAugment
    'default-bce': dict(W64, **AUG, **BCE),  # the default before issue 24
    'r3gan': dict(W64, **AUG),  # RpGAN + lazy R1 + R2 (the default between the two commits of issue 24)
    'd2': dict(W64, **AUG, **BCE, g_every=2),  # two D steps per G step (with BCE)
    'w48': dict(AUG, g_width=48, d_width=48),  # narrower networks, more steps
    'w32': dict(AUG, g_width=32, d_width=32),  # half-width networks: 2.4x the images per second
    'w24': dict(AUG, g_width=24, d_width=24),  # narrower still
    'w32-b32': dict(AUG, g_width=32, d_width=32, batch=32),  # half-width networks, half the batch
    'w32-noaug': dict(g_width=32, d_width=32, diffaug=''),  # half-width networks without DiffAugment (the default now)
    'g64-d32': dict(AUG, g_width=64, d_width=32),  # a narrower discriminator only
    'r3gan-w96': dict(AUG, g_width=96, d_width=96),  # wider networks, fewer steps
    'r3gan-lr4': dict(W64, **AUG, lr_g=4e-4, lr_d=4e-4),
}
CGAN = {  # class-conditional candidates (issue 24): ganlab train cgan settings on top of the family's defaults
    'cgan': {},
    'cgan-projection': dict(cond='projection'),  # Miyato and Koyama's projection discriminator (the default until issue 24)
    'cgan-ac': dict(cond='ac'),  # an AC-GAN class head, cross-entropy weight 1
    'cgan-d2dce': dict(cond='d2dce'),  # ReACGAN's normalised embedding and data-to-data cross-entropy
    'cgan-d2dce-w2': dict(cond='d2dce', cond_weight=2.0),  # the same, its loss weighted twice
    'cgan-ac-w03': dict(cond='ac', cond_weight=0.3),  # a lighter AC-GAN head
}


def subset(zip_path:Path, work:Path, per_class:int=1000) -> Path:
    "The first `per_class` training images of each class, as PNGs in class folders (written once)"
    out = work/f'cifar10-{per_class}'
    if (out/'.done').is_file(): return out
    from PIL import Image
    from ganlab.data import load_images
    ds = load_images(zip_path, 32, split='train', show_progress=False)
    for c, name in enumerate(ds.classes):
        (out/name).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(ds.labels == c)[:per_class]): Image.fromarray(ds.images[i]).save(out/name/f'{k:04d}.png')
    (out/'.done').touch()
    return out


def ruler(zip_path:Path, work:Path):
    "The classifier (trained once on the 50,000 training images, then cached) and the test split's statistics in its features"
    from ganlab.classifier import train_classifier, load_classifier, feature_stats
    from ganlab.data import load_images
    p = work/'ruler.pt'
    if not p.is_file():
        t0 = time.perf_counter()
        train_classifier(zip_path, p)
        print(f'ruler trained in {time.perf_counter() - t0:.0f} s -> {p}', flush=True)
    clf = load_classifier(p)
    test = load_images(zip_path, 32, split='test', show_progress=False)
    return clf, feature_stats(test.images, clf), test


THREADS = None  # --threads: each run's CPU threads (None: torch's default)

def run(cmd:list, log:Path, timeout:float|None=None) -> tuple:
    "Run a command, its output into `log`; at `timeout` seconds it gets SIGTERM (then SIGKILL after 2 minutes); (seconds, return code)"
    t0 = time.perf_counter()
    env = dict(os.environ, **({'OMP_NUM_THREADS': str(THREADS), 'MKL_NUM_THREADS': str(THREADS)} if THREADS else {}))
    with open(log, 'w') as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try: rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.terminate()
            try: p.wait(120)
            except subprocess.TimeoutExpired: p.kill(); p.wait()
            rc = 'timeout'
    return time.perf_counter() - t0, rc


# Runs PyTorch's DCGAN example unchanged; on SIGTERM (the budget) saves the generator it is training to OUTF/netG_budget.pth.
STOPPER = """
import os, runpy, signal, sys, torch
def stop(sig, frame):
    while frame is not None and 'netG' not in frame.f_globals: frame = frame.f_back
    if frame is not None:
        g = frame.f_globals
        torch.save(g['netG'].state_dict(), os.path.join(g['opt'].outf, 'netG_budget.pth'))
    sys.stdout.flush(); os._exit(0)
signal.signal(signal.SIGTERM, stop)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def ganlab_run(name:str, family:str, settings:dict, data:Path, work:Path, budget:str, images:int|None=None, at:tuple=()) -> dict:
    "Train with ganlab for the budget (or for `images` training images), then generate 10,000 images; what happened (with `at`: also at those shorter budgets, in `r['at']`)"
    tag = f'{images // 1000}k' if images else budget
    out = work/'runs'/f'{name}-{tag}'
    if out.exists(): shutil.rmtree(out)
    flags = [f"--{k.replace('_', '-')}={v}" if not isinstance(v, bool) else (f"--{k.replace('_', '-')}" if v else f"--no-{k.replace('_', '-')}")
             for k, v in settings.items()]
    length = ['--time-budget', budget, '--epochs', '100000'] if not images else ['--epochs', str(max(1, images // 10000))]
    keep = ['--keep-ckpts', '0'] if at else []  # every epoch's checkpoint, for the shorter budgets
    cmd = [GANLAB, 'train', family, '--data', str(data), '--out', str(out), *length, '--no-tensorboard', '--no-progress', '--quiet', *flags, *keep]
    budget = tag
    secs, rc = run(cmd, work/f'{name}-{budget}.log')
    if rc != 0: sys.exit(f'{name}: ganlab train failed ({rc}); see {work}/{name}-{budget}.log')
    md = json.loads((out/'metadata.json').read_text())
    images, labels = generated(name, budget, family, out/'checkpoints'/'last.pt', work)
    times = checkpoint_times(out) if at else []
    earlier = {b: at_budget(name, budget, b, family, times, work) for b in at}
    return dict(steps=md['steps'], ips=md.get('img_per_s'), wall=secs, images=images, labels=labels, settings=settings, at=earlier)


def generated(name:str, tag:str, family:str, ckpt:Path, work:Path) -> tuple:
    "10,000 images from `ckpt` (through `ganlab generate`, its averaged generator) and their classes (None: unconditional)"
    gen = work/'gen'/f'{name}-{tag}'
    if gen.exists(): shutil.rmtree(gen)
    args = [GANLAB, 'generate', str(ckpt), '--n', '10000', '--out', str(gen), '--quiet', '--device', 'cpu']
    if family == 'cgan': args += ['--class', 'all']
    if run(args, work/f'{name}-{tag}-gen.log')[1] != 0: sys.exit(f'{name}: ganlab generate failed')
    from ganlab.data import load_images
    imgs = load_images(gen, 32, show_progress=False)
    labels = np.arange(len(imgs.images)) % 10 if family == 'cgan' else None  # `--class all`: image i is of class i % 10
    order = np.argsort(imgs.ids)  # img-000000... in order
    return imgs.images[order], labels


def checkpoint_times(out:Path) -> list:
    "Each epoch checkpoint of run folder `out`: (path, step, seconds since the run's start), read once (mapped, not loaded)"
    import torch
    rows = []
    for p in sorted((out/'checkpoints').glob('epoch_*.pt')):
        c = torch.load(p, map_location='cpu', weights_only=True, mmap=True)
        rows.append((p, c['step'], c['elapsed']))
    return rows


def at_budget(name:str, budget:str, at:str, family:str, times:list, work:Path) -> dict:
    "A longer run as a run of budget `at`: its last epoch checkpoint (of `checkpoint_times`) whose wall time since the start is within `at`"
    from ganlab.config import parse_duration
    within = [t for t in times if t[2] <= parse_duration(at)]
    if not within: sys.exit(f'{name}: no checkpoint within {at}')
    p, step, elapsed = within[-1]
    images, labels = generated(name, f'{at}-of-{budget}', family, p, work)
    return dict(steps=step, ips=None, wall=elapsed, images=images, labels=labels, settings={}, ckpt=p.name)


def pytorch_run(examples:Path, data:Path, work:Path, budget_s:float) -> dict:
    "PyTorch's DCGAN example as written (64 px), stopped at the budget; 10,000 images from the generator it was training, at 32 px"
    import re, torch, torch.nn as nn, torch.nn.functional as F
    main = examples/'dcgan'/'main.py'
    if not main.is_file(): sys.exit(f'{main}: not there (give --examples, a checkout of github.com/pytorch/examples)')
    out = work/'runs'/'pytorch'
    if out.exists(): shutil.rmtree(out)
    cmd = [sys.executable, '-c', STOPPER, str(main), '--dataset', 'folder', '--dataroot', str(data), '--outf', str(out),
           '--niter', '100000', '--manualSeed', '1']
    secs, rc = run(cmd, work/'pytorch.log', timeout=budget_s)
    ckpt = out/'netG_budget.pth'
    if not ckpt.is_file(): sys.exit(f'pytorch: no generator saved at the budget ({rc}); see {work}/pytorch.log')
    # the example's Generator class, taken from its file (its module runs training when imported)
    src = main.read_text()
    cls = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == 'Generator')
    env = dict(nn=nn, torch=torch, nz=100, ngf=64, nc=3)
    exec(compile(ast.Module([cls], []), str(main), 'exec'), env)
    g = env['Generator'](1)
    g.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=True))
    # sampled as the example samples (its generator never leaves training mode: batch statistics), 500 at a time
    imgs = []
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for _ in range(20):
            x = g(torch.randn(500, 100, 1, 1, generator=gen))
            x = F.interpolate(x, size=(32, 32), mode='bilinear', antialias=True, align_corners=False)
            imgs.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    prog = re.findall(r'^\[(\d+)/\d+\]\[(\d+)/(\d+)\]', (work/'pytorch.log').read_text(), re.M)
    epoch, i, n = map(int, prog[-1]) if prog else (0, -1, 1)
    steps = epoch * n + i + 1
    return dict(steps=steps, ips=steps * 64 / secs, wall=secs, images=np.concatenate(imgs), labels=None, epochs=round(steps / n, 2), settings={})


def class_score(r:dict, test, work:Path, name:str) -> dict:
    "The classification accuracy score: a classifier of the ruler's recipe trained on the run's generated images, read on the real test images"
    from ganlab.fidelity import classification_accuracy_score
    from ganlab.data import ImageArrayDataset
    gen = ImageArrayDataset(r['images'], labels=r['labels'], classes=list(test.classes))
    return classification_accuracy_score(gen, test, quiet=True)


def grid(images, path:Path, ncol:int=8):
    from ganlab.eda import image_grid, save_image
    save_image(image_grid(images, ncol=ncol), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', default='seed,default,pytorch,cgan,default@24m', help='comma-separated: seed, default, pytorch, cgan, or names of CANDIDATES; NAME@24m: that run with its own budget')
    ap.add_argument('--budget', default='12m', help='wall time of each training run (default: 12m)')
    ap.add_argument('--data', default=None, help='the CIFAR-10 JPEG zip (default: ../shared/data/cifar10-jpg.zip)')
    ap.add_argument('--work', default='/tmp/ganlab-quality', help='scratch folder: the subset, the ruler, runs, generated images')
    ap.add_argument('--examples', default=None, help='a checkout of github.com/pytorch/examples, for the pytorch run')
    ap.add_argument('--grids', default=str(ROOT/'bench'/'quality'), help='where to save each run\'s 8x8 grid')
    ap.add_argument('--images', type=int, default=None, help='instead of a budget: train on this many images (epochs of the 10,000)')
    ap.add_argument('--threads', type=int, default=None, help='CPU threads of each training run (default: torch\'s)')
    ap.add_argument('--jobs', type=int, default=1, help='training runs at a time (with --threads 1: runs side by side on equal terms)')
    ap.add_argument('--at', default='', help='runs longer than these budgets (comma-separated, e.g. 12m,24m): also scored at each, from the last epoch checkpoint within it (constant learning rate: nothing else depends on the budget)')
    ap.add_argument('--cas', action='store_true', help='conditional runs: also the classification accuracy score (trains a classifier per run)')
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    from ganlab.core import shared_data
    from ganlab.config import parse_duration
    from ganlab.classifier import fd_classifier, classification_accuracy, format_accuracy
    from ganlab.scores import prdc
    zp = Path(a.data) if a.data else shared_data('cifar10-jpg.zip')
    if zp is None or not zp.is_file(): sys.exit('the CIFAR-10 zip is not there: give --data')
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"budget {a.budget} per run; command: {' '.join(sys.argv)}", flush=True)
    data = subset(zp, work)
    clf, test_stats, test = ruler(zp, work)
    print(f'ruler: {clf!r}; test split {len(test.images):,} images', flush=True)
    test_feats = np.asarray(clf.features(test.images))
    rows = []
    def one(run):
        name, _, budget = run.partition('@')
        budget = budget or a.budget
        if name == 'pytorch': return pytorch_run(Path(a.examples), data, work, parse_duration(budget))
        at = tuple(b for b in a.at.split(',') if b and parse_duration(b) < parse_duration(budget))
        if name in CGAN: return ganlab_run(name, 'cgan', CGAN[name], data, work, budget, a.images, at)
        return ganlab_run(name, 'dcgan', CANDIDATES[name], data, work, budget, a.images, at)
    runs = [n for n in a.runs.split(',') if n.partition('@')[0] != 'pytorch' or a.examples]
    if bad := [n for n in runs if n.partition('@')[0] not in {**CANDIDATES, **CGAN, 'pytorch': 0}]: sys.exit(f'unknown run {bad[0]!r}')
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(a.jobs) as ex: results = list(ex.map(one, runs))
    names = [n if '@' in n or a.images else f'{n}@{a.budget}' for n in runs]
    for n, r in list(zip(names, results)):  # a longer run's earlier checkpoints, each as a run of its own
        for b, e in r.get('at', {}).items():
            names.append(f"{n.partition('@')[0]}@{b}-of-{n.partition('@')[2]}"); results.append(e)
            print(f"{names[-1]}: {n}'s {e['ckpt']} (step {e['steps']:,}, {e['wall']:.0f} s after its start)", flush=True)
    for name, r in zip(names, results):
        tag = f'{a.images // 1000}k' if a.images else name.partition('@')[2]
        name = name.partition('@')[0] + ('' if tag == a.budget or a.images else f'@{tag}')
        fd = fd_classifier(r['images'], test_stats, clf)
        acc = classification_accuracy(r['images'], r['labels'], clf) if r['labels'] is not None else None
        Path(a.grids).mkdir(parents=True, exist_ok=True)
        png = Path(a.grids)/f"{name.partition('@')[0]}-{tag}.png"
        if r['labels'] is None: grid(r['images'][:64], png)
        else: grid(r['images'][:100][np.argsort(r['labels'][:100], kind='stable')], png, ncol=10)  # a row per class
        pr = prdc(test_feats, np.asarray(clf.features(r['images'])), k=5)
        cas = class_score(r, test, work, name) if acc and a.cas else None
        rows.append((name, r, fd, acc, pr, cas))
        ips = '-' if r['ips'] is None else f"{r['ips']:,.0f}"
        print(f"{name:<18} steps {r['steps']:>7,}  img/s {ips:>6}  wall {r['wall']:6.0f} s  FD(ruler) {fd:9.3f}  "
              f"P {pr['precision']:.3f} R {pr['recall']:.3f} D {pr['density']:.3f} C {pr['coverage']:.3f}"
              + (f"  GAN-test {acc['accuracy']:.1%}" if acc else '') + (f"  CAS {cas['accuracy']:.1%}" if cas else '')
              + (f"  (epochs {r['epochs']})" if 'epochs' in r else ''), flush=True)
        if acc: print('GAN-test: ' + format_accuracy(acc), flush=True)
        if cas: print('CAS: ' + format_accuracy(cas), flush=True)
    ref = {n: fd for n, _, fd, *_ in rows}
    print(f"\nprecision, recall, density, coverage: k = 5, {len(test_feats):,} real test images against 10,000 generated, in the ruler's features")
    print('run                FD(ruler)  precision  recall  density  coverage  GAN-test      CAS' + ('   vs seed' if 'seed' in ref else '') + ('   vs pytorch' if 'pytorch' in ref else ''))
    for n, r, fd, acc, pr, cas in rows:
        print(f"{n:<18} {fd:9.3f}  {pr['precision']:9.3f}  {pr['recall']:6.3f}  {pr['density']:7.3f}  {pr['coverage']:8.3f}  "
              + (f"{acc['accuracy']:8.1%}" if acc else f"{'-':>8}") + (f"  {cas['accuracy']:7.1%}" if cas else f"  {'-':>7}")
              + (f"  {ref['seed'] / fd:7.2f}x" if 'seed' in ref else '') + (f"  {ref['pytorch'] / fd:9.2f}x" if 'pytorch' in ref else ''))
    if any(acc for *_, acc, _, _ in rows):
        classes = list(next(acc for *_, acc, _, _ in rows if acc)['per_class'])
        print('\nper class (GAN-test' + (' / CAS' if a.cas else '') + '): ' + ', '.join(classes))
        for n, r, fd, acc, pr, cas in rows:
            if acc: print(f"{n:<18} " + ' '.join(f"{acc['per_class'][c]:5.1%}" + (f"/{cas['per_class'][c]:5.1%}" if cas else '') for c in classes)
                          + f"  lowest {min(acc['per_class'].values()):.1%}")


if __name__ == '__main__': main()
