#!/usr/bin/env python3
"""The GPU acceptance check: everything about ganlab that a CPU cannot check, in one run of under 8 minutes on one
H100 or H200, with one JSON report and a Markdown section ready to paste into bench/RESULTS.md.

    python bench/gpu_check.py [--out bench/gpu_check/report.json] [--only NAME,NAME] [--skip NAME,NAME] [--list]
    python bench/gpu_check.py --dry-run --out /tmp/gck    # the whole plan on the CPU, tiny, in under 2 minutes

Checks (`--list` says more): launch (two training processes on one GPU through `train(nprocs=2)` and forked, gloo,
fork safety, SyncBatchNorm with R1 and WGAN-GP), fp16 (forced float16 on every family, scale and skipped steps; bf16 too),
syncs (host-device synchronisations per training step), checkpoint (save on GPU, load on CPU, resume on GPU,
interrupted == uninterrupted), features (FID Inception on CUDA against the CPU; FID of 10,000 images against
torch-fidelity), speed (DCGAN images/s against bench/train.py's plain loop; CycleGAN and CUT iteration times from
bench/cyclegan.py), cuda_cells (the notebooks' `#| cuda` cells through nbdev-test). Each check runs in its own
process with its own time limit (killed when it overruns), records pass / fail / skipped with the reason and its
numbers, and the run goes on to the next; the exit status is 1 when any check failed, 2 when there is no GPU.
Everything the checks need is made here (random and synthetic images, a seeded random FID weights file): no data,
no download.

With the device tool: its `run` works on a copy of the working tree (tracked and untracked files; `../shared` is not
there, nor the .venv), and the machine has no network. Its Python (3.12, torch, torchvision, pandas, scipy, ...)
lacks fastcore, which ganlab needs, and the peers and nbdev that two checks use, so carry them as wheels: once, here,
`python bench/gpu_check.py --fetch-wheels .whl` (pip download of DEVICE_WHEELS below; `.whl/` is git-ignored), then
one `run` with carry=['.whl'], timeout_s=600 and the command

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && python3 bench/gpu_check.py --out $OUT/gpu_check

so that report.json, RESULTS-section.md and gpu_check.log (the whole printed output) come back from $OUT (the two
reports are rewritten after every check, so a run cut short still brings back what it measured). The wheels are
about 8 MB, the tree about 7: well inside the 64 MiB a call carries. Without them the run still starts, and every
check fails at `import fastcore` with that reason. The budgets are for an H100 (an estimate, as the script has not run
on a GPU yet: about 4.5 of the 8 minutes); `--budget-scale` stretches them on a slower GPU.
"""
from __future__ import annotations
import argparse, contextlib, datetime, json, math, os, platform, re, shlex, shutil, signal, subprocess, sys, tempfile, threading, time, traceback
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
# run as a script, bench/ is sys.path[0] and its train.py, fid.py, ... would shadow modules of those names: take it out
sys.path[:] = [p for p in sys.path if Path(p or '.').resolve() != HERE.parent]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

# name -> (seconds on an H100, seconds in --dry-run on a 2-core CPU, two checks at a time, what it checks). Run in this order:
# `launch` first.
CHECKS = {
    'launch': (75, 60, 'two training processes on one GPU over gloo (GANLAB_DIST_BACKEND=gloo): train(nprocs=2) as the launcher '
                       'starts it, and forked (the notebook path), from a process that never initialised CUDA; dcgan default, '
                       'then SyncBatchNorm with r1_gamma=0.1 and with wgan-gp'),
    'fp16': (70, 45, "amp='fp16' forced on every family: finite losses, the GradScaler's final scale and skipped steps, "
                     'images/s; bf16 too where the GPU computes it'),
    'syncs': (35, 25, "host-device synchronisations per steady-state step (set_sync_debug_mode('warn')) of the dcgan default "
                      '(EMA on) and of cut, in the step and in the loop around it, and where they come from'),
    'checkpoint': (40, 30, 'save on the GPU, load and generate on a CPU-only process, resume on the GPU; an interrupted and '
                           'resumed run against an uninterrupted one (max abs weight difference)'),
    'features': (80, 45, 'FID Inception features and FID on CUDA against the CPU (random weights); FID of 10,000 images '
                         'against torch-fidelity (or pytorch-fid) on the same images and weights, with times'),
    'speed': (80, 30, "DCGAN 32x32 images/s at batch 128 and 512, ganlab against bench/train.py's plain loop side by side; "
                      'CycleGAN and CUT s/iteration at 256 px batch 1 (bench/cyclegan.py)'),
    'cuda_cells': (70, 20, 'nbdev-test --flags cuda on each notebook with `#| cuda` cells (--dry-run: they parse)'),
}
ENV_BUDGET = (25, 15)  # the probe of the device and the versions, before the checks
TOTAL_BUDGET = (475, 115)  # the whole run: under 8 minutes on an H100, under 2 on the 2-core CPU (checks not started by then fail)

# What the device machine's Python lacks (the device tool's package list, read 2026-11-17): ganlab's fastcore, the FID
# peers, google-crc32c (TFRecords, in a notebook), nbdev and what nbdev-test imports. Pure-Python wheels except two.
DEVICE_WHEELS = ('fastcore', 'torch-fidelity', 'pytorch-fid', 'google-crc32c', 'nbdev', 'execnb', 'fastgit', 'ghapi', 'fastspec',
                 'fasttransport', 'httpx2', 'httpcore2', 'truststore', 'ipython', 'ipython-pygments-lexers', 'jedi', 'parso',
                 'matplotlib-inline', 'traitlets', 'pexpect', 'ptyprocess', 'prompt-toolkit', 'wcwidth', 'stack-data',
                 'executing', 'asttokens', 'pure-eval', 'astunparse', 'watchdog')


# ---- the checks' side: one process per check ----------------------------------------------------------------------

class Skip(Exception):
    "A part that cannot run here (a package or a GPU feature is missing): skipped, with the reason"

class Failed(Exception):
    "A part that ran and missed its criterion: failed, with the reason and its numbers"
    def __init__(self, reason:str, numbers:dict|None=None): super().__init__(reason); self.numbers = numbers or {}


def clean(v):
    "`v` as strict JSON: NumPy and torch scalars as Python numbers, non-finite floats as strings, paths relative"
    if isinstance(v, dict): return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)): return [clean(x) for x in v]
    if hasattr(v, 'item') and callable(v.item) and getattr(v, 'ndim', 0) == 0: v = v.item()
    if isinstance(v, float): return v if math.isfinite(v) else str(v)
    if isinstance(v, (str, int, bool)) or v is None: return v
    if isinstance(v, Path): return rel_path(v)
    return str(v)


def rel_path(p) -> str:
    "A path as it reads in a report: relative to the repository, or the part after site-packages, never the machine's"
    s = str(p)
    with contextlib.suppress(ValueError): return str(Path(s).resolve().relative_to(ROOT))
    m = re.search(r'(?:site|dist)-packages/(.*)', s)
    if m: return m.group(1)
    m = re.search(r'lib/python[\d.]+/(.*)', s)
    return m.group(1) if m else Path(s).name


def write_json(path:Path, data:dict):
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(clean(data), indent=1))
    os.replace(tmp, path)


class Ctx:
    "One check's run in its worker process: its deadline, its parts, its progress lines and its result file"
    def __init__(self, name:str, result:Path, work:Path, budget:float, dry:bool):
        self.name, self.result, self.work, self.dry = name, result, work, dry
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget - 3  # room to write the result before the orchestrator's limit
        self.dev = 'cpu' if dry else 'cuda'
        self.res = dict(name=name, status='running', reason='', summary='', numbers={}, parts={}, notes=[])
        if dry: self.res['notes'].append('dry-run: cpu (tiny sizes, few steps; CUDA-only measurements take their CPU-side code path)')
        self.save()

    def left(self) -> float: return self.deadline - time.perf_counter()
    def say(self, msg:str): print(f'[{self.name} {time.perf_counter() - self.t0:6.1f}s] {msg}', flush=True)
    def save(self): write_json(self.result, self.res)
    def note(self, msg:str): self.res['notes'].append(msg); self.say(f'note: {msg}'); self.save()
    def set(self, **numbers): self.res['numbers'].update(numbers); self.save()

    def part(self, key:str, fn, need:float=5.0):
        "Run one part, `fn() -> dict of numbers`, in its own try/except; skip it when less than `need` seconds are left"
        if self.dry: need = min(need, 2.0)  # tiny parts: a busy 2-core machine must not skip them for want of a GPU-sized margin
        if need > 0 and self.left() < need:
            self.res['parts'][key] = dict(status='skipped', reason=f'budget: {max(self.left(), 0):.0f} s left, {need:.0f} s needed', budget=True)
            self.say(f'{key}: skipped (the budget is spent)'); self.save(); return None
        self.say(f'{key} ...')
        self.res['parts'][key] = dict(status='running'); self.save()  # what a kill at the time limit interrupted
        t = time.perf_counter()
        try:
            out = fn() or {}
            self.res['parts'][key] = dict(status='pass', seconds=round(time.perf_counter() - t, 2), **own(out))
            self.say(f'{key}: pass in {time.perf_counter() - t:.1f} s {short(out)}')
        except Skip as e:
            self.res['parts'][key] = dict(status='skipped', reason=str(e))
            self.say(f'{key}: skipped ({e})')
        except Failed as e:
            self.res['parts'][key] = dict(status='fail', reason=str(e), seconds=round(time.perf_counter() - t, 2), **own(e.numbers))
            self.say(f'{key}: FAIL: {e}')
        except BaseException as e:  # anything, KeyboardInterrupt aside: the next part runs
            if isinstance(e, KeyboardInterrupt): raise
            tb = traceback.format_exc().strip().splitlines()
            self.res['parts'][key] = dict(status='fail', reason=f'{type(e).__name__}: {clip(str(e))}', seconds=round(time.perf_counter() - t, 2),
                                          traceback=[rel_frames(l) for l in tb[-14:]])
            self.say(f'{key}: FAIL: {type(e).__name__}: {clip(str(e), 800)}')
        self.save()
        return self.res['parts'][key]

    def finish(self):
        parts = self.res['parts']
        failed = [k for k, p in parts.items() if p['status'] == 'fail']
        late = [k for k, p in parts.items() if p.get('budget')]
        skipped = [k for k, p in parts.items() if p['status'] == 'skipped' and not p.get('budget')]
        if failed or late:
            self.res['status'] = 'fail'
            self.res['reason'] = '; '.join([f"{k}: {parts[k]['reason']}" for k in failed] + ([f"ran out of its budget before {', '.join(late)}"] if late else []))
        elif parts and (len(skipped) == len(parts) or any(parts[k].get('essential') for k in skipped)):
            self.res['status'], self.res['reason'] = 'skipped', '; '.join(f"{k}: {parts[k]['reason']}" for k in skipped)
        else:
            self.res['status'] = 'pass'
            self.res['reason'] = ('skipped parts: ' + '; '.join(f"{k}: {parts[k]['reason']}" for k in skipped)) if skipped else ''
        self.res['seconds'] = round(time.perf_counter() - self.t0, 2)
        self.save()


