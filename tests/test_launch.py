"""Multi-process runs stop together: a rank that raises or dies ends the group at once with its error, and Ctrl-C
(to the launcher, as a notebook's interrupt sends it, or to one rank) stops every process after the same step with a
checkpoint that resumes. Two gloo processes on the CPU, through `ganlab.launch.launch` and the `ganlab` command."""
import os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, psutil, pytest, torch
from ganlab.core import GanlabError
from ganlab.data import draw_digits
from ganlab.launch import launch, LaunchError
from ganlab.checkpoint import load_checkpoint

GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
TINY = dict(size=16, batch=32, g_width=8, d_width=8, latent=16, log_every=1, samples=4, tensorboard=False, progress=False,
            device='cpu', amp='off', fid_every=0)


@pytest.fixture(scope='module')
def digits_npz(tmp_path_factory):
    p = tmp_path_factory.mktemp('data')/'digits.npz'
    images = draw_digits(512, seed=3, size=16)[0]
    np.savez(p, ids=np.array([f'd{i}' for i in range(len(images))]), images=images)
    return p


def _ranks(pid:int) -> list:
    "The training processes a launcher started (spawned interpreters; not multiprocessing's resource tracker)"
    try: kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess: return []
    out = []
    for k in kids:
        try:
            if 'spawn_main' in ' '.join(k.cmdline()): out.append(k)
        except psutil.NoSuchProcess: pass
    return out


def _train_failing(out, data, at_step, rank, error):
    "Train the dcgan, with process `rank` raising `error` at step `at_step` (run in each launched process)"
    from ganlab.tasks import DCGANTask
    from ganlab.train import train
    step = DCGANTask.step
    def failing(self, real, s, *a):
        if s == at_step and self.dist.rank == rank:
            Path(out).with_suffix('.raised').write_text(repr(time.time()))
            raise error
        return step(self, real, s, *a)
    DCGANTask.step = failing
    train('dcgan', data=str(data), out=out, quiet=True, epochs=50, **TINY)


@pytest.mark.slow
@pytest.mark.parametrize('error,kind,says', [(GanlabError('an injected failure'), GanlabError, 'process 1 of 2: an injected failure'),
                                              (ValueError('an injected bug'), LaunchError, 'process 1 of 2 raised ValueError: an injected bug')])
def test_a_rank_that_raises_ends_the_group_with_its_error(tmp_path, digits_npz, error, kind, says):
    out = tmp_path/'run'
    with pytest.raises(kind) as e: launch(_train_failing, str(out), digits_npz, 5, 1, error, nprocs=2)
    ended = time.time()
    assert says in str(e.value)
    if kind is LaunchError: assert 'Traceback' in str(e.value) and '_train_failing' in str(e.value)  # the rank's own traceback
    assert ended - float(out.with_suffix('.raised').read_text()) < 30
    assert _ranks(os.getpid()) == []  # rank 0, which waited in a collective for rank 1, is gone too


def _cli(out, data, *extra):
    "`ganlab train dcgan --procs 2` on the tiny settings, started in the background"
    args = [GANLAB, 'train', 'dcgan', '--data', str(data), '--out', str(out), '--procs', '2', *extra]
    for k, v in TINY.items():
        flag = '--' + k.replace('_', '-')
        args += [flag if v else '--no-' + k.replace('_', '-')] if isinstance(v, bool) else [flag, str(v)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})


def _wait_for_steps(p, out, n=3, timeout=120):
    "Wait until the run has logged `n` rows, i.e. both processes are training"
    t = time.time() + timeout
    while time.time() < t:
        assert p.poll() is None, p.communicate()
        csv = out/'metrics.csv'
        if csv.is_file() and len(csv.read_text().splitlines()) > n and len(_ranks(p.pid)) == 2: return
        time.sleep(0.2)
    p.kill(); raise AssertionError('the run did not start training')


@pytest.mark.slow
@pytest.mark.parametrize('to', ['launcher', 'rank 1'])
def test_ctrl_c_stops_every_process_with_a_checkpoint_that_resumes(tmp_path, digits_npz, to):
    out = tmp_path/'run'
    p = _cli(out, digits_npz, '--epochs', '200')
    _wait_for_steps(p, out)
    ranks = _ranks(p.pid)
    t0 = time.time()
    os.kill(p.pid if to == 'launcher' else sorted(ranks, key=lambda r: r.create_time())[-1].pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert time.time() - t0 < 30, err
    assert 'interrupted' in err and 'Traceback' not in err, err
    assert not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks)
    stopped = load_checkpoint(out/'checkpoints'/'last.pt')
    assert stopped['world'] == 2 and stopped['step'] > 0
    # the checkpoint resumes: three more steps, on two processes again
    r = subprocess.run([GANLAB, 'train', 'dcgan', '--out', str(out), '--resume', '--procs', '2', '--until-step', str(stopped['step'] + 3)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out/'checkpoints'/'last.pt')['step'] == stopped['step'] + 3


@pytest.mark.slow
def test_a_killed_rank_ends_the_command_with_one_line(tmp_path, digits_npz):
    out = tmp_path/'run'
    p = _cli(out, digits_npz, '--epochs', '200')
    _wait_for_steps(p, out)
    ranks = _ranks(p.pid)
    ranks[-1].send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2, err
    assert 'was killed by SIGKILL' in err and 'Traceback' not in err, err
    assert not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks)


@pytest.mark.slow
def test_under_torchrun_a_ctrl_c_to_one_rank_stops_both_after_the_same_step(tmp_path, digits_npz):
    "torchrun's ranks each take their own signals; without an agreement the other rank would wait in a collective until its timeout"
    torchrun = shutil.which('torchrun') or str(Path(sys.executable).parent/'torchrun')
    args = [torchrun, '--nproc-per-node', '2', GANLAB, 'train', 'dcgan', '--data', str(digits_npz), '--out', str(tmp_path/'run'), '--epochs', '200']
    for k, v in TINY.items():
        flag = '--' + k.replace('_', '-')
        args += [flag if v else '--no-' + k.replace('_', '-')] if isinstance(v, bool) else [flag, str(v)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    t = time.time() + 120
    while time.time() < t:
        kids = [k for k in psutil.Process(p.pid).children() if 'train' in ' '.join(k.cmdline())]
        csv = tmp_path/'run'/'metrics.csv'
        if len(kids) == 2 and csv.is_file() and len(csv.read_text().splitlines()) > 3: break
        assert p.poll() is None, p.communicate()
        time.sleep(0.2)
    t0 = time.time()
    sorted(kids, key=lambda k: k.create_time())[-1].send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert time.time() - t0 < 30, err
    assert err.count('ganlab train: interrupted') == 2, err  # both ranks stopped themselves (none was killed waiting)
    assert load_checkpoint(tmp_path/'run'/'checkpoints'/'last.pt')['step'] > 0
