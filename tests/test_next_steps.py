"""The first ten minutes (issue 25): every message points to the next step, and the help reads like a manual.

Each message goes through the real command line (`ganlab.cli.main`, in this process: the runs here are tiny and torch is
loaded once)."""
import contextlib, io, re
from pathlib import Path
import numpy as np
import pytest
from ganlab.cli import COMMANDS, Group, main


def cli(*args) -> tuple:
    "(exit status, stdout, stderr) of `ganlab ARGS`"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def flat(text:str) -> str:
    "Help text with argparse's line wrapping undone"
    return ' '.join(text.split())


def option(out:str, flag:str) -> str:
    "The help of option `flag` (e.g. '--data DATA') in a command's help, as printed"
    return re.search(rf'^  {re.escape(flag)}\b(.*?)(?=^  -|^\S|\Z)', out, re.M | re.S)[1]


# ---- help ---------------------------------------------------------------------------------------------------------------

def _commands():
    for k, c in COMMANDS.items():
        if isinstance(c, Group): yield from ([k, a] for a in c.actions)
        elif k != 'train': yield [k]


def test_command_lists_are_written_for_the_help():
    "No docstring tails ('...; return where') in `ganlab --help`, a group's list, or a command's own description"
    for args in (['--help'], ['kaggle', '--help'], ['classifier', '--help']):
        rc, out, _ = cli(*args)
        assert rc == 0 and not re.search(r'\breturn ', out), out
    for cmd in _commands():
        rc, out, _ = cli(*cmd, '--help')
        description = out.split('\n\n')[1]  # usage, then the description
        assert rc == 0 and 'return ' not in description and '`' not in description, (cmd, description)


def test_train_help_is_a_manual():
    rc, out, _ = cli('train', 'dcgan', '--help')
    assert rc == 0
    data = flat(option(out, '--data DATA'))
    for fmt in ('decoded.npz', '.jsonl/.jsonl.gz shards', 'folder or zip of images', 'class subfolders give labels', 'CelebA',
                'cifar-10-batches-py', 'cifar10'):
        assert fmt in data, (fmt, data)
    preset = option(out, '--preset PRESET')
    for name in ('cifar10', 'noisy-shards', 'celeba'): assert re.search(rf'^\s+{name}: \S', preset, re.M), (name, preset)
    assert 'the CIFAR-10 seed' in preset and 'the CelebA seed' in preset
    assert 'fastcut: FastCUT' in cli('train', 'cut', '--help')[1] and 'the mlp family has no presets' in cli('train', 'mlp', '--help')[1]


@pytest.mark.parametrize('family', ['dcgan', 'cgan', 'mlp', 'googlenet', 'cyclegan', 'cut'])
def test_every_switch_shows_its_default(family):
    out = cli('train', family, '--help')[1]
    switches = re.findall(r'^  --([a-z-]+), --no-\1\b(.*?)(?=^  -|\Z)', out, re.M | re.S)
    assert len(switches) >= 5
    for name, help in switches: assert '(default: ' in flat(help), (name, help)
    gen = cli('generate', '--help')[1]
    assert '--ema, --no-ema' in gen and 'the EMA generator when the run has one (default: on)' in flat(gen)


def test_removed_family_names_are_not_offered():
    rc, _, err = cli('train', 'dcgna')
    assert rc == 2 and 'did you mean dcgan?' in err and 'celeba64' not in err, err
    rc, _, err = cli('train')
    assert rc == 2 and 'celeba64' not in err
    rc, out, _ = cli('train', '--help')
    assert rc == 0 and not re.search(r'^ +celeba64 ', out, re.M) and 'celeba64 is an alias of dcgan --preset celeba' in out
    rc, out, _ = cli('train', 'celeba64', '--help')  # the alias still works, and says what it is
    assert rc == 0 and 'celeba64 is an alias of dcgan --preset celeba' in flat(out)


# ---- a run folder is a checkpoint ----------------------------------------------------------------------------------------

TINY = dict(size=16, epochs=1, batch=32, g_width=8, d_width=8, latent=16, samples=4, tensorboard=False, progress=False, device='cpu')


