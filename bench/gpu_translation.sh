#!/usr/bin/env bash
# Issue 16's GPU checks, as one prepared script (not run yet: no GPU was lent when it was written).
#
#   bash bench/gpu_translation.sh [MONET] [PHOTO]
#
# 1. CycleGAN and CUT at 256x256, batch 1 and the largest batch that fits, AMP off / fp16 / bf16, timed side by side
#    (bench/cyclegan.py), then the planner's estimate of the epochs of the competition's data (300 Monet, 7,038
#    photos) that fit 11 hours on Kaggle's two T4s.
# 2. A real training run of each, CUT then CycleGAN, `--time-budget 3m` at 256x256 on the 60 real paintings against
#    CelebA photos (upscaled from 89x109), and their held-out grids side by side in $OUT/translation_gpu_256.png.
# 3. images.zip from the CUT checkpoint: 7,000 photos translated and zipped, timed (what the Kaggle kernel reserves).
#
# MONET and PHOTO default to ../shared/data (where the project's data lives) or shared/data in the checkout. The
# device machine gets only the checkout: copy the two files into an ignored folder that `run` carries, e.g.
#   echo /.gpu-data/ >> .git/info/exclude; mkdir -p .gpu-data
#   cp ../shared/data/monet/monet00-60.tfrec ../shared/data/celeba-10k-jpg.zip .gpu-data/
# and run with carry=['.gpu-data'] and `bash bench/gpu_translation.sh .gpu-data/monet00-60.tfrec .gpu-data/celeba-10k-jpg.zip`.
# It takes about 12 minutes on one H200 (two 3-minute runs, the timings, loading and the zip). It leaves six files in
# $OUT (default: bench/translation/gpu), within what the device tool brings back: the printed output
# (gpu_translation.log), each run's last grid and metrics.csv, and the two grids side by side; the runs themselves go
# to $RUNS (default: a temporary folder).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/translation/gpu}
RUNS=${RUNS:-$(mktemp -d)}
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/gpu_translation.log") 2>&1
pick() { for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done; echo ""; }
MONET=${1:-$(pick ../shared/data/monet/monet00-60.tfrec shared/data/monet/monet00-60.tfrec .gpu-data/monet00-60.tfrec)}
PHOTO=${2:-$(pick ../shared/data/celeba-10k-jpg.zip shared/data/celeba-10k-jpg.zip .gpu-data/celeba-10k-jpg.zip)}
python -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== 1. iteration time at 256x256: batch 1 and the largest that fits; then the planner on 2 x T4"
timeout 300 python bench/cyclegan.py --families cyclegan,cut --size 256 --batches 1,max --steps 10 --warmup 3 --device cuda \
    --amp off,fp16,bf16 --plan-hours 11 || echo "(the timing stopped: see above)"

if [ -z "$MONET" ] || [ -z "$PHOTO" ]; then echo "skipped 2 and 3: no Monet shard or CelebA zip (give MONET PHOTO)"; exit 0; fi
echo "== 2. real runs, --time-budget 3m each, 256x256: $MONET against $PHOTO"
for fam in cut cyclegan; do
    ganlab train $fam --monet "$MONET" --photo "$PHOTO" --limit 2000 --out "$RUNS/run_$fam" --overwrite --size 256 --epochs 50 \
        --time-budget 3m --device cuda --no-tensorboard --no-progress --samples 8 --log-every 50
done
python - "$OUT" "$RUNS" <<'EOF'
import sys, json, shutil
from pathlib import Path
import numpy as np
from PIL import Image
out, runs = Path(sys.argv[1]), Path(sys.argv[2])
grids = []
for fam in ('cut', 'cyclegan'):
    md = json.loads((runs/f'run_{fam}'/'metadata.json').read_text())
    print(f"{fam}: {md['steps']:,} steps, {md['epochs_done']} epochs, {md.get('img_per_s')} img/s over {md['seconds']:.0f} s of training")
    last = sorted((runs/f'run_{fam}'/'samples').glob('epoch_*.png'))[-1]
    shutil.copy(last, out/f'{fam}_256_grid.png'); shutil.copy(runs/f'run_{fam}'/'metrics.csv', out/f'{fam}_256_metrics.csv')
    grids.append(np.asarray(Image.open(last).convert('RGB')))
h = max(g.shape[0] for g in grids)
pad = lambda g: np.pad(g, ((0, h - g.shape[0]), (0, 16), (0, 0)), constant_values=255)
Image.fromarray(np.concatenate([pad(g) for g in grids], 1)).save(out/'translation_gpu_256.png')
print('side by side (CUT: photo | Monet-style; CycleGAN: photo | Monet-style | back):', out/'translation_gpu_256.png')
EOF

echo "== 3. images.zip from the CUT checkpoint: 7,000 photos, timed"
python - "$RUNS" "$PHOTO" <<'EOF'
import sys, time
from pathlib import Path
from ganlab.generate import monet_submit
runs, photo = Path(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
r = monet_submit(runs/'run_cut'/'checkpoints'/'last.pt', photo=photo, out=runs/'images.zip', n=7000, batch=32, mifid=False, quiet=True)
print(f"images.zip: {r['images']:,} images in {time.perf_counter() - t:.1f} s; {r['check']}")
EOF