def own(numbers:dict) -> dict:
    "A part's numbers with the names the part record keeps for itself (status, reason, seconds) renamed"
    return {(f'{k}_' if k in ('status', 'reason', 'seconds', 'budget') else k): v for k, v in numbers.items()}


def clip(msg:str, n:int=1500) -> str:
    "A long message's start and end (a child process's traceback ends with the error)"
    msg = rel_frames(msg)
    return msg if len(msg) <= n else msg[:300] + ' [...] ' + msg[-(n - 300):]


def rel_frames(line:str) -> str:
    "A traceback line with its file path shortened (no machine paths in the report)"
    return re.sub(r'File "([^"]+)"', lambda m: f'File "{rel_path(m.group(1))}"', line)


def short(d:dict, n:int=6) -> str:
    "A few of a part's numbers, for its progress line"
    items = [(k, v) for k, v in d.items() if isinstance(v, (int, float, bool)) or k in ('amp', 'backend')][:n]
    return '(' + ', '.join(f'{k} {fmt(v)}' for k, v in items) + ')' if items else ''


def fmt(v) -> str:
    if isinstance(v, bool) or v is None: return str(v)
    if isinstance(v, float):
        if not math.isfinite(v): return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6): return f'{v:.3g}'
        return f'{v:,.4g}' if abs(v) >= 1000 else f'{v:.4g}'
    if isinstance(v, int): return f'{v:,}'
    return str(v)


def smooth_images(n:int, size:int, seed:int, channels:int=3, shift:float=0.0):
    "N smooth random uint8 images (upsampled 8x8 noise), N x size x size x channels; `shift` brightens them"
    import numpy as np, torch
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, 2000):  # in blocks: 10,000 upsampled images at once would hold 10,000 x 3 x size x size floats
        k = min(2000, n - i)
        x = torch.nn.functional.interpolate(torch.rand(k, channels, 8, 8, generator=g) * (255 - shift) + shift, size=size, mode='bilinear', align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def noise_images(n:int, size:int, seed:int, channels:int=3):
    "N uniformly random uint8 images (training cost does not depend on the pixels)"
    import numpy as np
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def metrics_rows(out:Path):
    "metrics.csv of a run, the training rows only (those with a speed)"
    import pandas as pd
    m = pd.read_csv(Path(out)/'metrics.csv')
    return m[m['img_per_s'].notna()] if 'img_per_s' in m else m


def losses_finite(m) -> tuple:
    "(all logged losses finite, the last row's losses)"
    import numpy as np
    from ganlab.runlog import columns_of
    cols = [k for k in columns_of(m.columns)[0] if m[k].notna().any()]  # the losses the run's task declared
    vals = m[cols].to_numpy(dtype=float)
    ok = bool(len(m)) and bool(np.isfinite(vals[~np.isnan(vals)]).all()) and not np.isnan(m['loss_d'].to_numpy(dtype=float)).any()
    last = {k: float(m[k].iloc[-1]) for k in cols if m[k].notna().iloc[-1]} if len(m) else {}
    return ok, last


def rate(m) -> float|None:
    "Images per second over the logged windows after the first (which holds the warm-up)"
    if len(m) < 2: return None
    s, i = m['seconds'].to_numpy(dtype=float), m['images'].to_numpy(dtype=float)
    return float((i[-1] - i[0]) / (s[-1] - s[0])) if s[-1] > s[0] else None


def cuda_capability():
    import torch
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def import_bench(name:str):
    "bench/NAME.py as a module (bench/ is no package), under a name that shadows nothing"
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'gpu_check_bench_{name}', HERE.parent/f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- 0. the device ---------------------------------------------------------------------------------------------------

def probe_env(c:Ctx):
    "Versions, the device, which optional packages are here"
    info = dict(python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count())
    import importlib.util, importlib.metadata as md
    pk = {}
    for mod, dist in (('fastcore', 'fastcore'), ('torch_fidelity', 'torch-fidelity'), ('pytorch_fid', 'pytorch-fid'), ('nbdev', 'nbdev'),
                      ('execnb', 'execnb'), ('IPython', 'ipython'), ('google_crc32c', 'google-crc32c'), ('pandas', 'pandas'), ('scipy', 'scipy'),
                      ('numpy', 'numpy'), ('matplotlib', 'matplotlib'), ('tensorboard', 'tensorboard')):
        try: pk[dist] = md.version(dist) if importlib.util.find_spec(mod) else 'missing'
        except Exception as e: pk[dist] = f'missing ({type(e).__name__})'
    info['packages'] = pk
    import torch, torchvision
    info.update(torch=torch.__version__, torchvision=torchvision.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                cuda_available=torch.cuda.is_available(), torch_threads=torch.get_num_threads())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(), capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
                    memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                    bf16_tensor_cores=torch.cuda.get_device_capability(0) >= (8, 0))
        try:
            r = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'], capture_output=True, text=True, timeout=15)
            info['nvidia_smi'] = r.stdout.strip() or r.stderr.strip()[:200]
        except (OSError, subprocess.SubprocessError) as e: info['nvidia_smi'] = f'not run ({type(e).__name__})'
    else:
        info['device'] = f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
    try:
        import ganlab
        info['ganlab'] = ganlab.__version__
    except Exception as e: info['ganlab'] = f'not importable ({type(e).__name__}: {e})'
    try:
        r = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', 'HEAD'], capture_output=True, text=True, timeout=10)
        info['git'] = r.stdout.strip() or None
        if info['git']:
            d = subprocess.run(['git', '-C', str(ROOT), 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True, timeout=10)
            info['git_dirty'] = bool(d.stdout.strip())
    except (OSError, subprocess.SubprocessError): info['git'] = None
    c.set(**info)
    c.res['parts']['probe'] = dict(status='pass')


# ---- 1. launch -------------------------------------------------------------------------------------------------------

class RankProbe:
    "An evaluator for `train(evaluator=...)`: run by rank 0 at each epoch's end, it writes what that process sees, and returns no metric"
    def __init__(self, path): self.path = str(path)
    def __call__(self, trainer) -> dict:
        import torch, torch.distributed as dist
        nets = trainer.task.nets.values()
        d = dict(rank=trainer.dist.rank, world=trainer.dist.world, backend=str(dist.get_backend()) if dist.is_initialized() else None,
                 device=str(trainer.device), step=trainer.step, pid=os.getpid(), cuda_initialized=torch.cuda.is_initialized(),
                 bad_fork=bool(torch.cuda._is_in_bad_fork()), amp=str(trainer.amp).replace('torch.', '') if trainer.amp else 'off',
                 start_method='spawn' if getattr(sys.modules.get('__main__'), '__name__', '') == '__mp_main__' else 'fork',
                 sync_bn=sum(isinstance(m, torch.nn.SyncBatchNorm) for n in nets for m in n.modules()),
                 batch_norm=sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for n in nets for m in n.modules()))
        Path(self.path).write_text(json.dumps(d))
        return {}


def _fork_probe(q):
    import torch
    d = dict(bad_fork=bool(torch.cuda._is_in_bad_fork()), cuda_initialized=torch.cuda.is_initialized())
    try:
        if torch.cuda.is_available(): d['cuda_op'] = float((torch.ones(2, device='cuda') * 2).sum().item())
        else: d['cuda_op'] = 'no CUDA here'
    except Exception as e: d['cuda_op'] = f'{type(e).__name__}: {e}'
    q.put(d)


def fork_probe(c:Ctx) -> dict:
    "A child forked from this process: is it in a bad fork, and can it use CUDA?"
    import multiprocessing as mp, torch
    before = torch.cuda.is_initialized()
    ctx = mp.get_context('fork')
    q = ctx.Queue()
    p = ctx.Process(target=_fork_probe, args=(q,))
    p.start()
    try: d = q.get(timeout=60)
    finally: p.join(10)
    d.update(parent_cuda_initialized=before, exitcode=p.exitcode)
    if before: raise Failed('this process initialised CUDA before forking', d)
    if d['bad_fork']: raise Failed('the forked child is in a bad fork', d)
    if not c.dry and not isinstance(d['cuda_op'], float): raise Failed(f"the forked child could not use CUDA: {d['cuda_op']}", d)
    return d


def launcher():
    "The launcher of multi-process runs, `ganlab.launch.launch`"
    from ganlab.launch import launch
    return launch


