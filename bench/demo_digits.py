#!/usr/bin/env python3
"""How many of `ganlab demo`'s generated digits a digit classifier reads with confidence.

    ganlab demo --out demo && python bench/demo_digits.py demo [--draw 12000] [--epochs 6] [--seed 123]

A small CNN is trained on freshly drawn digits (`ganlab.data.draw_digits` with another seed than the demo's, so it has
never seen the demo's images), with the colour channels shuffled and inverted at random so that it reads shapes, not
colours. An eleventh class, "no digit", holds blank colour fields and pixel noise: without it the classifier reads
noise as an 8 with p > 0.9, and a failed generator would score well. It then classifies the digits the doctor decoded
(what the GAN learned from) and the 1,000 digits the demo generated (DEMO/generated/*.png). Reported: the classifier's
accuracy on held-out drawings, the share of each set read as a digit with probability above `--confident`, and how the
digits read spread over the ten classes (normalised entropy: 1 is uniform, 0 is a single class, which would mean mode
collapse).
"""
import argparse, sys, time
from pathlib import Path
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ganlab.data import draw_digits, fit_images, load_images
from ganlab.shards import load_npz


NO_DIGIT = 10 # the class of blank fields and noise

def classifier() -> nn.Module:
    "A three-stage CNN for 32x32 RGB digits, and a class for no digit"
    c = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*c(3, 32), *c(32, 64), *c(64, 128), nn.Flatten(), nn.Linear(128 * 16, 128), nn.ReLU(), nn.Linear(128, 11))


def to_input(images:np.ndarray) -> torch.Tensor:
    "N x 32 x 32 x C uint8 as N x 3 x 32 x 32 floats in [-1, 1]"
    images = fit_images(images, 32, 3)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def no_digits(n:int, seed:int) -> np.ndarray:
    "`n` images without a digit: flat or graded colour fields (half) and pixel noise, some of it blurred (half)"
    rng = np.random.default_rng(seed + 1)
    t = np.linspace(0, 1, 32)[None, :, None, None]
    c1, c2 = rng.integers(0, 256, (2, n, 1, 1, 3))
    fields = c1 + (c2 - c1) * t * (rng.random((n, 1, 1, 1)) < .5)
    noise = rng.integers(0, 256, (n, 32, 32, 3)).astype(float)
    blur = rng.random(n) < .5
    noise[blur] = (noise[blur] + np.roll(noise[blur], 1, 1) + np.roll(noise[blur], 1, 2) + np.roll(noise[blur], (1, 1), (1, 2))) / 4
    return np.where((np.arange(n) % 2 == 0)[:, None, None, None], np.broadcast_to(fields, (n, 32, 32, 3)), noise).astype(np.uint8)


def train_classifier(n:int, epochs:int, seed:int) -> tuple[nn.Module, float]:
    "A classifier trained on `n` drawn digits and `n // 10` images without one (1/6 held out), and its held-out accuracy"
    torch.manual_seed(seed)
    x, y = draw_digits(n, seed=seed, show_progress=False)
    x, y = np.concatenate([x, no_digits(n // 10, seed)]), np.concatenate([y, np.full(n // 10, NO_DIGIT)])
    mix = np.random.default_rng(seed).permutation(len(x)); x, y = x[mix], y[mix]
    n = len(x)
    X, Y, k = to_input(x), torch.from_numpy(y), n * 5 // 6
    net, g = classifier(), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(k, generator=g)
        for i in range(0, k, 128):
            b = order[i:i + 128]
            xb = X[b][:, torch.randperm(3, generator=g)]  # colours carry no class
            xb = xb * (1 - 2 * (torch.rand(len(b), 1, 1, 1, generator=g) < .5).float())
            loss = F.cross_entropy(net(xb), Y[b])
            opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    with torch.no_grad(): acc = (net(X[k:]).argmax(1) == Y[k:]).float().mean().item()
    return net, acc


@torch.no_grad()
def read(net:nn.Module, images:np.ndarray, confident:float) -> dict:
    "The share of `images` read as a digit above `confident`, the share seen as no digit, and how the digits read spread"
    p = torch.cat([net(to_input(images[i:i + 500])).softmax(1) for i in range(0, len(images), 500)])
    top, cls = p.max(1)
    ok = (top > confident) & (cls != NO_DIGIT)
    h = torch.bincount(cls[ok], minlength=10).double() / max(1, int(ok.sum()))
    nz = h[h > 0]
    return dict(n=len(images), confident=ok.double().mean().item(), no_digit=(cls == NO_DIGIT).double().mean().item(),
                entropy=(-(nz * nz.log()).sum() / np.log(10)).item(), classes=h.tolist())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('demo', help='the folder `ganlab demo --out` wrote')
    ap.add_argument('--draw', type=int, default=12000, help='digits drawn to train the classifier (default: 12000)')
    ap.add_argument('--epochs', type=int, default=6, help="the classifier's epochs (default: 6)")
    ap.add_argument('--seed', type=int, default=123, help="the classifier's seed: its digits differ from the demo's (seed 0)")
    ap.add_argument('--confident', type=float, default=0.9, help='the probability that counts as read (default: 0.9)')
    a = ap.parse_args(argv)
    demo = Path(a.demo)
    pngs = sorted((demo/'generated').glob('*.png'))
    if not pngs: sys.exit(f'{demo/"generated"} holds no PNG files: run `ganlab demo --out {demo}` first')
    npz = demo/'doctor'/'decoded.npz'
    if not npz.is_file(): sys.exit(f'{npz} is missing: run `ganlab demo --out {demo}` first')
    t0 = time.perf_counter()
    net, acc = train_classifier(a.draw, a.epochs, a.seed)
    print(f'classifier: {a.draw:,} drawn digits and {a.draw // 10:,} without one (seed {a.seed}), {a.epochs} epochs, held-out accuracy {acc:.1%} ({time.perf_counter() - t0:.0f} s)')
    sets = {'decoded (real)': load_npz(npz)[1], 'generated': load_images(demo/'generated', 32, show_progress=False).images}
    for name, images in sets.items():
        r = read(net, images, a.confident)
        print(f"{name:15s} {r['n']:6,} images: {r['confident']:6.1%} read as a digit with p > {a.confident}, {r['no_digit']:.1%} no digit; "
              f"class entropy {r['entropy']:.3f}; "
              f"classes {' '.join(f'{v:.2f}' for v in r['classes'])}")


if __name__ == '__main__': main()