def tiny_run(out, **kw):
    "A tiny DCGAN run of one epoch in `out`"
    from ganlab.data import draw_digits, ImageArrayDataset
    from ganlab.train import train
    train('dcgan', dataset=ImageArrayDataset(draw_digits(64, seed=1, size=16)[0]), out=out, quiet=True, **TINY, **kw)
    return out


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny run without periodic FID: checkpoints/last.pt, no best.pt"
    return tiny_run(tmp_path_factory.mktemp('runs')/'run')


def test_generate_takes_a_run_folder_and_says_which_checkpoint(run, tmp_path):
    assert not (run/'checkpoints'/'best.pt').exists()
    rc, out, err = cli('generate', run, '--n', 3, '--out', tmp_path/'a', '--device', 'cpu')
    assert rc == 0, err
    assert out.splitlines() == [f"using {run/'checkpoints'/'last.pt'}: the run's latest checkpoint (it kept no best.pt, which training with --fid-every keeps)",
                                f"wrote 3 images to {tmp_path/'a'}"]
    rc, out, err = cli('generate', run/'checkpoints', '--n', 3, '--out', tmp_path/'b', '--device', 'cpu', '--quiet')
    assert rc == 0 and out == '', (out, err)  # its checkpoints/ folder will do too; --quiet: not a word
    rc, out, err = cli('generate', run/'checkpoints'/'last.pt', '--n', 3, '--out', tmp_path/'c', '--device', 'cpu')
    assert rc == 0 and out.splitlines() == [f"wrote 3 images to {tmp_path/'c'}"], (out, err)  # a file is used as given, nothing to say
    assert [p.read_bytes() for p in sorted((tmp_path/'a').iterdir())] == [p.read_bytes() for p in sorted((tmp_path/'b').iterdir())] \
        == [p.read_bytes() for p in sorted((tmp_path/'c').iterdir())]


@pytest.mark.slow
def test_a_run_with_periodic_fid_gives_its_best_checkpoint(tmp_path, monkeypatch):
    "Training with --fid-every keeps best.pt (the lowest FID so far): a run folder gives that one"
    from ganlab.metrics import random_fid_weights
    random_fid_weights(tmp_path/'w.pth')  # random weights in the FID layout: FID is measured, if meaninglessly
    monkeypatch.setenv('GANLAB_INCEPTION_WEIGHTS', str(tmp_path/'w.pth'))
    run = tiny_run(tmp_path/'run', fid_every=1, fid_images=16)
    assert (run/'checkpoints'/'best.pt').is_file()
    rc, out, err = cli('generate', run, '--n', 3, '--out', tmp_path/'a', '--device', 'cpu')
    assert rc == 0, err
    assert out.splitlines()[0] == f"using {run/'checkpoints'/'best.pt'}: the run's best checkpoint by the FID measured while training (last.pt is its latest)"


@pytest.mark.parametrize('cmd', ['generate', 'monet-submit'])
def test_a_folder_without_checkpoints_says_what_to_pass(tmp_path, cmd):
    (tmp_path/'run'/'samples').mkdir(parents=True); (tmp_path/'run'/'metrics.csv').write_text('')  # a run stopped before its first checkpoint
    for folder in (tmp_path/'run', tmp_path):
        rc, _, err = cli(cmd, folder, '--out', tmp_path/'out.zip', '--device', 'cpu')
        assert rc == 2 and 'no such file' not in err, err
        assert err.strip() == (f'ganlab {cmd}: error: {folder}: the folder holds no checkpoint (no checkpoints/best.pt or last.pt); '
                               'give the run folder that `ganlab train` wrote (its --out) or a checkpoint .pt file'), err
    rc, _, err = cli(cmd, tmp_path/'nowhere', '--out', tmp_path/'out.zip')
    assert rc == 2 and 'no such file or folder; give the run folder that `ganlab train` wrote (its --out) or a checkpoint .pt file' in err, err


# ---- the Inception weights -----------------------------------------------------------------------------------------------

@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    "Nowhere to find the FID weights, and no downloading"
    monkeypatch.setenv('GANLAB_OFFLINE', '1'); monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    monkeypatch.delenv('GANLAB_INCEPTION_WEIGHTS', raising=False)
    np.savez(tmp_path/'x.npz', ids=np.array(['a', 'b']), images=np.zeros((2, 8, 8, 3), np.uint8))
    return tmp_path