def check_launch(c:Ctx):
    "Two training processes on one GPU through `train(nprocs=2)`, and forked by the launcher (the notebook path), from a process that has not touched CUDA"
    os.environ['GANLAB_DIST_BACKEND'] = 'gloo'  # NCCL refuses two ranks on one device; the engine honours this variable
    import torch
    from ganlab.train import train
    from ganlab.data import ImageArrayDataset
    c.set(parent_cuda_initialized_at_start=torch.cuda.is_initialized(), GANLAB_DIST_BACKEND='gloo')
    if c.dry: c.note('dry-run: cpu: the processes use gloo as every CPU run does, so GANLAB_DIST_BACKEND is set but not tested; '
                     'the SyncBatchNorm runs go through the forked path (the same train, started faster)')

    def parent():
        if torch.cuda.is_initialized(): raise Failed('the check process initialised CUDA before launching')
        return dict(cuda_initialized=False)
    c.part('parent-has-no-cuda', parent, need=0)
    c.part('fork-before', lambda: fork_probe(c), need=10)

    size, n_per_epoch, epochs, batch = (16, 4, 1, 16) if c.dry else (32, 6, 2, 64)
    import matplotlib.pyplot  # noqa: F401  (imported once here: forked processes' loss plots start faster)
    small = dict(g_width=8, d_width=8, latent=16, amp='off') if c.dry else {}
    data = ImageArrayDataset(noise_images(batch * n_per_epoch, size, 1))

    def run(key, extra, how):
        def go():
            out, probe = c.work/f'launch-{key}', c.work/f'probe-{key}.json'
            was = torch.cuda.is_initialized()
            kw = dict(dataset=data, out=out, quiet=True, evaluator=RankProbe(probe), fid_every=1, epochs=epochs, batch=batch, size=size,
                      log_every=2, samples=16, tensorboard=False, progress=False, device=c.dev, **small, **extra)
            t = time.perf_counter()
            if how == 'train': r = train('dcgan', nprocs=2, **kw)  # whatever start method the launcher picks for an importable function
            else: r = launcher()(train, 'dcgan', nprocs=2, start_method='fork', **kw)  # what a function defined in a notebook gets
            wall, after = time.perf_counter() - t, torch.cuda.is_initialized()
            # metadata.json, not the checkpoint: torch.load here could start CUDA in this process, and a later launch may fork it
            md = json.loads((out/'metadata.json').read_text())
            m = metrics_rows(out)
            ok, last = losses_finite(m)
            pr = json.loads(probe.read_text()) if probe.is_file() else {}
            d = dict(how="train('dcgan', nprocs=2)" if how == 'train' else "launch(train, 'dcgan', nprocs=2, start_method='fork')",
                     every_rank_exited_cleanly=True,  # the launcher returned: it raises when any process fails
                     start_method=pr.get('start_method'), wall_s=round(wall, 2), returned=None if r is None else type(r).__name__,
                     world=md.get('world'), steps=md.get('steps'), planned_steps=epochs * n_per_epoch, finished=bool(md.get('finished')),
                     last_checkpoint=(out/'checkpoints'/'last.pt').is_file(), metrics_rows=len(m), losses_finite=ok, last_losses=last,
                     parent_cuda_initialized_before=was, parent_cuda_initialized_after=after, rank0=pr, settings=dict(extra))
            bad = []
            if md.get('world') != 2: bad.append(f"metadata.json says world {md.get('world')}, not 2")
            if md.get('steps') != epochs * n_per_epoch: bad.append(f"{md.get('steps')} steps done, not {epochs * n_per_epoch}")
            if not d['finished'] or not d['last_checkpoint']: bad.append('the run did not finish (metadata.json, checkpoints/last.pt)')
            if not ok: bad.append('losses not finite')
            if not pr: bad.append("rank 0's probe did not run")
            elif pr.get('bad_fork'): bad.append('rank 0 is in a bad fork')
            if how == 'fork' and pr and pr.get('start_method') != 'fork': bad.append(f"start_method='fork' asked, rank 0 was started by {pr.get('start_method')}")
            if not c.dry and pr and pr.get('backend') != 'gloo': bad.append(f"rank 0 used backend {pr.get('backend')}, not gloo (GANLAB_DIST_BACKEND not honoured)")
            if not c.dry and pr and extra.get('sync_bn') and not pr.get('sync_bn'): bad.append('sync_bn=True but no SyncBatchNorm in the networks')
            if after: bad.append('the launching process initialised CUDA')
            if bad: raise Failed('; '.join(bad), d)
            return d
        return go

    c.part('dcgan', run('dcgan', {}, 'train'), need=15)
    c.part('dcgan-forked', run('dcgan-forked', {}, 'fork'), need=15)
    pen = 'fork' if c.dry else 'train'
    c.part('dcgan-syncbn-r1', run('dcgan-syncbn-r1', dict(sync_bn=True, r1_gamma=0.1), pen), need=15)
    c.part('dcgan-syncbn-wgan-gp', run('dcgan-syncbn-wgan-gp', dict(sync_bn=True, loss='wgan-gp', g_every=2), pen), need=15)
    c.part('fork-after', lambda: fork_probe(c), need=5)
    p = c.res['parts']
    c.res['summary'] = ', '.join(f"{k} ({p[k].get('start_method')}) {p[k].get('wall_s', '?')} s" for k in ('dcgan', 'dcgan-forked', 'dcgan-syncbn-r1', 'dcgan-syncbn-wgan-gp')
                                 if p.get(k, {}).get('status') == 'pass') or 'no run passed'


# ---- 2. fp16 ---------------------------------------------------------------------------------------------------------

def family_runs(dry:bool) -> dict:
    "Each family's data and settings for a short run (a few dozen steps on the GPU)"
    from ganlab.data import ImageArrayDataset
    tiny = dry
    out = {}
    b = 8 if tiny else 64
    out['dcgan'] = (lambda n: ImageArrayDataset(noise_images(n, 16 if tiny else 32, 2)),
                    dict(size=16 if tiny else 32, batch=b, **(dict(g_width=8, d_width=8, latent=16) if tiny else {})), b)
    out['cgan'] = (lambda n: ImageArrayDataset(noise_images(n, 16 if tiny else 32, 3), labels=[i % 10 for i in range(n)], classes=[f'c{i}' for i in range(10)]),
                   dict(size=16 if tiny else 32, batch=b, samples=10, **(dict(g_width=8, d_width=8, latent=16) if tiny else {})), b)
    out['mlp'] = (lambda n: ImageArrayDataset(noise_images(n, 28, 4, channels=1)),
                  dict(batch=b, **(dict(g_hidden='32,32', d_hidden='32') if tiny else {})), b)
    gb = 4 if tiny else 32
    out['googlenet'] = (lambda n: ImageArrayDataset(noise_images(n, 64, 5)),
                        dict(batch=gb, pretrained=False, **(dict(g_width=8, latent=16, freeze_backbone=True) if tiny else {})), gb)
    ts, tb = (32, 1) if tiny else (256, 1)
    tr = lambda seed: (lambda n: {'monet': noise_images(n, ts, seed), 'photo': noise_images(n + 4, ts, seed + 1)})
    small = dict(ngf=8, ndf=8) if tiny else {}
    out['cyclegan'] = (tr(6), dict(size=ts, batch=tb, samples=2, **small), tb)
    out['cut'] = (tr(8), dict(size=ts, batch=tb, samples=2, nce_width=16 if tiny else 256, **small), tb)
    return out


