"""Does a run copy its training images? Nearest training image in the ruler's features, generated against real test images.

    python bench/nearest.py --work WORK RUN-12m [RUN-24m ...]

WORK is `bench/quality.py`'s --work folder: its ruler.pt, its 10,000-image training subset (cifar10-1000) and the
generated images of each run (gen/RUN-BUDGET). For 5,000 real test images and 5,000 images of each run, the distance to
the nearest of the 10,000 training images in the ruler's 256 features: a generator that copies its training images
puts many of its images closer to them than real test images ever come (the test images' 1st percentile).
"""
import argparse, sys
from pathlib import Path
import numpy as np, torch


def nearest(feats:torch.Tensor, train:torch.Tensor) -> torch.Tensor:
    "Each row's distance to its nearest training row, 1,000 rows at a time"
    return torch.cat([torch.cdist(f, train).min(1).values for f in feats.split(1000)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='+', help="generated-image folders under WORK/gen, e.g. default-12m")
    ap.add_argument('--work', required=True, help="bench/quality.py's --work folder")
    ap.add_argument('--n', type=int, default=5000, help='images of each kind (default: 5,000)')
    a = ap.parse_args()
    from ganlab.classifier import load_classifier
    from ganlab.core import shared_data
    from ganlab.data import load_images
    work = Path(a.work)
    clf = load_classifier(work/'ruler.pt')
    feats = lambda imgs: torch.as_tensor(np.asarray(clf.features(imgs)))
    train = feats(load_images(work/'cifar10-1000', 32, show_progress=False).images)
    zp = shared_data('cifar10-jpg.zip')
    if zp is None: sys.exit('the CIFAR-10 zip is not there (../shared/data/cifar10-jpg.zip)')
    test = nearest(feats(load_images(zp, 32, split='test', show_progress=False).images[:a.n]), train)
    low = test.quantile(0.01)
    print(f'ruler: {clf!r}; {len(train):,} training images')
    print(f'{"images":<18} {"median":>7} {"1st pct":>8}  closer than 99% of real test images')
    print(f'{"real test":<18} {test.median():7.3f} {low:8.3f}  {(test < low).float().mean():6.1%}')
    for run in a.runs:
        d = nearest(feats(load_images(work/'gen'/run, 32, show_progress=False).images[:a.n]), train)
        print(f'{run:<18} {d.median():7.3f} {d.quantile(0.01):8.3f}  {(d < low).float().mean():6.1%}')


if __name__ == '__main__': main()
