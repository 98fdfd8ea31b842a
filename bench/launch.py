"""How fast a multi-process run stops, and how it ends (issue 23): two gloo processes on the CPU, `ganlab train dcgan
--procs 2` (through `ganlab.launch.launch`, as a notebook's `train(..., nprocs=2)`) and `torchrun`.

    python bench/launch.py [--repeat 3]

For each case it prints the seconds from the event to the command's exit, the steps trained after the signal (the
last logged step when the signal was sent, against the step of the checkpoint left behind), the exit status and
whether the user saw a traceback. Cases: SIGINT to the launcher (a notebook's interrupt), SIGINT to one rank, SIGKILL
of one rank, a rank raising at step 5 (in-process `launch`), and SIGINT to one rank under torchrun."""
import argparse, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))
from test_launch import TINY, _train_failing  # the test's settings and its injected failure, run here for timings
from ganlab.core import GanlabError
from ganlab.data import draw_digits
from ganlab.launch import launch
from ganlab.checkpoint import load_checkpoint

GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
TORCHRUN = shutil.which('torchrun') or str(Path(sys.executable).parent/'torchrun')


def _args(data, out):
    a = ['train', 'dcgan', '--data', str(data), '--out', str(out), '--epochs', '500']
    for k, v in TINY.items():
        flag = '--' + k.replace('_', '-')
        a += [flag if v else '--no-' + k.replace('_', '-')] if isinstance(v, bool) else [flag, str(v)]
    return a


def _ranks(pid):
    return sorted((k for k in psutil.Process(pid).children(recursive=True) if 'train' in ' '.join(k.cmdline()) or 'spawn_main' in ' '.join(k.cmdline())),
                  key=lambda k: k.create_time())


def _last_step(out):
    lines = (out/'metrics.csv').read_text().splitlines() if (out/'metrics.csv').is_file() else []
    return int(lines[-1].split(',')[1]) if len(lines) > 1 else 0


def _case(name, data, tmp, how):
    out = tmp/name.replace(' ', '-')
    cmd = [TORCHRUN, '--nproc-per-node', '2', GANLAB, *_args(data, out)] if 'torchrun' in name else [GANLAB, *_args(data, out), '--procs', '2']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.time() + 120
    while time.time() < t and not (len([k for k in _ranks(p.pid) if 'resource_tracker' not in ' '.join(k.cmdline())]) >= 2 and _last_step(out) >= 5): time.sleep(0.1)
    ranks = [k for k in _ranks(p.pid) if 'resource_tracker' not in ' '.join(k.cmdline())]
    s0, t0 = _last_step(out), time.time()
    if how == 'launcher': p.send_signal(signal.SIGINT)
    else: ranks[-1].send_signal(signal.SIGINT if how == 'int' else signal.SIGKILL)
    _, err = p.communicate(timeout=120)
    dt = time.time() - t0
    ck = out/'checkpoints'/'last.pt'
    s1 = load_checkpoint(ck)['step'] if ck.is_file() else None
    left = sum(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks)
    return dict(case=name, seconds=dt, exit=p.returncode, steps_after=None if s1 is None else s1 - s0,
                traceback='Traceback' in err, left=left, last=err.strip().splitlines()[-1][:110] if err.strip() else '')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeat', type=int, default=3)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp/'digits.npz'
        images = draw_digits(512, seed=3, size=16)[0]
        np.savez(data, ids=np.array([f'd{i}' for i in range(len(images))]), images=images)
        for r in range(a.repeat):
            for name, how in (('SIGINT to the launcher', 'launcher'), ('SIGINT to one rank', 'int'), ('SIGKILL of one rank', 'kill'),
                              ('torchrun, SIGINT to one rank', 'int')):
                rows.append(_case(f'{name} {r}', data, tmp, how))
            out = tmp/f'raise{r}'
            t0 = time.time()
            try: launch(_train_failing, str(out), data, 5, 1, GanlabError('an injected failure'), nprocs=2)
            except GanlabError as e: last = str(e)
            raised = float(out.with_suffix('.raised').read_text())
            rows.append(dict(case=f'rank 1 raises at step 5 {r}', seconds=time.time() - raised, exit='GanlabError', steps_after=None,
                             traceback=False, left=0, last=last[:110]))
    print(f"{'case':34s} {'s to exit':>9s} {'exit':>11s} {'steps after':>11s} {'traceback':>9s} {'left':>4s}  last line")
    for w in rows:
        print(f"{w['case']:34s} {w['seconds']:9.2f} {str(w['exit']):>11s} {str(w['steps_after']):>11s} {str(w['traceback']):>9s} {w['left']:4d}  {w['last']}")


if __name__ == '__main__': main()