def short_run(c:Ctx, family:str, amp:str, steps:int, log_every:int, key:str) -> dict:
    "A run of `steps` steps of a family under `amp` (`Trainer.fit`): the scaler's scale and skipped steps, finite losses, images/s"
    import math as _m, torch
    from ganlab.config import make_config
    from ganlab.train import Trainer
    make, settings, batch = family_runs(c.dry)[family]
    data = make(batch * (steps + 2) + 2)
    cfg = make_config(family, out=str(c.work/key), amp=amp, device=c.dev, epochs=1, log_every=log_every, tensorboard=False, progress=False, **settings)
    t = Trainer(cfg, data, quiet=True)
    sc, scales = t.scaler, []
    if sc.is_enabled():
        update = sc.update
        def tracked(*a, **k):  # the scale after each step's update, kept on the device (reading it would synchronise)
            update(*a, **k)
            s = getattr(sc, '_scale', None)
            if torch.is_tensor(s): scales.append(s.detach().clone())
        sc.update = tracked
    t.fit(until_step=steps)
    m = metrics_rows(c.work/key)
    ok, last = losses_finite(m)
    d = dict(amp=str(t.amp).replace('torch.', '') if t.amp else 'off', steps=t.step, batch=batch, losses_finite=ok, last_losses=last,
             img_per_s=rate(m), size=t.cfg.size)
    if sc.is_enabled():
        st = sc.state_dict()
        init = float(getattr(sc, '_init_scale', 2.0 ** 16))
        scale, back, interval = float(st['scale']), float(st['backoff_factor']), int(st['growth_interval'])
        # Fewer steps than the growth interval: the scale never grows, so each halving is a step with an inf or NaN
        # gradient whose optimiser step(s) the scaler skipped. Read twice: from the scale after each update, and from the end state.
        hist = [init] + [float(x) for x in torch.stack(scales).cpu()] if scales else []
        skipped_at = [i for i in range(1, len(hist)) if hist[i] < hist[i - 1]]
        d.update(scaler='on', init_scale=init, final_scale=scale, skipped_steps=len(skipped_at) if hist else None, skipped_at_steps=[i - 1 for i in skipped_at],
                 skipped_in_second_half=sum(1 for i in skipped_at if i - 1 >= steps // 2) if hist else None,
                 skipped_steps_from_state=round(_m.log(init / scale) / _m.log(1 / back)) if scale > 0 and t.step < interval else None,
                 growth_tracker=int(st['_growth_tracker']))
    else: d['scaler'] = 'off'
    bad = []
    if not ok: bad.append('losses not finite')
    if t.step != steps: bad.append(f'{t.step} steps done, not {steps}')
    if d.get('scaler') == 'on':
        if c.dry: d['criterion'] = 'dry-run: cpu: the skipped-steps limits apply on the GPU only'
        elif d['final_scale'] < 1: bad.append(f"the loss scale fell to {d['final_scale']:g}")
        elif (d['skipped_in_second_half'] or 0) > (steps - steps // 2) // 2: bad.append(f"the scaler skipped {d['skipped_in_second_half']} of the last {steps - steps // 2} steps")
    if bad: raise Failed('; '.join(bad), d)
    return d


def check_fp16(c:Ctx):
    fams = list(family_runs(c.dry))
    steps, log_every = (4, 2) if c.dry else (40, 10)
    from ganlab.config import FAMILIES
    other = [f for f in FAMILIES if f not in fams]
    if other: c.note(f"registered families not run (no recipe here for their data): {', '.join(other)}")
    c.note('googlenet runs with pretrained=False (no ImageNet weights without a network)')
    bf16 = c.dry or (cuda_capability() or (0, 0)) >= (8, 0)
    for f in fams: c.part(f'{f}-fp16', lambda f=f: short_run(c, f, 'fp16', steps, log_every, f'fp16-{f}'), need=6)
    for f in fams:
        if not bf16:
            c.res['parts'][f'{f}-bf16'] = dict(status='skipped', reason=f'compute capability {cuda_capability()} < 8.0: no bf16 tensor cores'); continue
        if c.dry and f != 'dcgan': continue  # the same code for every family: one shows it runs
        c.part(f'{f}-bf16', lambda f=f: short_run(c, f, 'bf16', steps, log_every, f'bf16-{f}'), need=6)
    p = c.res['parts']
    fp = [k for k in p if k.endswith('-fp16') and p[k]['status'] == 'pass']
    sk = sum(p[k].get('skipped_steps') or 0 for k in fp)
    c.res['summary'] = f"{len(fp)}/{len(fams)} families finite under fp16 ({sk} skipped steps in all); bf16 {sum(1 for k in p if k.endswith('-bf16') and p[k]['status'] == 'pass')} passed"


# ---- 3. syncs --------------------------------------------------------------------------------------------------------

class SyncCounter:
    "Records each 'synchronizing CUDA operation' warning with the training phase it came in and its Python stack"
    def __init__(self):
        import ganlab
        self.pkg = str(Path(ganlab.__file__).resolve().parent)
        self.phase, self.events = ('init', -1), []

    def hook(self, message, category, filename, lineno, file=None, line=None):
        if 'synchroniz' not in str(message): return
        import traceback as tb
        frames = [f for f in tb.extract_stack()[:-1] if not f.filename.endswith(('warnings.py',)) and f.name != 'hook']
        inner = frames[-1] if frames else None
        ours = next((f for f in reversed(frames) if str(Path(f.filename).resolve()).startswith(self.pkg)), None)
        where = lambda f: f'{rel_path(f.filename)}:{f.lineno} ({f.name})' if f else '?'
        self.events.append((self.phase, where(ours), where(inner)))

    @contextlib.contextmanager
    def counting(self, cuda:bool):
        import warnings, torch
        with warnings.catch_warnings():
            warnings.simplefilter('always')
            warnings.showwarning = self.hook
            if cuda: torch.cuda.set_sync_debug_mode('warn')
            try: yield self
            finally:
                if cuda: torch.cuda.set_sync_debug_mode(0)


def sync_window(c:Ctx, family:str, settings:dict, data, warm:int, steps:int, log_every:int, key:str) -> dict:
    "Count the syncs of `steps` steady-state steps of `fit` (after `warm`), in the task's step and in the loop around it"
    from collections import Counter
    from ganlab.config import make_config
    from ganlab.train import Trainer
    cfg = make_config(family, out=str(c.work/key), device=c.dev, log_every=log_every, tensorboard=False, progress=False, epochs=1, **settings)
    t = Trainer(cfg, data, quiet=True)
    if t.steps_per_epoch < warm + steps + 1: raise RuntimeError(f'{t.steps_per_epoch} steps per epoch: the window would cross an epoch end')
    sc = SyncCounter()
    orig = t.task.step
    synthetic = 1 if c.dry else 0  # the dry run has no CUDA: one made-up sync warning per step goes through the counting and attribution
    def step(real, s, amp, scaler):
        sc.phase = ('step', s)
        if synthetic:
            import warnings
            warnings.warn('called a synchronizing CUDA operation (synthetic: dry-run)')
        try: return orig(real, s, amp, scaler)
        finally: sc.phase = ('loop', s)  # what follows, up to the next step, is the loop's: logging, the next batch
    t.task.step = step
    cuda = not c.dry
    with sc.counting(cuda): t.fit(until_step=warm + steps)
    window = range(warm, warm + steps)
    logging = {s for s in window if (s + 1) % log_every == 0}
    last = warm + steps - 1  # fit saves a checkpoint after it: not a step's
    in_step = Counter(s for (ph, s), _, _ in sc.events if ph == 'step')
    in_loop = Counter(s for (ph, s), _, _ in sc.events if ph == 'loop')
    plain = [s for s in window if s not in logging and s != last]
    step_mean = sum(in_step[s] for s in window) / steps
    loop_mean = sum(in_loop[s] for s in plain) / max(len(plain), 1)
    log_mean = sum(in_loop[s] for s in logging if s != last) / max(len([s for s in logging if s != last]), 1)
    steady = lambda ph, s: s in window and (ph == 'step' or (s in plain))
    src = Counter((ours, inner) for (ph, s), ours, inner in sc.events if steady(ph, s))
    n_plain = len(plain)
    sources = [dict(ganlab=o, innermost=i, per_step=round(k / steps, 3)) for (o, i), k in src.most_common(10)]
    logged = [s for s in logging if s != last]
    log_src = Counter((ours, inner) for (ph, s), ours, inner in sc.events if ph == 'loop' and s in logged)
    log_sources = [dict(ganlab=o, innermost=i, per_logging_step=round(k / max(len(logged), 1), 3)) for (o, i), k in log_src.most_common(5)]
    grad_scaler = sum(k for (o, i), k in src.items() if 'grad_scaler' in i) / steps
    d = dict(amp=str(t.amp).replace('torch.', '') if t.amp else 'off', ema=cfg.ema, batch=cfg.batch, size=cfg.size, warmup_steps=warm,
             steady_steps=steps, plain_steps=n_plain, log_every=log_every,
             syncs_per_step_in_task_step=round(step_mean, 3), syncs_per_step_in_loop=round(loop_mean, 3),
             syncs_per_step_outside_logging=round(step_mean + loop_mean, 3), syncs_per_step_from_grad_scaler=round(grad_scaler, 3),
             syncs_per_logging_step=round(log_mean, 3), syncs_in_warmup=sum(in_step[s] + in_loop[s] for s in range(warm)),
             syncs_before_first_step=sum(1 for (ph, s), _, _ in sc.events if ph == 'init'), sources=sources, logging_sources=log_sources,
             synthetic_per_step=synthetic)
    if c.dry: d['mode'] = 'dry-run: cpu: no CUDA, so the only warnings are one synthetic one per step, counted in the numbers here'
    return d


def check_syncs(c:Ctx):
    import torch, warnings
    from ganlab.data import ImageArrayDataset

    def self_test():
        sc = SyncCounter()
        with sc.counting(not c.dry):
            if c.dry:
                for _ in range(3): warnings.warn('called a synchronizing CUDA operation (synthetic, dry-run self-test)')
            else:
                x = torch.ones(4, device='cuda')
                for _ in range(3): x.sum().item()
        n = len(sc.events)
        d = dict(expected=3, seen=n, where=sc.events[0][2] if sc.events else None,
                 mode='dry-run: cpu: 3 synthetic warnings' if c.dry else '3 real .item() calls under set_sync_debug_mode("warn")')
        if n < 3: raise Failed(f'the counter saw {n} of 3 synchronisations: the counts below would be wrong', d)
        return d
    c.part('counter-self-test', self_test, need=2)

    warm, steps, log_every = (2, 6, 3) if c.dry else (5, 30, 10)
    n_dc = (8 if c.dry else 64) * (warm + steps + 3)
    dc = dict(size=16, batch=8, g_width=8, d_width=8, latent=16, amp='off') if c.dry else {}  # the default recipe (R3GAN's loss, widths 32, batch 64, EMA 0.999, amp auto)
    dc['diffaug'], dc['diffaug_ramp'] = 'translation,cutout', 1  # and DiffAugment, ramped over 1,000 images: both its paths (some images, all)
    ts = 32 if c.dry else 256
    tr = lambda seed: {'monet': noise_images(warm + steps + 3, ts, seed), 'photo': noise_images(warm + steps + 3 + 8, ts, seed + 1)}
    tsmall = dict(size=32, ngf=8, ndf=8, amp='off') if c.dry else {}
    def judged(family, settings, data, key):
        def go():
            d = sync_window(c, family, settings, data, warm, steps, log_every, key)
            left = d['syncs_per_step_outside_logging'] - d['syncs_per_step_from_grad_scaler'] - d['synthetic_per_step']
            if left > 0:
                raise Failed(f"{d['syncs_per_step_outside_logging']:g} syncs per step outside logging (target 0): "
                             + '; '.join(f"{s['per_step']:g}/step at {s['ganlab']} <- {s['innermost']}" for s in d['sources'][:3]), d)
            return d
        return go
    c.part('dcgan-default', judged('dcgan', dc, ImageArrayDataset(noise_images(n_dc, 16 if c.dry else 32, 7)), 'sync-dcgan'), need=8)
    c.part('cut-default', judged('cut', dict(samples=2, **tsmall, **(dict(nce_width=16) if c.dry else {})), tr(9), 'sync-cut'), need=10)
    c.part('cyclegan-default (information)', lambda: sync_window(c, 'cyclegan', dict(samples=2, **tsmall), tr(11), warm, steps, log_every, 'sync-cyclegan'), need=12)
    p = c.res['parts']
    c.res['summary'] = ', '.join(f"{k.split('-')[0]} {p[k]['syncs_per_step_outside_logging'] - p[k]['synthetic_per_step']:g}/step" for k in ('dcgan-default', 'cut-default', 'cyclegan-default (information)')
                                 if 'syncs_per_step_outside_logging' in p.get(k, {})) + ' outside logging (target 0)'


# ---- 4. checkpoint ---------------------------------------------------------------------------------------------------

CPU_LOAD = r'''
import json, sys, numpy as np, torch
from pathlib import Path
ck, out = sys.argv[1], Path(sys.argv[2])
d = dict(cuda_available=torch.cuda.is_available())
from ganlab.checkpoint import load_checkpoint
s = load_checkpoint(ck, map_location='cpu')
devs = set()
def walk(v):
    if isinstance(v, torch.Tensor): devs.add(str(v.device))
    elif isinstance(v, dict): [walk(x) for x in v.values()]
    elif isinstance(v, (list, tuple)): [walk(x) for x in v]
walk(s)
d['tensor_devices'] = sorted(devs)
from ganlab.cli import main
d['generate_rc'] = main(['generate', ck, '--n', '16', '--out', str(out), '--device', 'cpu', '--quiet'])
d['pngs'] = len(list(out.glob('*.png')))
print('RESULT ' + json.dumps(d))
'''


def max_diffs(a:dict, b:dict) -> dict:
    "Per network (and the EMA), the largest absolute difference between two trainer states"
    import torch
    out = {}
    pairs = [(k, a['nets'][k], b['nets'][k]) for k in a['nets']]
    if isinstance((a.get('task') or {}).get('ema'), dict): pairs.append(('ema', a['task']['ema'], b['task']['ema']))
    for k, x, y in pairs:
        m = 0.0
        for n, v in x.items():
            if torch.is_tensor(v) and v.is_floating_point() and torch.is_tensor(y.get(n)): m = max(m, float((v.float() - y[n].float().to(v.device)).abs().max()))
        out[k] = m
    return out


def check_checkpoint(c:Ctx):
    import numpy as np, torch, warnings
    from ganlab.train import train
    from ganlab.data import ImageArrayDataset
    from ganlab.generate import generate
    kw = dict(size=16, batch=8, g_width=8, d_width=8, latent=16, amp='off') if c.dry else dict(size=32, batch=64)
    spe, stop, epochs = (4, 2, 1) if c.dry else (10, 7, 2)  # on the GPU the resumed run crosses an epoch's end
    data = ImageArrayDataset(noise_images(kw['batch'] * spe, kw['size'], 12))
    base = dict(epochs=epochs, log_every=1 if c.dry else 5, samples=16, tensorboard=False, progress=False, device=c.dev, quiet=True, **kw)

    def pair(tag, extra):
        def go():
            kw = {**base, **extra}
            a = train('dcgan', dataset=data, out=c.work/f'{tag}-a', **kw)
            t = train('dcgan', dataset=data, out=c.work/f'{tag}-b', until_step=stop, **kw)
            stopped = t.step
            b = train('dcgan', dataset=data, out=c.work/f'{tag}-b', quiet=True, resume=True)
            m = metrics_rows(c.work/f'{tag}-b')
            ok, last = losses_finite(m)
            diffs = max_diffs(a.state(), b.state())
            d = dict(amp=str(b.amp).replace('torch.', '') if b.amp else 'off', device=str(b.device), stopped_at=stopped, resumed_to=b.step,
                     planned=epochs * spe, metrics_rows=len(m), rows_cover_steps=[int(m['step'].min()), int(m['step'].max())] if len(m) else None,
                     losses_finite=ok, max_abs_diff=diffs, bitwise_equal=all(v == 0 for v in diffs.values()))
            bad = []
            if stopped != stop: bad.append(f'the interrupted run stopped at {stopped}, not {stop}')
            if b.step != epochs * spe: bad.append(f'the resumed run ended at step {b.step}, not {epochs * spe}')
            if not ok: bad.append('losses not finite after resuming')
            if bad: raise Failed('; '.join(bad), d)
            return d
        return go
    c.part('resume-default', pair('ck', {}), need=10)

    def deterministic():
        was = (torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter('always')
                d = pair('det', dict(amp='off'))()
            msgs = sorted({str(x.message).splitlines()[0][:160] for x in w if 'determinis' in str(x.message)})
            d['nondeterministic_ops'] = msgs
            return d
        finally:
            torch.backends.cudnn.deterministic = was[0]
            torch.use_deterministic_algorithms(was[1])
    c.part('resume-deterministic', deterministic, need=10)

    def cpu_load():
        ck = c.work/'ck-a'/'checkpoints'/'last.pt'
        if not ck.is_file(): raise Skip('no checkpoint: resume-default did not run')
        env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
        r = subprocess.run([sys.executable, '-c', CPU_LOAD, str(ck), str(c.work/'gen-cpu')], capture_output=True, text=True, env=env, timeout=max(10, c.left() - 5))
        line = next((l for l in r.stdout.splitlines() if l.startswith('RESULT ')), None)
        if r.returncode or line is None: raise Failed(f'the CPU-only process failed (rc {r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}')
        d = json.loads(line[7:])
        from PIL import Image
        cpu = np.stack([np.asarray(Image.open(p).convert('RGB')) for p in sorted((c.work/'gen-cpu').glob('*.png'))])
        generate(ck, n=16, out=c.work/'gen-dev', device=c.dev, quiet=True)
        dev = np.stack([np.asarray(Image.open(p).convert('RGB')) for p in sorted((c.work/'gen-dev').glob('*.png'))])
        diff = np.abs(cpu.astype(int) - dev.astype(int))
        d.update(images=len(cpu), image_std=float(cpu.std()), max_pixel_diff_cpu_vs_device=int(diff.max()),
                 share_of_pixels_differing=float((diff > 0).mean()), device_side=c.dev)
        bad = []
        if d['cuda_available']: bad.append('CUDA was visible in the CPU-only process')
        if d['tensor_devices'] != ['cpu']: bad.append(f"tensors loaded on {d['tensor_devices']}")
        if d['generate_rc'] != 0 or d['pngs'] != 16: bad.append(f"ganlab generate: rc {d['generate_rc']}, {d['pngs']} images")
        if d['image_std'] < 1: bad.append('the generated images are flat')
        if d['max_pixel_diff_cpu_vs_device'] > 8: bad.append(f"CPU and {c.dev} images differ by up to {d['max_pixel_diff_cpu_vs_device']} levels")
        if bad: raise Failed('; '.join(bad), d)
        return d
    c.part('load-on-cpu', cpu_load, need=8)
    p = c.res['parts']
    bits = []
    for k in ('resume-default', 'resume-deterministic'):
        if 'max_abs_diff' in p.get(k, {}): bits.append(f"{k.split('-')[1]}: max |diff| {max(p[k]['max_abs_diff'].values()):.3g}")
    if 'max_pixel_diff_cpu_vs_device' in p.get('load-on-cpu', {}): bits.append(f"CPU generate ok, pixels within {p['load-on-cpu']['max_pixel_diff_cpu_vs_device']}")
    c.res['summary'] = '; '.join(bits)


# ---- 5. features -----------------------------------------------------------------------------------------------------

def u8set(x):
    "uint8 N x H x W x 3 images as a dataset of 3 x H x W uint8 tensors (what torch-fidelity reads)"
    import torch
    class U8Set(torch.utils.data.Dataset):
        def __init__(self, x): self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        def __len__(self): return len(self.x)
        def __getitem__(self, i): return self.x[i]
    return U8Set(x)


def relmax(a, b) -> float:
    "Largest absolute difference relative to the largest reference magnitude"
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def check_features(c:Ctx):
    import torch
    from ganlab.metrics import Extractor, FeatureStats, frechet_distance, random_fid_weights
    w = c.work/'random-fid.pth'
    t = time.perf_counter(); random_fid_weights(w, seed=0)
    c.set(weights='seeded random, FID layout (ganlab.metrics.random_fid_weights, seed 0)', weights_s=round(time.perf_counter() - t, 2))
    n_small, n_big, batch = (4, 5, 5) if c.dry else (200, 10_000, 200)
    dev = c.dev
    ext = {}
    def get(device, **kw):
        k = (device, tuple(sorted(kw.items())))
        if k not in ext: ext[k] = Extractor('fid', w, device=device, batch=batch, download=False, quiet=True, **kw)
        return ext[k]

    def cuda_vs_cpu():
        a, b = smooth_images(n_small, 32, 1), smooth_images(n_small, 32, 2, shift=40)
        out = {}
        for name, device in (('cpu', 'cpu'), ('device', dev)):
            t = time.perf_counter()
            fa, la = get(device)(a); fb, _ = get(device)(b)
            fa, la, fb = fa.cpu(), la.cpu(), fb.cpu()
            sa, sb = FeatureStats().append(fa), FeatureStats().append(fb)
            out[name] = dict(f=fa, l=la, fid=frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma), s=time.perf_counter() - t)
        d = dict(images_per_side=n_small, device=dev, features_rel_diff=relmax(out['device']['f'], out['cpu']['f']),
                 logits_rel_diff=relmax(out['device']['l'], out['cpu']['l']), fid_cpu=out['cpu']['fid'], fid_device=out['device']['fid'],
                 fid_rel_diff=abs(out['device']['fid'] - out['cpu']['fid']) / max(abs(out['cpu']['fid']), 1e-12),
                 seconds_cpu=round(out['cpu']['s'], 2), seconds_device=round(out['device']['s'], 2),
                 cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32), matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
        if c.dry: d['mode'] = 'dry-run: cpu (both sides on the CPU)'
        else:
            fa16, _ = get(dev, amp=True)(a)
            d['fp16_autocast_features_rel_diff (information)'] = relmax(fa16.cpu(), out['cpu']['f'])
        bad = []
        if d['features_rel_diff'] > 1e-3: bad.append(f"features differ by {d['features_rel_diff']:.2e} of their largest (limit 1e-3, as the notebook's cuda cell)")
        if d['fid_rel_diff'] > 1e-2: bad.append(f"FID differs by {d['fid_rel_diff']:.2e} relative (limit 1e-2)")
        if bad: raise Failed('; '.join(bad), d)
        return d
    c.part('cuda-vs-cpu', cuda_vs_cpu, need=15)

    import importlib.util
    peer = 'torch-fidelity' if importlib.util.find_spec('torch_fidelity') else 'pytorch-fid' if importlib.util.find_spec('pytorch_fid') else None
    resize = 'torch' if peer == 'pytorch-fid' else 'tf1'  # each peer's resize: torch-fidelity's is TensorFlow 1's (ganlab's default)
    big = {}

    def ours():
        a, b = smooth_images(n_big, 32, 3), smooth_images(n_big, 32, 4, shift=40)
        big.update(a=a, b=b)
        ex = get(dev, **({} if resize == 'tf1' else dict(resize='torch')))
        ex(a[:batch])  # warm: cuDNN's choices, the allocator
        if dev == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter()
        sa, sb = FeatureStats().append(ex(a)[0]), FeatureStats().append(ex(b)[0])
        t_feat = time.perf_counter() - t
        big['fid'] = fid = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
        big['s'] = t_all = time.perf_counter() - t
        d = dict(images_per_side=n_big, batch=batch, device=dev, resize=resize, fid=fid, seconds_fid=round(t_all, 2), seconds_features=round(t_feat, 2),
                 images_per_s=round(2 * n_big / t_feat, 1))
        if c.dry: d['mode'] = 'dry-run: cpu'
        return d
    c.part('fid-10k-ganlab', ours, need=15)

    def theirs():
        if 'fid' not in big: raise Skip('no ganlab FID to compare with (fid-10k-ganlab did not finish)')
        if peer is None: raise Skip('neither torch-fidelity nor pytorch-fid is installed (carry their wheels: see the docstring)')
        a, b, w_ = big['a'], big['b'], str(w)
        if peer == 'torch-fidelity':
            import torch_fidelity
            t = time.perf_counter()
            m = torch_fidelity.calculate_metrics(input1=u8set(a), input2=u8set(b), cuda=dev == 'cuda', fid=True, batch_size=batch,
                                                 feature_extractor_weights_path=w_, verbose=False, cache=False, save_cpu_ram=True)
            fid, secs = float(m['frechet_inception_distance']), time.perf_counter() - t
            version = getattr(torch_fidelity, '__version__', '?')
        else:
            import pytorch_fid
            fid, secs = pytorch_fid_distance(w, a, b, batch, dev, c.work)
            version = getattr(pytorch_fid, '__version__', '?')
        d = dict(peer=f'{peer} {version}', resize=f'{resize} (both)', images_per_side=n_big, batch=batch, device=dev, fid_ganlab=big['fid'], fid_peer=fid,
                 rel_diff=abs(big['fid'] - fid) / max(abs(fid), 1e-12), seconds_ganlab=round(big['s'], 2), seconds_peer=round(secs, 2),
                 speedup_vs_peer=round(secs / max(big['s'], 1e-9), 2))
        if c.dry: d['mode'] = 'dry-run: cpu'
        if d['rel_diff'] > 1e-3: raise Failed(f"FID {big['fid']:.6g} against {peer}'s {fid:.6g}: {d['rel_diff']:.2e} relative (limit 1e-3)", d)
        return d
    c.part('fid-10k-vs-peer', theirs, need=15)
    p = c.res['parts']
    bits = []
    if 'features_rel_diff' in p.get('cuda-vs-cpu', {}): bits.append(f"features {p['cuda-vs-cpu']['features_rel_diff']:.1e} rel, FID {p['cuda-vs-cpu']['fid_rel_diff']:.1e} rel vs CPU")
    q = p.get('fid-10k-vs-peer', {})
    if 'rel_diff' in q: bits.append(f"FID {q['images_per_side']:,} imgs: {q['fid_ganlab']:.4f} vs {q['peer'].split()[0]} {q['fid_peer']:.4f} ({q['seconds_ganlab']} s vs {q['seconds_peer']} s)")
    elif 'fid' in p.get('fid-10k-ganlab', {}): bits.append(f"FID {n_big:,} imgs: {p['fid-10k-ganlab']['fid']:.4f} in {p['fid-10k-ganlab']['seconds_fid']} s (no peer)")
    c.res['summary'] = '; '.join(bits)


def pytorch_fid_distance(w:Path, a, b, batch:int, dev:str, work:Path) -> tuple:
    "pytorch-fid's FID of two uint8 image sets with weights file `w` (through a temporary hub cache), and its seconds"
    import inspect, numpy as np, torch, scipy.linalg
    home = work/'torch-home'
    (home/'hub'/'checkpoints').mkdir(parents=True, exist_ok=True)
    from ganlab.metrics import FID_WEIGHTS
    shutil.copy(w, home/'hub'/'checkpoints'/FID_WEIGHTS.name)
    old = os.environ.get('TORCH_HOME')
    os.environ['TORCH_HOME'] = str(home)
    t = time.perf_counter()
    try:
        from pytorch_fid.inception import InceptionV3
        from pytorch_fid import fid_score
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(dev)
    finally:
        if old is None: os.environ.pop('TORCH_HOME', None)
        else: os.environ['TORCH_HOME'] = old
    stats = []
    for x in (a, b):
        fs = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                xb = torch.from_numpy(x[i:i + batch]).permute(0, 3, 1, 2).to(dev).float() / 255
                fs.append(model(xb)[0].squeeze(-1).squeeze(-1).cpu().numpy().astype(np.float64))
        f = np.concatenate(fs)
        stats += [f.mean(0), np.cov(f, rowvar=False)]
    if 'disp' not in inspect.signature(scipy.linalg.sqrtm).parameters:  # pytorch-fid 0.3.0 calls sqrtm(disp=False), gone in SciPy 1.18
        class OldLinalg:
            @staticmethod
            def sqrtm(m, disp=True): return (scipy.linalg.sqrtm(m), None) if not disp else scipy.linalg.sqrtm(m)
        fid_score.linalg = OldLinalg
    return float(fid_score.calculate_frechet_distance(*stats)), time.perf_counter() - t


# ---- 6. speed --------------------------------------------------------------------------------------------------------

def check_speed(c:Ctx):
    import statistics, torch
    from ganlab.planner import H100_MEASURED
    bt = import_bench('train')  # the plain loop (baseline) and ganlab's loop (engine), as bench/train.py runs them
    bc = import_bench('cyclegan')  # the translators' step timing
    warm, steps, repeats = (2, 2, {8: 1}) if c.dry else (50, 200, {128: 2, 512: 1})
    batches = (8,) if c.dry else (128, 512)
    amp = 'off' if c.dry else 'auto'  # auto: bf16 on an H100 (compute capability 8.0+), fp16 before that
    c.set(size=32, warmup_steps=warm, timed_steps=steps, repeats=repeats, ganlab_amp=amp, compile=False,
          earlier_h100_img_per_s={'batch 128 (amp=off)': H100_MEASURED[('dcgan', 32, 128)], 'batch 512 (amp=auto, compile=True)': H100_MEASURED[('dcgan', 32, 512)]},
          earlier_source='bench/RESULTS.md, issue 5 (H100 80GB HBM3, torch 2.11)',
          baseline='bench/train.py baseline(): float32, DataLoader, no channels-last', engine="bench/train.py engine(): train('dcgan', preset='cifar10')")

    def dcgan(batch):
        def go():
            imgs = noise_images((warm + steps) * batch, 32, 13)
            # alternating, as bench/train.py does; at batch 128 also ganlab in float32, as the earlier H100 figure was measured
            sides = ('baseline', 'ganlab') + (('ganlab_fp32',) if batch == 128 and amp != 'off' else ())
            res = {k: [] for k in sides}
            for r in range(repeats[batch]):
                for side in sides:
                    if side == 'baseline': v = bt.baseline(imgs, 32, batch, steps, warm, c.dev)
                    else: v = bt.engine(imgs, 32, batch, steps, warm, c.dev, 'off' if side == 'ganlab_fp32' else amp, False)
                    res[side].append(round(v, 1))
                    c.say(f'  batch {batch} run {r + 1} {side:11s} {v:10,.1f} img/s')
            med = {k: statistics.median(v) for k, v in res.items()}
            d = dict(batch=batch, runs=res, baseline_img_per_s=med['baseline'], ganlab_img_per_s=med['ganlab'],
                     ganlab_vs_plain=round(med['ganlab'] / med['baseline'], 3))
            if 'ganlab_fp32' in med: d.update(ganlab_fp32_img_per_s=med['ganlab_fp32'], ganlab_fp32_vs_plain=round(med['ganlab_fp32'] / med['baseline'], 3))
            return d
        return go
    for b in batches: c.part(f'dcgan-batch{b}', dcgan(b), need=12)

    def translators():
        size, tsteps, twarm = (32, 2, 1) if c.dry else (256, 10, 3)
        torch.backends.cudnn.benchmark = True  # as Trainer sets it for training on a GPU (bench/cyclegan.py leaves the default)
        out = {}
        for a in (('off',) if c.dry else ('off', 'auto')):
            tasks = {f: bc.make_task(f, size, 1, c.dev, a) for f in ('cyclegan', 'cut')}
            for _ in range(twarm):
                for t in tasks.values(): bc.one_step(t)
            secs = {f: 0.0 for f in tasks}
            for _ in range(tsteps):  # interleaved, as bench/cyclegan.py does
                for f, t in tasks.items(): secs[f] += bc.one_step(t)
            for f in tasks:
                out[f'{f}_amp_{a}_s_per_iteration'] = round(secs[f] / tsteps, 4)
                out[f'{f}_amp_{a}_dtype'] = str(tasks[f]['amp']).replace('torch.', '') if tasks[f]['amp'] else 'off'
            tasks = None
            if c.dev == 'cuda': torch.cuda.empty_cache()
        return dict(size=size, batch=1, timed_steps=tsteps, warmup_steps=twarm, cudnn_benchmark=True, **out)
    c.part('translators-256-batch1', translators, need=10)
    p = c.res['parts']
    bits = [f"b{p[k]['batch']}: {p[k]['ganlab_img_per_s']:,.0f} vs plain {p[k]['baseline_img_per_s']:,.0f} img/s" for k in p if k.startswith('dcgan') and 'batch' in p[k]]
    q = p.get('translators-256-batch1', {})
    bits += [f"{f} {q[k]} s/it" for f in ('cyclegan', 'cut') for k in [f'{f}_amp_{"off" if c.dry else "auto"}_s_per_iteration'] if k in q]
    c.res['summary'] = '; '.join(bits)


# ---- 7. cuda_cells ---------------------------------------------------------------------------------------------------

def cuda_notebooks() -> dict:
    "Notebook (relative path) -> the sources of its code cells flagged `#| cuda`"
    out = {}
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
        found = []
        for cell in cells:
            if cell.get('cell_type') != 'code': continue
            src = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
            flags = []
            for line in src.splitlines():
                s = line.strip()
                if not s: continue
                if not s.startswith('#|'): break
                flags += s[2:].replace(',', ' ').split()
            if 'cuda' in flags: found.append(src)
        if found: out[str(nb.relative_to(ROOT))] = found
    return out


# `nbdev-test --flags F NB` as the function it runs, called with keywords: the same on every nbdev (2 takes --path, 3 a
# positional path), with or without the console script on PATH (wheels installed with pip --target leave it off)
NBDEV_TEST = r"""
import inspect, sys
from nbdev.test import nbdev_test
f = getattr(nbdev_test, '__wrapped__', nbdev_test)
kw = dict(path=sys.argv[1], flags=sys.argv[2])
if 'cell_timeout' in inspect.signature(f).parameters: kw['cell_timeout'] = int(sys.argv[3])
f(**kw)  # exits with status 1 when a notebook fails
"""


def nbdev_test(nb:str, flags:str, timeout:float) -> list:
    "The command that runs nbdev-test on notebook `nb` with `flags`, each cell limited to `timeout` seconds (where nbdev can)"
    return [sys.executable, '-c', NBDEV_TEST, nb, flags, str(int(timeout))]


def check_cuda_cells(c:Ctx):
    import ast
    nbs = cuda_notebooks()
    c.set(notebooks={k: len(v) for k, v in nbs.items()})
    if not nbs: raise RuntimeError('no notebook has a `#| cuda` cell')

    def parse():
        bad = {}
        for nb, cells in nbs.items():
            for src in cells:
                code = '\n'.join('' if l.lstrip().startswith(('%', '!')) else l for l in src.splitlines())
                try: ast.parse(code)
                except SyntaxError as e: bad[nb] = f'line {e.lineno}: {e.msg}'
        d = dict(cells=sum(map(len, nbs.values())), notebooks=len(nbs))
        if bad: raise Failed(f'cells that do not parse: {bad}', d)
        return d
    c.part('cells-parse', parse, need=0)

    try: import nbdev  # noqa: F401
    except ImportError:
        c.res['parts']['nbdev-test'] = dict(status='skipped', reason='nbdev is not installed (carry its wheels: see the docstring)', essential=not c.dry)
        return
    import importlib.metadata as md
    c.set(nbdev=md.version('nbdev'), nbdev_test="nbdev.test.nbdev_test(path=NB, flags='cuda', cell_timeout=S): what `nbdev-test --flags cuda NB` runs")

    def probe():
        "The invocation on a two-cell notebook in a copy of the project's nbdev settings: the plain cell runs, the cuda one only with --flags cuda"
        proj = c.work/'nbdev-probe'
        (proj/'nbs').mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT/'pyproject.toml', proj/'pyproject.toml')  # tst_flags: nbdev-test reads the settings above the notebook
        cell = lambda i, src: dict(cell_type='code', execution_count=None, id=f'c{i}', metadata={}, outputs=[], source=src)
        nb = dict(cells=[cell(1, 'x = 1\nassert x == 1'), cell(2, "#| cuda\nraise RuntimeError('the cuda cell ran')")], nbformat=4, nbformat_minor=5,
                  metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')))
        (proj/'nbs'/'probe.ipynb').write_text(json.dumps(nb))
        runs = {}
        for key, flags in (('plain', ''), ('cuda', 'cuda')):
            r = subprocess.run(nbdev_test(str(proj/'nbs'/'probe.ipynb'), flags, 60), cwd=proj, capture_output=True, text=True, timeout=max(10, c.left()))
            runs[key] = dict(rc=r.returncode, cuda_cell_ran='the cuda cell ran' in r.stdout + r.stderr)
        d = dict(without_flags=runs['plain'], with_flags_cuda=runs['cuda'])
        if runs['plain']['rc'] != 0 or runs['plain']['cuda_cell_ran']: raise Failed('nbdev-test without flags failed, or ran the cuda cell', d)
        if not runs['cuda']['cuda_cell_ran']: raise Failed('nbdev-test --flags cuda did not run the cuda cell', d)
        return d
    c.part('nbdev-test-probe', probe, need=8)
    if c.dry:
        c.res['parts']['nbdev-test'] = dict(status='pass', mode="dry-run: cpu: the notebooks' cuda cells are listed and parsed, not run")
        pr = c.res['parts'].get('nbdev-test-probe', {})
        c.res['summary'] = (f"{sum(map(len, nbs.values()))} cuda cells in {len(nbs)} notebooks parse; nbdev-test --flags cuda "
                            f"{'runs a cuda cell' if pr.get('status') == 'pass' else 'probe failed'} (not run on the notebooks: dry-run: cpu)")
        c.save(); return

    def run_all():
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
                   OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // len(nbs))))
        limit = max(10, c.left() - 3)
        procs = {}
        for nb in nbs:
            args = nbdev_test(nb, 'cuda', limit)
            procs[nb] = (subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True), time.perf_counter())
        res = {}
        for nb, (p, t) in procs.items():
            try:
                out, _ = p.communicate(timeout=max(1, limit - (time.perf_counter() - t)))
                res[nb] = dict(rc=p.returncode, seconds=round(time.perf_counter() - t, 1), status='pass' if p.returncode == 0 else 'fail')
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
                out, _ = p.communicate()
                res[nb] = dict(rc=None, seconds=round(time.perf_counter() - t, 1), status='timeout')
            if res[nb]['status'] != 'pass': res[nb]['output_tail'] = rel_frames((out or '')[-2500:])
            c.say(f"  {nb}: {res[nb]['status']} in {res[nb]['seconds']} s")
        d = dict(notebooks=res)
        bad = [nb for nb, r in res.items() if r['status'] != 'pass']
        if bad: raise Failed('nbdev-test --flags cuda failed: ' + ', '.join(f"{nb} ({res[nb]['status']})" for nb in bad), d)
        return d
    c.part('nbdev-test', run_all, need=20)
    p = c.res['parts'].get('nbdev-test', {})
    c.res['summary'] = f"{sum(1 for r in p.get('notebooks', {}).values() if r['status'] == 'pass')}/{len(nbs)} notebooks pass" if 'notebooks' in p else ''


RUNNERS = {'launch': check_launch, 'fp16': check_fp16, 'syncs': check_syncs, 'checkpoint': check_checkpoint,
           'features': check_features, 'speed': check_speed, 'cuda_cells': check_cuda_cells}


def worker(name:str, result:Path, work:Path, budget:float, dry:bool) -> int:
    "Run one check in this process and write its result file"
    work.mkdir(parents=True, exist_ok=True)
    if name == 'checkpoint': os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # before CUDA starts: deterministic cuBLAS
    os.environ.setdefault('MPLBACKEND', 'Agg')
    c = Ctx(name, result, work, budget, dry)
    try:
        if name == 'env': probe_env(c)
        else:
            if not dry:
                import torch
                if name != 'launch' and not torch.cuda.is_available(): raise Skip('no CUDA device')  # launch must not touch CUDA here
            RUNNERS[name](c)
    except Skip as e: c.res['parts']['setup'] = dict(status='skipped', reason=str(e))
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt): raise
        tb = traceback.format_exc().strip().splitlines()
        c.res['parts']['setup'] = dict(status='fail', reason=f'{type(e).__name__}: {clip(str(e))}', traceback=[rel_frames(l) for l in tb[-14:]])
        c.say(f'FAIL: {type(e).__name__}: {e}')
    c.finish()
    return 0


