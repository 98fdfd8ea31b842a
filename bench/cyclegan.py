"""Time per training iteration of the image translators (CycleGAN, CUT) and the wall time it implies.

    python bench/cyclegan.py [--families cyclegan,cut] [--size 256] [--batches 1,4|max] [--steps 3] [--warmup 1]
                             [--device cpu|cuda] [--amp off,fp16,bf16] [--plan-hours 11]

Each iteration is one `task.step` of the family's task (`ganlab.translation`: CycleGAN's generators' step, pools and
discriminators' step; CUT's discriminator step and generator-and-heads step) on random images, at the family's
defaults (ResNet-9 generators, 70x70 PatchGANs; CUT with its identity PatchNCE term). The families are timed
side by side in one run, their steps interleaved, so that a busy machine slows them alike. For each family, batch
and precision it prints one line that names the family and ends with its time as `N.NNN s/iteration`, with the
images per second, the FLOPs of one iteration (counted by torch.utils.flop_counter) and the wall time of E epochs
over the competition's 7,038 photos at the measured rate; then each family's time relative to the first.
`--batches max` finds the largest batch that fits on the GPU (doubling, then bisecting). `--plan-hours H` adds, per
family, the epochs of the competition's data that `ganlab.planner.plan` estimates fit H hours on Kaggle's two T4s.
"""
import argparse, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from ganlab.config import make_config, get_family
from ganlab.runtime import Dist, amp_dtype, pick_device

def make_task(family, size, batch, device, amp):
    "A family's task at its defaults, ready to step on random images, with its autocast dtype and scaler"
    cfg = make_config(family, size=size, batch=batch, device=device, amp=amp)
    dv = pick_device(device)
    torch.manual_seed(0)
    fam = get_family(family)
    task = fam.task_class()(cfg, dv, Dist(), fam); task.steps_per_epoch = 10 ** 6
    ad = amp_dtype(amp, dv)
    scaler = torch.amp.GradScaler(dv.type, enabled=ad is torch.float16)
    x = lambda: (torch.rand(batch, 3, size, size, device=dv) * 2 - 1)
    return dict(task=task, real={'monet': x(), 'photo': x()}, amp=ad, scaler=scaler, dv=dv, n=0)

def one_step(t):
    "One training step of a prepared task; its seconds (the GPU synchronised)"
    sync = torch.cuda.synchronize if t['dv'].type == 'cuda' else (lambda: None)
    sync(); t0 = time.perf_counter()
    t['task'].step(t['real'], t['n'], t['amp'], t['scaler']); t['n'] += 1
    sync()
    return time.perf_counter() - t0

def flops(t):
    with FlopCounterMode(display=False) as fc: t['task'].step(t['real'], 10 ** 6, t['amp'], t['scaler'])
    return fc.get_total_flops()

def fits(family, size, batch, device, amp):
    "Whether two training steps at this batch fit in the GPU's memory"
    try:
        t = make_task(family, size, batch, device, amp); one_step(t); one_step(t); return True
    except torch.OutOfMemoryError: return False
    finally:
        t = None; torch.cuda.empty_cache()

def largest_batch(family, size, device, amp, limit=1024):
    "The largest batch (up to `limit`) whose training steps fit: doubling, then bisecting"
    lo, hi = 1, 2
    while hi <= limit and fits(family, size, hi, device, amp): lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(family, size, mid, device, amp) else (lo, mid)
    return lo

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--families', default='cyclegan')
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--batches', default='1,4')
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', default='off')
    p.add_argument('--epochs', type=int, default=25)
    p.add_argument('--photos', type=int, default=7038)
    p.add_argument('--plan-hours', type=float, default=None)
    a = p.parse_args()
    fams = a.families.split(',')
    print(f'torch {torch.__version__}, device {a.device}' + (f' ({torch.cuda.get_device_name()})' if a.device.startswith('cuda') else f', {torch.get_num_threads()} threads'))
    for amp in a.amp.split(','):
        batches = {f: [largest_batch(f, a.size, a.device, amp) if b == 'max' else int(b) for b in a.batches.split(',')] for f in fams}
        for i in range(len(a.batches.split(','))):
            tasks = {f: make_task(f, a.size, batches[f][i], a.device, amp) for f in fams}
            for _ in range(a.warmup):
                for t in tasks.values(): one_step(t)
            secs = {f: 0.0 for f in fams}
            for _ in range(a.steps):  # interleaved: family after family, step after step
                for f, t in tasks.items(): secs[f] += one_step(t)
            per = {f: s / a.steps for f, s in secs.items()}
            for f, t in tasks.items():
                b, s, fl = batches[f][i], per[f], flops(t)
                print(f'{f} size {a.size} batch {b} amp {amp}: {b / s:.2f} img/s, {fl / 1e9:.1f} GFLOP/iteration ({fl / s / 1e12:.2f} TFLOP/s); '
                      f'{a.epochs} epochs x {a.photos:,} photos = {a.epochs * a.photos * s / b / 3600:.2f} h at this rate; {s:.3f} s/iteration')
            if len(fams) > 1 and len({batches[f][i] for f in fams}) == 1:
                print('  relative to ' + fams[0] + ': ' + ', '.join(f'{f} {per[fams[0]] / per[f]:.2f}x faster' for f in fams[1:]))
            tasks = None
            if a.device.startswith('cuda'): torch.cuda.empty_cache()
    if a.plan_hours:
        from ganlab.planner import plan
        for f in fams:
            for b in (2, 4, 8):
                pl = plan(f, devices=2, limit_hours=a.plan_hours, size=a.size, batch=b, epochs=1)
                print(f'{f} batch {b} on 2 x T4 (the planner\'s estimate, not measured): {(pl.seconds[0] - pl.other_s) / 3600:.2f} to '
                      f'{(pl.seconds[1] - pl.other_s) / 3600:.2f} h per epoch of 300 Monet + 7,038 photos; {pl.max_epochs} epochs fit {a.plan_hours:g} h')