@pytest.mark.parametrize('args', [['fid', 'x.npz', 'x.npz'], ['stats', 'x.npz', '--out', 's.npz'], ['features', 'x.npz', '--out', 'f.csv']])
def test_missing_weights_name_the_flag(no_weights, args):
    rc, _, err = cli(*[no_weights/a if a.endswith(('.npz', '.csv')) else a for a in args], '--device', 'cpu')
    assert rc == 2 and 'FID Inception-V3 weights' in err and 'not found' in err, err
    assert err.rstrip().endswith('Next step: add --weights FILE to the command, or set GANLAB_INCEPTION_WEIGHTS=FILE.'), err
    assert '\n' not in err.strip() and 'Traceback' not in err


def test_missing_torchvision_weights_name_the_flag_only(no_weights):
    rc, _, err = cli('fid', no_weights/'x.npz', no_weights/'x.npz', '--extractor', 'torchvision', '--device', 'cpu')
    assert rc == 2 and err.rstrip().endswith('Next step: add --weights FILE to the command.'), err  # no environment variable for these


def test_a_weights_path_that_is_not_there_needs_no_next_step(no_weights):
    rc, _, err = cli('fid', no_weights/'x.npz', no_weights/'x.npz', '--weights', no_weights/'missing.pth', '--device', 'cpu')
    assert rc == 2 and f"given path {no_weights/'missing.pth'} is not a file" in err and 'Next step' not in err, err


def test_monet_submit_note_names_the_flag(no_weights):
    "monet-submit writes the zip without the weights; its note on MiFID ends with the flag"
    from PIL import Image
    from ganlab.data import draw_digits
    from ganlab.train import train
    d, rng = no_weights, np.random.default_rng(0)
    train('cyclegan', dataset={'monet': (rng.random((4, 32, 32, 3)) * 255).astype(np.uint8), 'photo': draw_digits(4, seed=1, size=32)[0]},
          out=d/'cg', quiet=True, size=32, ngf=4, ndf=4, g_arch='resnet6', epochs=1, batch=2, samples=2, tensorboard=False, device='cpu')
    for sub in ('photos', 'monet'):
        (d/sub).mkdir()
        for i, im in enumerate(draw_digits(3, seed=4, size=32)[0]): Image.fromarray(im).save(d/sub/f'p{i}.jpg')
    rc, out, err = cli('monet-submit', d/'cg', '--photo', d/'photos', '--monet', d/'monet', '--out', d/'images.zip', '--device', 'cpu')
    assert rc == 2 and 'not a valid Kaggle submission' in err, err  # 3 photos: Kaggle wants 7,000
    assert out.splitlines()[0].startswith(f"using {d/'cg'/'checkpoints'/'last.pt'}: ")
    note = next(l for l in out.splitlines() if l.startswith('no MiFID: '))
    assert note.endswith('For MiFID: --weights FILE (or set GANLAB_INCEPTION_WEIGHTS=FILE).'), note


# ---- progress where output is not a terminal ---------------------------------------------------------------------------

@pytest.mark.slow
def test_training_progress_is_lines_where_output_is_not_a_terminal(npz, tmp_path):
    "In a log or a notebook (stderr not a terminal) training says epoch, step, images/s and time left in whole lines"
    import os, subprocess, sys
    env = {**os.environ, 'GANLAB_PROGRESS_SECONDS': '0', 'PYTHONWARNINGS': 'ignore'}
    def train(out, *flags):
        return subprocess.run([sys.executable, '-c', 'from ganlab.cli import main; raise SystemExit(main())', 'train', 'dcgan',
                               '--data', str(npz), '--out', str(tmp_path/out), '--size', '16', '--batch', '16', '--g-width', '8',
                               '--d-width', '8', '--latent', '16', '--no-tensorboard', '--device', 'cpu', *flags],
                              capture_output=True, text=True, env=env, timeout=300)
    r = train('run', '--epochs', '3', '--log-every', '2')
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith('training: ')]
    assert len(lines) >= 3 and '\r' not in r.stderr, r.stderr
    assert re.search(r'^training: 24/24 step \(100%\) in \d\d:\d\d, \d\d:\d\d left, [\d.]+ step/s, epoch=3/3, loss_d=[\d.]+, '
                     r'loss_g=[\d.]+, img/s=[\d,]+$', lines[-1]), lines[-1]
    r = train('quiet', '--epochs', '1', '--no-progress')
    assert r.returncode == 0 and 'training: ' not in r.stderr, r.stderr  # --no-progress: no lines either