# ---- the orchestrator: one process per check, time limits, the report -------------------------------------------------

class Tee:
    "Prints lines and keeps them in the log file"
    def __init__(self, path:Path): self.f = open(path, 'w', encoding='utf-8'); self.lock = threading.Lock()
    def __call__(self, line:str):
        with self.lock:
            print(line, flush=True)
            self.f.write(line + '\n'); self.f.flush()
    def close(self): self.f.close()


RUNNING = set()  # the check processes running now (killed together on Ctrl-C)


def run_worker(name:str, budget:float, dry:bool, scratch:Path, say:Tee) -> dict:
    "One check in its own process (its own session, so that a timeout kills it and whatever it forked)"
    result = scratch/f'{name}.json'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get('PYTHONPATH', '')] if p),
               PYTHONUNBUFFERED='1', GANLAB_OFFLINE='1', MPLBACKEND='Agg')
    if dry: env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')  # tiny work: one thread each never spins against a busy machine
    cmd = [sys.executable, str(HERE), '--worker', name, '--result', str(result), '--workdir', str(scratch/name), '--budget', f'{budget:.1f}'] + (['--dry-run'] if dry else [])
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
                         errors='replace')
    RUNNING.add(p)
    reader = threading.Thread(target=lambda: [say(l.rstrip('\n')) for l in p.stdout], daemon=True)
    reader.start()
    timed_out = False
    try: p.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)  # what it forked and left behind
    RUNNING.discard(p)
    reader.join(5)
    elapsed = time.perf_counter() - t
    try: res = json.loads(result.read_text())
    except (OSError, ValueError): res = dict(name=name, status='running', reason='', numbers={}, parts={}, notes=[])
    for k, part in res.get('parts', {}).items():
        if part.get('status') == 'running': part.update(status='fail', reason=f'killed while running, at {elapsed_note(timed_out, budget)}')
    if timed_out:
        res['status'], res['reason'] = 'fail', f'timed out after {budget:.0f} s (killed); its parts so far are kept' + (f"; {res['reason']}" if res.get('reason') else '')
    elif res.get('status') == 'running' or p.returncode:
        res['status'] = 'fail'
        res['reason'] = f'its process exited with status {p.returncode} before it finished' + (f"; {res['reason']}" if res.get('reason') else '')
    res['seconds'], res['budget_s'] = round(elapsed, 1), round(budget, 1)
    return res


