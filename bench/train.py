#!/usr/bin/env python3
"""DCGAN training throughput: ganlab's engine against the plainest loop of the same model.

    python bench/train.py [--size 32] [--batch 128] [--steps 60] [--device cpu] [--amp auto] [--compile] [--repeat 3]

Both sides train ganlab's own `Generator` and `Discriminator` (same widths, BCE loss, Adam 2e-4/(0.5, 0.999)) on the
same images: the first N CIFAR-10 training images of ../shared/data/cifar10-jpg.zip (random images when it is absent;
the cost does not depend on the pixels).

- baseline: the loop as simply as it is usually written (the PyTorch DCGAN tutorial): a float32 TensorDataset in
  [-1, 1], a shuffling DataLoader, eager float32, default memory format, `zero_grad()`, D's real and fake losses
  back-propagated separately, the generator's loss back-propagated through D with D's weight gradients computed.
- ganlab: `ganlab.train.train('dcgan', preset='cifar10', ...)` (the seed's recipe, as the baseline), the loop users run, with its logging, sample grids and checkpoints off
  the clock (they happen between epochs): uint8 data indexed on the device, channels-last, D frozen during the G
  step, AMP where `--amp` says, `torch.compile` with `--compile`.

The timed window starts after `--warmup` steps (compilation, allocator warm-up). Each side runs `--repeat` times,
alternating, and the median images/s is reported.
"""
import argparse, io, json, platform, statistics, sys, tempfile, time, zipfile
from pathlib import Path
import numpy as np, torch, torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ganlab.core import shared_data
from ganlab.data import ImageArrayDataset, load_images
from ganlab.models import Generator, Discriminator


def images(n:int, size:int) -> np.ndarray:
    "N training images, size x size x 3 uint8"
    z = shared_data('cifar10-jpg.zip')
    if z is None:
        print('note: ../shared/data/cifar10-jpg.zip is absent; random images', file=sys.stderr)
        return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return load_images(z, size, limit=n, split='train', show_progress=False).images


def baseline(imgs:np.ndarray, size:int, batch:int, steps:int, warmup:int, device:str) -> float:
    "images/s of the plain loop"
    torch.manual_seed(0)
    dev = torch.device(device)
    g, d = Generator(size=size).to(dev), Discriminator(size=size).to(dev)
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    data = torch.utils.data.TensorDataset(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    dl = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    crit = nn.BCEWithLogitsLoss()
    done, t0 = 0, None
    while True:
        for (real,) in dl:
            if done == warmup:
                if dev.type == 'cuda': torch.cuda.synchronize()
                t0 = time.perf_counter()
            real = real.to(dev)
            b = real.size(0)
            d.zero_grad()
            err_real = crit(d(real), torch.ones(b, device=dev)); err_real.backward()
            fake = g(torch.randn(b, g.latent, device=dev))
            err_fake = crit(d(fake.detach()), torch.zeros(b, device=dev)); err_fake.backward()
            od.step()
            g.zero_grad()
            err_g = crit(d(fake), torch.ones(b, device=dev)); err_g.backward()
            og.step()
            done += 1
            if done == warmup + steps:
                if dev.type == 'cuda': torch.cuda.synchronize()
                return steps * batch / (time.perf_counter() - t0)


def engine(imgs:np.ndarray, size:int, batch:int, steps:int, warmup:int, device:str, amp:str, compile:bool, channels_last:bool=True) -> float:
    "images/s of ganlab's loop, from the rows it logs"
    from ganlab.train import train
    with tempfile.TemporaryDirectory() as tmp:
        # one epoch holds warmup + steps; the first log row covers the warm-up, the second the timed steps
        n = (warmup + steps) * batch
        t = train('dcgan', preset='cifar10', dataset=ImageArrayDataset(imgs[:n]), out=Path(tmp)/'run', quiet=True, size=size, batch=batch, epochs=1,
                  log_every=warmup, samples=4, tensorboard=False, device=device, amp=amp, compile=compile, progress=False,
                  channels_last=channels_last)
        import pandas as pd
        rows = pd.read_csv(Path(tmp)/'run'/'metrics.csv')  # cumulative `seconds` at steps warmup, 2 warmup, ...
        return steps * batch / (rows['seconds'].iloc[-1] - rows['seconds'].iloc[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--size', type=int, default=32)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--steps', type=int, default=60, help='timed steps')
    ap.add_argument('--warmup', type=int, default=10, help='untimed steps first')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--amp', default='auto', help="ganlab's --amp: auto (bf16/fp16 on a GPU; on a CPU bf16 where measured faster), off, fp16, bf16")
    ap.add_argument('--compile', action='store_true', help='torch.compile in ganlab')
    ap.add_argument('--no-channels-last', dest='channels_last', action='store_false', help='ganlab in the default memory format')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--only', choices=['baseline', 'ganlab'], default=None)
    a = ap.parse_args()
    if a.steps % a.warmup: sys.exit('--steps must be a multiple of --warmup (the engine logs a row every --warmup steps)')
    imgs = images((a.warmup + a.steps) * a.batch, a.size)
    dev = torch.cuda.get_device_name() if a.device.startswith('cuda') else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'
    from ganlab.runtime import amp_dtype, bf16_measured
    amp = amp_dtype(a.amp, torch.device(a.device))  # what the engine will run: on a CPU, `auto` is measured (ganlab.runtime.cpu_amp)
    speedup = bf16_measured() if a.amp == 'auto' and a.device == 'cpu' else None
    print(f'DCGAN {a.size}x{a.size}, batch {a.batch}, {a.steps} timed steps after {a.warmup}; device {a.device} ({dev}); '
          f'torch {torch.__version__}; ganlab amp={a.amp} ({str(amp).replace("torch.", "") if amp else "float32"}'
          f'{", bf16 measured at %.2fx" % speedup if speedup is not None else ""}) compile={a.compile} channels_last={a.channels_last}', flush=True)
    res = {'baseline': [], 'ganlab': []}
    for r in range(a.repeat):
        for side in ('baseline', 'ganlab'):
            if a.only and side != a.only: continue
            v = baseline(imgs, a.size, a.batch, a.steps, a.warmup, a.device) if side == 'baseline' else \
                engine(imgs, a.size, a.batch, a.steps, a.warmup, a.device, a.amp, a.compile, a.channels_last)
            res[side].append(v)
            print(f'  run {r + 1} {side:8s} {v:10,.1f} img/s', flush=True)
    med = {k: statistics.median(v) for k, v in res.items() if v}
    for k, v in med.items(): print(f'{k:8s} median {v:10,.1f} img/s')
    if len(med) == 2: print(f'speed-up: {med["ganlab"] / med["baseline"]:.2f}x')
    print(json.dumps(dict(size=a.size, batch=a.batch, device=a.device, amp=a.amp, compile=a.compile, **{k: round(v, 1) for k, v in med.items()})))


if __name__ == '__main__':
    main()
