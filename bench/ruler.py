#!/usr/bin/env python3
"""Issue 15's ruler on CIFAR-10: train the small classifier, then say what its Fréchet distances mean.

    nice -n 10 python bench/ruler.py [--data ../shared/data/cifar10-jpg.zip] [--epochs 10] [--seed 0] [--save clf.pt | --clf clf.pt]

Trains `ganlab.classifier.train_classifier` on the zip's train/ split (10% of each class held out; deterministic by
seed), or loads a classifier file given with --clf. Prints: the held-out accuracy and training time; the accuracy on
the 10,000 test images, per class (the ceiling for a class-conditional generator's score); then, against the
statistics of all 50,000 training images, the Fréchet distance in the classifier's features (not FID) of the test
images as they are (the floor), blurred, noised, down-sampled and up-sampled again, replaced by uniform noise, and
collapsed to two classes, at each --sizes sample size (10,000 and 1,000: the small-sample bias), with the
classifier's accuracy on each set.
"""
import argparse, os, platform, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ganlab.core import shared_data
from ganlab.data import open_dataset
from ganlab.classifier import (train_classifier, load_classifier, classification_accuracy, format_accuracy, feature_stats,
                               calibrate, format_calibration)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default=None, help='CIFAR-10 in its JPEG zip layout (default: ../shared/data/cifar10-jpg.zip)')
    ap.add_argument('--clf', default=None, help='a trained classifier file to measure instead of training one')
    ap.add_argument('--save', default=None, help='where to save the classifier trained here (never in the repository)')
    ap.add_argument('--epochs', type=int, default=10, help='training epochs (default: 10)')
    ap.add_argument('--seed', type=int, default=0, help='training seed (default: 0)')
    ap.add_argument('--sizes', type=int, nargs='+', default=[10000, 1000], help='real sample sizes to calibrate at (default: 10000 1000)')
    ap.add_argument('--collapse', type=int, nargs='+', default=[3, 5], help='classes the collapsed set keeps (default: 3 5, cat and dog)')
    a = ap.parse_args(argv)
    data = Path(a.data) if a.data else shared_data('cifar10-jpg.zip')
    if data is None or not data.exists(): sys.exit('CIFAR-10 zip not found: pass --data (../shared/data/cifar10-jpg.zip is absent)')
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} '
          f'with {torch.get_num_threads()} threads; load average at start {os.getloadavg()[0]:.1f}')
    if a.clf:
        clf = load_classifier(a.clf, 'cpu')
        print(f'loaded {a.clf}: {clf}; info {({k: v for k, v in clf.info.items() if k != "history"})}')
    else:
        clf = train_classifier(data, a.save, epochs=a.epochs, seed=a.seed, device='cpu')
        print(f"trained: {clf}; held-out accuracy by epoch {' '.join(f'{h:.1%}' for h in clf.info['history'])}")
    test = open_dataset(data, 32, split='test', show_progress=False)
    train = open_dataset(data, 32, split='train', show_progress=False)
    print(f'\n## Accuracy on the {len(test):,} test images (the ceiling for a class-conditional score)\n')
    print(format_accuracy(classification_accuracy(test.images, test.labels, clf)))
    t0, c0 = time.perf_counter(), time.process_time()
    ref = feature_stats(train.images, clf)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f'\nreference: features of the {len(train):,} training images in {dt:.0f} s ({len(train) / dt:,.0f} images/s; '
          f'{dc:.0f} s of CPU time, {len(train) / dc:,.0f} images per CPU-second)')
    for n in a.sizes:
        t0 = time.perf_counter()
        rows = calibrate(clf, test.images, ref, test.labels, n=n, collapse=tuple(a.collapse), seed=a.seed)
        print(f'\n## Test images (n = {min(n, len(test)):,}) against the {len(train):,} training images ({time.perf_counter() - t0:.0f} s)\n')
        print(format_calibration(rows))
    print(f'\nload average at the end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__': main()