def elapsed_note(timed_out:bool, budget:float) -> str:
    return f'the check\'s time limit of {budget:.0f} s' if timed_out else 'its process\'s end'


def report_paths(out:str) -> tuple:
    p = Path(out)
    if p.suffix.lower() == '.json': return p, p.with_name('RESULTS-section.md'), p.with_name('gpu_check.log')
    return p/'report.json', p/'RESULTS-section.md', p/'gpu_check.log'


def flatten(d, prefix='') -> list:
    "Nested numbers as (dotted key, value) rows"
    rows = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ('status', 'traceback', 'output_tail'): continue
            rows += flatten(v, f'{prefix}.{k}' if prefix else str(k))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, x in enumerate(d): rows += flatten(x, f'{prefix}[{i}]')
    else: rows.append((prefix, d))
    return rows


def md_value(v) -> str:
    s = fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v)
    return s.replace('|', '\\|').replace('\n', ' ')


def markdown(rep:dict) -> str:
    env, checks = rep['environment'], rep['checks']
    dev = env.get('device', '?')
    head = '## GPU acceptance check: `bench/gpu_check.py`' + (' (dry run on the CPU)' if rep['dry_run'] else '')
    lines = [head, '']
    what = (f"{rep['started'][:10]}, {dev}" + (f", compute capability {env['capability']}, {env.get('memory_gib')} GiB" if env.get('capability') else '')
            + f"; torch {env.get('torch')} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}), torchvision {env.get('torchvision')}, Python {env.get('python')}"
            + f"; ganlab {env.get('ganlab')}" + (f" at {env['git'][:10]}{' (uncommitted changes)' if env.get('git_dirty') else ''}" if env.get('git') else ' (a copy of the working tree, no git)')
            + f". {rep['summary']['pass']} passed, {rep['summary']['fail']} failed, {rep['summary']['skipped']} skipped, in {rep['wall_s']:.0f} s"
            + f" (budget {rep['budget_s']:.0f} s).")
    lines += [what, '', '```', f"$ {rep['command']}", '```', '']
    if env.get('packages'): lines += ['Packages: ' + ', '.join(f'{k} {v}' for k, v in env['packages'].items()) + '.', '']
    lines += ['| check | result | seconds (budget) | numbers |', '| --- | --- | --- | --- |']
    for ch in checks:
        s = ch.get('summary') or ''
        if ch['status'] != 'pass' and ch.get('reason'): s = (s + '; ' if s else '') + ch['reason'][:300]
        lines.append(f"| {ch['name']} | {ch['status']} | {ch.get('seconds', 0):.0f} ({ch.get('budget_s', 0):.0f}) | {md_value(s)} |")
    for ch in checks:
        lines += ['', f"### {ch['name']}: {ch['status']}", '', CHECKS.get(ch['name'], ('', '', ''))[2] + '.']
        if ch.get('reason'): lines += ['', f"Reason: {ch['reason']}"]
        for n in ch.get('notes', []): lines += ['', f'Note: {n}']
        rows = flatten(ch.get('numbers', {}))
        for k, p in ch.get('parts', {}).items():
            rows.append((f'{k}.status', p.get('status')))
            if p.get('reason'): rows.append((f'{k}.reason', p['reason']))
            rows += flatten({k: {x: y for x, y in p.items() if x not in ('status', 'reason', 'budget', 'essential')}})
        if rows:
            lines += ['', '| part / number | value |', '| --- | --- |']
            lines += [f'| {k} | {md_value(v)} |' for k, v in rows]
    return '\n'.join(lines) + '\n'


