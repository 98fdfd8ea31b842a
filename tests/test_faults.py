"""Faults around the data (issue 27): two commands on one output, and a full disk or a file-size limit.

Two commands writing one output are refused by a lock (`ganlab.core.OutputLock`, as Git's index.lock): the second
at once, with one line naming the holder; a lock whose process is gone is taken over with a note. A full disk is
made for real with a file-size limit (`ulimit -f`: RLIMIT_FSIZE set in the child, SIGXFSZ ignored so that the write
fails with EFBIG instead of killing the process), and with a mocked ENOSPC: one line naming the file and the room
left, never a traceback, and nothing the user had is damaged."""
import errno, json, os, resource, signal, socket, subprocess, sys, shutil, time, zipfile
from pathlib import Path
import numpy as np, pytest
from ganlab.core import GanlabError, LOCK_NAME, OutputLock, atomic_write
from ganlab.data import draw_digits

GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
TINY = ['--size', 16, '--g-width', 8, '--d-width', 8, '--latent', 16, '--batch', 32, '--samples', 4, '--no-tensorboard', '--device', 'cpu',
        '--amp', 'off', '--quiet']
ENV = {**os.environ, 'PYTHONWARNINGS': 'ignore'}


def _limit(fsize):
    "What a child runs before exec: a file-size limit of `fsize` bytes, and SIGXFSZ ignored (kept across exec), so writes fail with EFBIG"
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return pre


