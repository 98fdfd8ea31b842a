"""Time per CycleGAN training iteration (ResNet-9 generators, 70x70 PatchGANs) and the wall time it implies.

    python bench/cyclegan.py [--size 256] [--batches 1,4] [--steps 3] [--warmup 1] [--device cpu|cuda] [--amp off,fp16]

Each iteration is one `CycleGANTask.step` of ganlab.tasks (generators' step, pools, discriminators' step) on random
images. It prints seconds per iteration and images per second for each batch and precision, the FLOPs of one
iteration (counted by torch.utils.flop_counter), and the wall time of E epochs over the competition's 7,038 photos
at the measured rate.
"""
import argparse, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from ganlab.config import make_config
from ganlab.tasks import CycleGANTask
from ganlab.runtime import Dist, amp_dtype, pick_device

def bench(size, batch, steps, warmup, device, amp):
    cfg = make_config('cyclegan', size=size, batch=batch, device=device, amp=amp)
    dv = pick_device(device)
    torch.manual_seed(0)
    task = CycleGANTask(cfg, dv, Dist()); task.steps_per_epoch = 10 ** 6
    ad = amp_dtype(amp, dv)
    scaler = torch.amp.GradScaler(dv.type, enabled=ad is torch.float16)
    x = lambda: (torch.rand(batch, 3, size, size, device=dv) * 2 - 1)
    real = {'monet': x(), 'photo': x()}
    sync = torch.cuda.synchronize if dv.type == 'cuda' else (lambda: None)
    for i in range(warmup): task.step(real, i, ad, scaler)
    sync(); t0 = time.perf_counter()
    for i in range(steps): task.step(real, warmup + i, ad, scaler)
    sync()
    return (time.perf_counter() - t0) / steps, task, real, ad, scaler

def flops(task, real, ad, scaler):
    with FlopCounterMode(display=False) as fc: task.step(real, 10 ** 6, ad, scaler)
    return fc.get_total_flops()

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--batches', default='1,4')
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', default='off')
    p.add_argument('--epochs', type=int, default=25)
    p.add_argument('--photos', type=int, default=7038)
    a = p.parse_args()
    print(f'torch {torch.__version__}, device {a.device}' + (f' ({torch.cuda.get_device_name()})' if a.device.startswith('cuda') else f', {torch.get_num_threads()} threads'))
    for amp in a.amp.split(','):
        for b in map(int, a.batches.split(',')):
            s, task, real, ad, scaler = bench(a.size, b, a.steps, a.warmup, a.device, amp)
            f = flops(task, real, ad, scaler)
            per_img = s / b
            print(f'size {a.size} batch {b} amp {amp}: {s:.3f} s/iteration, {b / s:.2f} img/s, {f / 1e9:.1f} GFLOP/iteration '
                  f'({f / s / 1e12:.2f} TFLOP/s); {a.epochs} epochs x {a.photos:,} photos = {a.epochs * a.photos * per_img / 3600:.2f} h at this rate')