def print_table(rep:dict, say):
    say('')
    say(f"{'check':12s} {'result':8s} {'seconds':>14s}  numbers")
    for ch in rep['checks']:
        s = ch.get('summary') or ''
        if ch['status'] != 'pass' and ch.get('reason'): s = (s + '; ' if s else '') + ch['reason']
        say(f"{ch['name']:12s} {ch['status']:8s} {ch.get('seconds', 0):6.1f} / {ch.get('budget_s', 0):5.0f}  {s[:300]}")
    say(f"{rep['summary']['pass']} passed, {rep['summary']['fail']} failed, {rep['summary']['skipped']} skipped; {rep['wall_s']:.1f} s in all; exit status {rep['exit_status']}")


def select(only:str|None, skip:str|None) -> list:
    names = list(CHECKS)
    def parse(s):
        got = [x.strip() for x in s.split(',') if x.strip()]
        if bad := [x for x in got if x not in CHECKS]: sys.exit(f"gpu_check: unknown check(s) {', '.join(bad)}; valid: {', '.join(CHECKS)}")
        return got
    if only: names = [n for n in names if n in parse(only)]
    if skip: names = [n for n in names if n not in parse(skip)]
    return names


def fetch_wheels(dest:str) -> int:
    "pip download of DEVICE_WHEELS for the device machine's Python 3.12 on x86-64 Linux (network needed, here)"
    plats = [f'manylinux_2_{n}_x86_64' for n in (39, 35, 34, 31, 28, 27, 24, 17)] + ['manylinux2014_x86_64', 'manylinux1_x86_64']
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--python-version', '3.12', '--implementation', 'cp',
           *[x for p in plats for x in ('--platform', p)], '-d', dest, *DEVICE_WHEELS]
    print('$ ' + shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='checks, in order:\n' + '\n'.join(f'  {k:11s} {v[2]}' for k, v in CHECKS.items()))
    ap.add_argument('--out', default='bench/gpu_check/report.json', help='the JSON report (a .json path), or a folder for report.json, '
                    'RESULTS-section.md and gpu_check.log (default: %(default)s, the Markdown and the log beside it)')
    ap.add_argument('--dry-run', action='store_true', help="the whole plan on the CPU: tiny sizes, few steps, device 'cpu' (under 2 minutes on 2 cores)")
    ap.add_argument('--only', help='comma-separated checks to run')
    ap.add_argument('--skip', help='comma-separated checks to leave out')
    ap.add_argument('--list', action='store_true', help='list the checks and their budgets, and exit')
    ap.add_argument('--budget-scale', type=float, default=1.0, help='multiply every time limit (a slower GPU)')
    ap.add_argument('--jobs', type=int, default=None, help='checks run at once (default: 1; 2 in --dry-run). More than 1 on a GPU mixes their timings')
    ap.add_argument('--fetch-wheels', metavar='DIR', help='download the wheels the device machine lacks into DIR (e.g. .whl), and exit')
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    ap.add_argument('--result', help=argparse.SUPPRESS)
    ap.add_argument('--workdir', help=argparse.SUPPRESS)
    ap.add_argument('--budget', type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker: return worker(a.worker, Path(a.result), Path(a.workdir), a.budget, a.dry_run)
    if a.fetch_wheels: return fetch_wheels(a.fetch_wheels)
    i = 1 if a.dry_run else 0
    if a.list:
        for k, v in CHECKS.items(): print(f'{k:11s} {v[i] * a.budget_scale:4.0f} s  {v[2]}')
        print(f"{'(all)':11s} {TOTAL_BUDGET[i] * a.budget_scale:4.0f} s  the whole run, the device probe ({ENV_BUDGET[i]} s) included")
        return 0
    names = select(a.only, a.skip)
    rpath, mpath, lpath = report_paths(a.out)
    rpath.parent.mkdir(parents=True, exist_ok=True)
    say = Tee(lpath)
    command = 'python ' + shlex.join([rel_path(HERE) if Path(sys.argv[0]).resolve() == HERE else sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv)))
    t0, started = time.perf_counter(), datetime.datetime.now().isoformat(timespec='seconds')
    total = TOTAL_BUDGET[i] * a.budget_scale
    say(f"gpu_check: {', '.join(names)}{' (dry run on the CPU)' if a.dry_run else ''}; budget {total:.0f} s; report {rpath}")
    rep = dict(command=command, dry_run=a.dry_run, mode='dry-run: cpu' if a.dry_run else 'cuda', started=started, budget_s=total,
               environment={}, checks=[])
    scratch = Path(tempfile.mkdtemp(prefix='gpu_check-'))
    def save():
        rep['wall_s'] = round(time.perf_counter() - t0, 1)
        st = [c['status'] for c in rep['checks']]
        rep['summary'] = {'pass': st.count('pass'), 'fail': st.count('fail'), 'skipped': st.count('skipped')}
        write_json(rpath, rep)
        mpath.write_text(markdown(rep), encoding='utf-8')
    try:
        envr = run_worker('env', ENV_BUDGET[i] * a.budget_scale, a.dry_run, scratch, say)
        rep['environment'] = envr.get('numbers', {})
        e = rep['environment']
        say(f"device: {e.get('device', '?')}; torch {e.get('torch')} (CUDA {e.get('cuda')}), torchvision {e.get('torchvision')}, Python {e.get('python')}; "
            f"packages: {', '.join(f'{k} {v}' for k, v in e.get('packages', {}).items())}")
        if envr['status'] != 'pass': say(f"the device probe failed: {envr.get('reason')}")
        no_gpu = not a.dry_run and not e.get('cuda_available')
        save()
        done, lock = {}, threading.Lock()
        def one(n):
            left = total - (time.perf_counter() - t0)
            budget = min(CHECKS[n][i] * a.budget_scale, left)
            if no_gpu:
                res = dict(name=n, status='skipped', reason='no CUDA device here (run --dry-run on a CPU)', seconds=0.0, budget_s=0.0, numbers={}, parts={}, notes=[])
            elif budget < (3 if a.dry_run else 10):
                res = dict(name=n, status='fail', reason=f'not run: {max(left, 0):.0f} s left of the run\'s {total:.0f} s, too few to start it', seconds=0.0,
                           budget_s=0.0, numbers={}, parts={}, notes=[])
            else:
                say(f"== {n}: budget {budget:.0f} s; {time.perf_counter() - t0:.0f} s of {total:.0f} s gone")
                res = run_worker(n, budget, a.dry_run, scratch, say)
            say(f"-- {n}: {res['status']} in {res.get('seconds', 0):.1f} s of {res.get('budget_s', 0):.0f}"
                + (f": {res['reason']}" if res.get('reason') and res['status'] != 'pass' else '') + (f" [{res['summary']}]" if res.get('summary') else ''))
            with lock:
                done[n] = res
                rep['checks'] = [done[k] for k in names if k in done]  # the plan's order, whatever order they end in
                save()
        jobs = a.jobs or (2 if a.dry_run else 1)
        if jobs == 1:
            for n in names: one(n)
        else:  # the dry run only, by default: on a busy 2-core machine two checks at once get twice the share of the CPU
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(jobs) as pool:
                for f in [pool.submit(one, n) for n in names]: f.result()
    except KeyboardInterrupt:
        for p in list(RUNNING):
            with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
        say('interrupted: the report holds the checks done so far')
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rep['finished'] = datetime.datetime.now().isoformat(timespec='seconds')
    st = [c['status'] for c in rep['checks']]
    rep['exit_status'] = 2 if (not a.dry_run and not rep['environment'].get('cuda_available')) else (1 if 'fail' in st else 0)
    save()
    print_table(rep, say)
    say(f'report: {rpath}; Markdown section: {mpath}; log: {lpath}')
    say.close()
    return rep['exit_status']


if __name__ == '__main__':
    sys.exit(main())