def ganlab(*args, fsize=None, timeout=300):
    return subprocess.run([GANLAB, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV,
                          preexec_fn=_limit(fsize) if fsize else None)


def start(*args):
    return subprocess.Popen([GANLAB, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def one_clear_line(r, *needles):
    "Exit status 2 and one line on stderr naming what is wrong: never a traceback"
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr and r.stderr.count('\n') == 1, r.stderr[-2000:]
    assert r.stderr.startswith('ganlab ') and ': error: ' in r.stderr, r.stderr
    for n in needles: assert n in r.stderr, (n, r.stderr)


def wait_for(path, p, timeout=120):
    "Wait until `path` exists while process `p` runs"
    t = time.time() + timeout
    while not Path(path).exists():
        assert p.poll() is None, p.communicate()
        assert time.time() < t, f'{path} did not appear'
        time.sleep(0.05)


def no_leftovers(folder):
    "No temporary file and no lock left anywhere under `folder`"
    left = [p.name for p in Path(folder).rglob('*') if p.name.endswith(('.tmp', '.lock', '.stale', '.rows'))]
    assert left == [], left


@pytest.fixture(scope='module')
def run(npz, tmp_path_factory):
    from ganlab.train import train
    d = tmp_path_factory.mktemp('run')
    train('dcgan', data=str(npz), out=d/'r', quiet=True, size=16, epochs=1, batch=32,
          g_width=8, d_width=8, latent=16, samples=4, tensorboard=False, progress=False, device='cpu', amp='off', fid_every=0)
    return d/'r'


# --- two commands, one output --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_trains_on_one_folder_the_second_is_refused_at_once(npz, tmp_path):
    out = tmp_path/'r'
    a = start('train', 'dcgan', '--data', npz, '--out', out, '--epochs', 3, '--log-every', 1, *TINY)
    wait_for(out/LOCK_NAME, a)
    a.send_signal(signal.SIGSTOP)  # the first run holds the folder (paused, so that the race is decided, whatever the machine's load)
    try:
        holder = json.loads((out/LOCK_NAME).read_text())
        assert (holder['pid'], holder['host']) == (a.pid, socket.gethostname()) and 'train dcgan' in holder['command']
        bs = [start('train', 'dcgan', '--data', npz, '--out', out, '--epochs', 2, *TINY, *extra) for extra in (['--overwrite'], ['--resume'])]
        for b in bs:
            _, err = b.communicate(timeout=120)
            one_clear_line(subprocess.CompletedProcess(b.args, b.returncode, '', err),
                           f'--out {out}: in use by process {a.pid} on {socket.gethostname()} (`ganlab train dcgan', 'wait for it to end')
    finally: a.send_signal(signal.SIGCONT)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    rows = (out/'metrics.csv').read_text().splitlines()
    steps = [int(r.split(',')[1]) for r in rows[1:]]
    assert rows[0].startswith('epoch,step,') and steps == list(range(1, len(steps) + 1)), rows[:5]  # one run's rows, each step once
    md = json.loads((out/'metadata.json').read_text())
    assert len(md['sessions']) == 1 and md['steps'] == steps[-1] == 12
    no_leftovers(out)


@pytest.mark.slow
def test_two_generates_into_one_folder_never_mix(run, tmp_path):
    from ganlab.generate import generate
    out, ck = tmp_path/'g', run/'checkpoints'/'last.pt'
    a = start('generate', ck, '--n', 2000, '--seed', 1, '--out', out, '--quiet')
    wait_for(out/LOCK_NAME, a)
    a.send_signal(signal.SIGSTOP)
    try: one_clear_line(ganlab('generate', ck, '--n', 2000, '--seed', 2, '--out', out, '--quiet'), f'--out {out}: in use by process {a.pid} on ', '`ganlab generate')
    finally: a.send_signal(signal.SIGCONT)
    so, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f'img-{i:06d}.png' for i in range(2000)]
    generate(ck, 3, seed=1, out=tmp_path/'one', quiet=True)
    assert all((out/n).read_bytes() == (tmp_path/'one'/n).read_bytes() for n in names[:3])  # all of the first command's seed


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_with_a_note(run, tmp_path):
    out, ck = tmp_path/'g', run/'checkpoints'/'last.pt'
    holder = subprocess.Popen([sys.executable, '-c', f'from ganlab.core import OutputLock\nOutputLock({str(out)!r}).acquire()\n'
                               'print("held", flush=True)\nimport time; time.sleep(600)'], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == 'held\n'
    one_clear_line(ganlab('generate', ck, '--n', 5, '--out', out), f'in use by process {holder.pid} on ')
    holder.kill(); holder.wait()  # kill -9: its lock stays behind
    assert (out/LOCK_NAME).is_file()
    r = ganlab('generate', ck, '--n', 5, '--out', out)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert f'note: --out {out}: took over the lock of process {holder.pid} (`' in r.stderr and 'which is no longer running' in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [f'img-{i:06d}.png' for i in range(5)]


def test_a_lock_is_released_on_every_way_out(npz, run, tmp_path, monkeypatch):
    from ganlab.train import train
    import ganlab.generate as G
    with pytest.raises(GanlabError, match='fewer than one batch'):  # an error after the lock was taken: released, and no empty folder left
        train('dcgan', data=str(npz), out=tmp_path/'new'/'r', quiet=True, batch=512, epochs=1)
    assert not (tmp_path/'new').exists()
    calls, real = iter(range(10**6)), G.png_bytes
    def ctrl_c(img):
        if next(calls) == 2: raise KeyboardInterrupt
        return real(img)
    monkeypatch.setattr(G, 'png_bytes', ctrl_c)
    with pytest.raises(KeyboardInterrupt): G.generate(run/'checkpoints'/'last.pt', 5, out=tmp_path/'g', quiet=True)
    assert sorted(p.name for p in (tmp_path/'g').iterdir()) == ['img-000000.png', 'img-000001.png']  # Ctrl-C: no lock left behind
    with OutputLock(tmp_path/'z.zip', folder=False) as lk: assert lk.lock == tmp_path/'z.zip.lock' and lk.lock.is_file()
    assert not lk.lock.exists()


@pytest.mark.slow
def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path/'o').mkdir()
    (tmp_path/'o'/LOCK_NAME).write_text(json.dumps(dict(pid=1, host='elsewhere', command='ganlab train dcgan', since='2025-01-01 00:00:00')))
    with pytest.raises(GanlabError, match=f"in use by process 1 on elsewhere .*if that process is gone, delete {tmp_path/'o'/LOCK_NAME}"):
        OutputLock(tmp_path/'o').acquire()
    (tmp_path/'o'/LOCK_NAME).write_text(json.dumps(dict(pid=2**40, host=socket.gethostname())))
    assert OutputLock(tmp_path/'o')._read()[1] == {}  # not a process id: never probed (os.kill would overflow)
    (tmp_path/'o'/LOCK_NAME).write_text('')  # empty: its writer died between creating and writing it, or it is not ours
    with pytest.raises(GanlabError, match='which names no process'): OutputLock(tmp_path/'o').acquire()


@pytest.mark.slow
def test_a_multi_process_run_holds_its_folder_in_the_launcher(npz, tmp_path):
    out = tmp_path/'r'
    a = start('train', 'dcgan', '--data', npz, '--out', out, '--procs', 2, '--epochs', 1000, '--time-budget', '15s', *TINY)
    wait_for(out/'metrics.csv', a)  # rank 0 got past the lock (inherited from its launcher) and writes
    assert json.loads((out/LOCK_NAME).read_text())['pid'] == a.pid
    one_clear_line(ganlab('train', 'dcgan', '--data', npz, '--out', out, '--resume', *TINY), f'in use by process {a.pid} on ')
    _, err = a.communicate(timeout=180)
    assert a.returncode == 0, err
    no_leftovers(out)


# --- a full disk, a file-size limit ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_under_a_file_size_limit_keeps_last_pt_and_resumes(run, npz, tmp_path):
    r2 = tmp_path/'r'; shutil.copytree(run, r2)
    last = (r2/'checkpoints'/'last.pt').read_bytes()
    r = ganlab('train', 'dcgan', '--data', npz, '--out', r2, '--resume', '--epochs', 2, '--no-tensorboard', '--quiet', fsize=len(last) // 2)
    one_clear_line(r, f"{r2/'checkpoints'}/", ': cannot be written: the file reached the size limit of this process', 'ulimit -f',
                   'free on its disk', f"{r2/'checkpoints'/'last.pt'} is complete: free some space, then continue with --resume")
    assert (r2/'checkpoints'/'last.pt').read_bytes() == last
    no_leftovers(r2)
    r = ganlab('train', 'dcgan', '--data', npz, '--out', r2, '--resume', '--epochs', 2, '--no-tensorboard', '--quiet')
    assert r.returncode == 0, r.stderr
    steps = [int(l.split(',')[1]) for l in (r2/'metrics.csv').read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)), steps  # the rows of the failed session after the checkpoint are gone


@pytest.mark.slow
def test_a_fresh_run_that_cannot_write_its_first_checkpoint(npz, tmp_path):
    r = ganlab('train', 'dcgan', '--data', npz, '--out', tmp_path/'r', '--epochs', 1, *TINY, fsize=40_000)
    one_clear_line(r, 'cannot be written: the file reached the size limit', 'training stopped before its first checkpoint')
    no_leftovers(tmp_path/'r')


@pytest.mark.slow
def test_generate_into_a_full_disk(run, tmp_path, monkeypatch):
    ck = run/'checkpoints'/'last.pt'
    r = ganlab('generate', ck, '--n', 300, '--out', tmp_path/'g.zip', '--quiet', fsize=20_000)
    one_clear_line(r, f"{tmp_path/'g.zip'}: cannot be written: the file reached the size limit", 'none of the 300 images was written')
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no zip, no temporary file, no lock
    r = ganlab('generate', ck, '--n', 3, '--out', tmp_path/'g', fsize=100)  # not even the lock fits
    one_clear_line(r, f"{tmp_path/'g'/LOCK_NAME}: cannot be written")
    assert not (tmp_path/'g').exists()
    # a folder: the disk fills after 7 files (a mocked ENOSPC); the line says which images are there
    import ganlab.generate as G
    n = iter(range(10**6))
    real = G.atomic_write
    def filling(path, *a, **kw):
        if next(n) >= 7: raise OSError(errno.ENOSPC, 'No space left on device')
        return real(path, *a, **kw)
    monkeypatch.setattr(G, 'atomic_write', filling)
    with pytest.raises(GanlabError) as e: G.generate(ck, 20, out=tmp_path/'h', quiet=True)
    assert 'no space left on the device' in str(e.value) and 'wrote 7 of the 20 images (img-000000.png to img-000006.png), not the rest' in str(e.value)
    assert sorted(p.name for p in (tmp_path/'h').iterdir()) == [f'img-{i:06d}.png' for i in range(7)]


@pytest.mark.slow
def test_monet_submit_into_a_full_disk(tmp_path):
    from PIL import Image
    from ganlab.train import train
    rng = np.random.default_rng(0)
    train('cyclegan', dataset={'monet': (rng.random((4, 32, 32, 3)) * 255).astype(np.uint8), 'photo': draw_digits(4, seed=1, size=32)[0]},
          out=tmp_path/'cg', quiet=True, size=32, ngf=4, ndf=4, g_arch='resnet6', epochs=1, batch=2, samples=2, tensorboard=False, device='cpu')
    (tmp_path/'photos').mkdir()
    for i, im in enumerate(draw_digits(6, seed=4, size=32)[0]): Image.fromarray(im).save(tmp_path/'photos'/f'p{i}.jpg')
    (tmp_path/'images.zip').write_bytes(b'an earlier submission')
    r = ganlab('monet-submit', tmp_path/'cg'/'checkpoints'/'last.pt', '--photo', tmp_path/'photos', '--out', tmp_path/'images.zip',
               '--no-mifid', '--device', 'cpu', '--quiet', fsize=30_000)
    one_clear_line(r, f"{tmp_path/'images.zip'}: cannot be written: the file reached the size limit", 'the earlier images.zip is unchanged',
                   'the submission was not written')
    assert (tmp_path/'images.zip').read_bytes() == b'an earlier submission'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cg', 'images.zip', 'photos']


@pytest.mark.slow
def test_stats_and_doctor_into_a_full_disk(tmp_path):
    from ganlab.metrics import random_fid_weights
    random_fid_weights(tmp_path/'w.pth')
    np.savez(tmp_path/'a.npz', images=draw_digits(8, seed=0, size=32)[0], ids=np.array([f'd{i}' for i in range(8)]))
    r = ganlab('stats', tmp_path/'a.npz', '--out', tmp_path/'s.npz', '--weights', tmp_path/'w.pth', '--device', 'cpu', fsize=1 << 20)
    one_clear_line(r, f"{tmp_path/'s.npz'}: cannot be written (the file reached the size limit of this process (1.0 MiB: ulimit -f); ")
    assert not (tmp_path/'s.npz').exists()
    from ganlab.noisy import write_noisy_shards
    write_noisy_shards(draw_digits(300, seed=0, size=32)[0], tmp_path/'shards', n_shards=2, show_progress=False)
    r = ganlab('doctor', tmp_path/'shards', '--out', tmp_path/'d', '--workers', 1, '--no-plots', fsize=100_000)
    one_clear_line(r, f"out: writing into {tmp_path/'d'} failed: the file reached the size limit of this process (97.7 KiB: ulimit -f); ",
                   'free on its disk')
    no_leftovers(tmp_path)


# --- mocked ENOSPC -----------------------------------------------------------------------------------------------------------

def test_a_metrics_row_that_does_not_fit_is_not_written_at_all(tmp_path, monkeypatch):
    from ganlab.runlog import RunLog
    from ganlab.config import make_config
    log = RunLog(tmp_path, make_config('dcgan', tensorboard=False), 'dcgan', quiet=True, columns=['epoch', 'step', 'images', 'seconds', 'loss_d', 'img_per_s'])
    log.row(epoch=1, step=1, images=32, seconds=0.5, loss_d=1.0)
    before = (tmp_path/'metrics.csv').read_bytes()
    real = os.write
    def short(fd, data):  # the disk takes 5 bytes of the row, then is full
        if len(data) > 5: return real(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'write', short)
    with pytest.raises(OSError): log.row(epoch=1, step=2, images=64, seconds=1.0, loss_d=0.9)
    monkeypatch.undo()
    assert (tmp_path/'metrics.csv').read_bytes() == before  # as SQLite rolls back: no half row


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path):
    (tmp_path/'a.json').write_text('{"old": 1}')
    with pytest.raises(GanlabError, match=r'a\.json: cannot be written: no space left on the device; .* free on its disk; the earlier a\.json is unchanged'):
        with atomic_write(tmp_path/'a.json', 'w') as f:
            f.write('{"new"'); raise OSError(errno.ENOSPC, 'No space left on device')
    assert (tmp_path/'a.json').read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ['a.json']
