"""Hostile input and faults in training, checkpoints, configs, generation and the Kaggle tools: one clear line, no traceback,
no silent loss, nothing written where it should not be. (The decoder's and the metrics' classes are in
test_hostile_records.py and test_hostile_metrics.py.)"""
import json, os, signal, subprocess, sys, shutil, time, zipfile
from pathlib import Path
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from ganlab.core import GanlabError
from ganlab.config import make_config, FAMILIES, field_types, fields_of
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab.train import train

GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
TINY = dict(size=16, epochs=1, batch=32, g_width=8, d_width=8, latent=16, samples=4, tensorboard=False, progress=False, device='cpu')

def ganlab(*args, timeout=600, **kw):
    return subprocess.run([GANLAB, *map(str, args)], capture_output=True, text=True, timeout=timeout, env={**os.environ, 'PYTHONWARNINGS': 'ignore'}, **kw)

def one_clear_line(r, *needles):
    "Exit status 2 and one line on stderr naming what is wrong: never a traceback"
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith('ganlab ') and ': error: ' in r.stderr, r.stderr[-2000:]
    for n in needles: assert n in r.stderr, (n, r.stderr)

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('run')
    train('dcgan', dataset=ImageArrayDataset(draw_digits(64, seed=1, size=16)[0]), out=d/'r', quiet=True, **TINY)
    return d/'r'

# --- configs: every value of every field is taken or refused with a GanlabError, never another exception -----------------

_VALUES = st.one_of(st.text(max_size=12), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.none(), st.lists(st.text(max_size=4), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(sorted(FAMILIES)), field=st.data(), value=_VALUES)
def test_any_setting_is_taken_or_refused_clearly(family, field, value):
    name = field.draw(st.sampled_from(fields_of(FAMILIES[family].config)))
    try: cfg = make_config(family, **{name: value})
    except GanlabError as e: assert name in str(e) or 'bad settings' in str(e) or 'config' in str(e), str(e)
    else:
        v = getattr(cfg, name)
        assert not isinstance(v, float) or np.isfinite(v)  # a number that is not finite is never a setting

@pytest.mark.slow
def test_non_finite_settings_are_refused_on_the_command_line(npz, tmp_path):
    for flag in ('--lr-d', '--gp-weight', '--beta1', '--ema'):
        for bad in ('inf', 'nan', '-inf'):
            one_clear_line(ganlab('train', 'dcgan', '--data', npz, '--out', tmp_path/'r', f'{flag}={bad}'), 'not a finite number')
    assert not (tmp_path/'r').exists()

@pytest.mark.slow
def test_a_yaml_bomb_is_refused_at_once(tmp_path, npz):
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x]'] + [f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * 9) + ']' for i in range(1, 9)]
    (tmp_path/'bomb.yaml').write_text('\n'.join(lines) + '\nepochs: 1\n')  # 9^9 strings if expanded
    t0 = time.perf_counter()
    r = ganlab('train', 'dcgan', '--data', npz, '--out', tmp_path/'r', '--config', tmp_path/'bomb.yaml')
    one_clear_line(r, 'aliases')
    assert time.perf_counter() - t0 < 60
    (tmp_path/'tag.yaml').write_text('epochs: !!python/object/apply:os.system ["echo pwned"]\n')
    one_clear_line(ganlab('train', 'dcgan', '--data', npz, '--out', tmp_path/'r', '--config', tmp_path/'tag.yaml'), 'not valid YAML')

# --- runs: losses that blow up, --overwrite, interrupted writes, Ctrl-C --------------------------------------------------

@pytest.mark.slow
def test_losses_that_blow_up_stop_the_run_with_the_last_good_checkpoint(npz, tmp_path):
    r = ganlab('train', 'dcgan', '--data', npz, '--out', tmp_path/'r', '--size', 16, '--g-width', 8, '--d-width', 8, '--latent', 16,
               '--batch', 32, '--epochs', 3, '--log-every', 1, '--no-tensorboard', '--quiet', '--device', 'cpu', '--lr-d', '1e30', '--lr-g', '1e30',
               '--loss', 'wgan-gp')
    one_clear_line(r, 'no longer finite')

def test_overwrite_removes_only_what_a_run_wrote(run, tmp_path):
    r2 = tmp_path/'r2'; shutil.copytree(run, r2)
    (r2/'samples'/'mine.png').write_bytes(b'precious'); (r2/'notes.txt').write_text('precious')
    with pytest.raises(GanlabError, match='holds files a run did not write'):
        train('dcgan', dataset=ImageArrayDataset(draw_digits(64, seed=1, size=16)[0]), out=r2, overwrite=True, quiet=True, **TINY)
    assert (r2/'samples'/'mine.png').read_bytes() == b'precious' and (r2/'checkpoints'/'last.pt').is_file()

def test_stale_temporaries_are_removed_and_a_lost_numbered_checkpoint_is_written_again(run, tmp_path, capsys):
    r2 = tmp_path/'r2'; shutil.copytree(run, r2)
    for i in range(3): (r2/'checkpoints'/f'.last.pt.x{i}.tmp').write_bytes(b'\0' * 1000)
    (r2/'checkpoints'/'epoch_001.pt').unlink()
    t = train('dcgan', dataset=ImageArrayDataset(draw_digits(64, seed=1, size=16)[0]), out=r2, resume=True, epochs=2)
    err = capsys.readouterr().err
    assert 'removed 3 temporary file(s)' in err and 'epoch_001.pt was missing' in err
    assert not list((r2/'checkpoints').glob('.*.tmp')) and (r2/'checkpoints'/'epoch_001.pt').is_file() and t.epoch == 2

@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(npz, tmp_path):
    p = subprocess.Popen([GANLAB, *map(str, ['train', 'dcgan', '--data', npz, '--out', tmp_path/'r', '--size', 16, '--g-width', 8, '--d-width', 8,
                          '--latent', 16, '--batch', 8, '--epochs', 500, '--no-tensorboard', '--device', 'cpu'])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    while not (tmp_path/'r'/'metrics.csv').is_file() and time.perf_counter() - t0 < 300: time.sleep(0.2)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert 'interrupted' in err and 'Traceback' not in err
    assert (tmp_path/'r'/'checkpoints'/'last.pt').is_file()

# --- checkpoints --------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_checkpoints_are_one_line(run, npz, tmp_path):
    s = torch.load(run/'checkpoints'/'last.pt', weights_only=True)
    from ganlab.checkpoint import save_checkpoint
    cases = {'no-nets': {k: v for k, v in s.items() if k != 'nets'}, 'string-config': dict(s, config='evil.yaml'),
             'no-family': {k: v for k, v in s.items() if k != 'family'}, 'unknown-family': dict(s, family='nope'),
             'bad-config': dict(s, config=dict(s['config'], g_width='wide'))}
    for name, state in cases.items():
        save_checkpoint(state, tmp_path/f'{name}.pt')
        one_clear_line(ganlab('generate', tmp_path/f'{name}.pt', '--n', 2, '--out', tmp_path/'g'))
    assert not Path('evil.yaml').exists() and not (tmp_path/'g').exists()
    r2 = tmp_path/'resume'; shutil.copytree(run, r2)
    save_checkpoint({k: v for k, v in s.items() if k != 'opts'}, r2/'checkpoints'/'last.pt')
    one_clear_line(ganlab('train', 'dcgan', '--out', r2, '--resume', '--epochs', 2, '--data', npz), "has no 'opts'")

@pytest.mark.slow
def test_generate_writes_only_inside_out_and_takes_only_sane_seeds(run, tmp_path):
    for prefix in ('../x', 'a/b', '..', '/tmp/x'):
        one_clear_line(ganlab('generate', run/'checkpoints'/'last.pt', '--n', 2, '--out', tmp_path/'g', '--prefix', prefix), 'prefix')
    assert not (tmp_path/'x-000000.png').exists() and not (tmp_path/'g').exists()
    for seed in (-1, 2**64): one_clear_line(ganlab('generate', run/'checkpoints'/'last.pt', '--n', 2, '--out', tmp_path/'g', '--seed', seed), 'seed')
    (tmp_path/'file').write_text('x')
    one_clear_line(ganlab('generate', run/'checkpoints'/'last.pt', '--n', 2, '--out', tmp_path/'file'), 'file')

def test_photo_names_never_write_elsewhere():
    from ganlab.generate import _renamed
    names = [n for n, _ in _renamed([(s, None) for s in ('C:\\x.jpg', '../../etc/passwd', '/abs/p.png', 'a\\b\\c.jpg', '', '..', 'ok.jpg')])]
    assert names == ['x.jpg', 'passwd.jpg', 'p.jpg', 'c.jpg', 'image.jpg', 'image-2.jpg', 'ok.jpg']
    assert all('/' not in n and '\\' not in n and not n.startswith('.') for n in names)

# --- the Kaggle tools -------------------------------------------------------------------------------------------------------

def _kernel(folder:Path, **meta):
    folder.mkdir(parents=True, exist_ok=True)
    m = dict(id='me/my-kernel', title='my kernel', code_file='k.ipynb', language='python', kernel_type='notebook', is_private=True,
             enable_gpu=False, enable_internet=False, dataset_sources=[], competition_sources=[], kernel_sources=[])
    (folder/'kernel-metadata.json').write_text(json.dumps({**m, **meta}))
    return folder

@pytest.mark.slow
def test_kaggle_push_checks_code_files_and_notebooks(tmp_path):
    (tmp_path/'outside').mkdir(); (tmp_path/'outside'/'x.ipynb').write_text(json.dumps({'cells': []}))
    k = _kernel(tmp_path/'k', code_file='../outside/x.ipynb')
    one_clear_line(ganlab('kaggle', 'push', k, '--dry-run'), 'inside the kernel')
    k = _kernel(tmp_path/'k2', code_file='k.ipynb')
    for bad in ('[1, 2]', '{"cells": "x"}', '{"cells": [1]}', '{"cells": [{"source": [1]}]}', 'not json'):
        (k/'k.ipynb').write_text(bad)
        one_clear_line(ganlab('kaggle', 'push', k, '--dry-run'), 'k.ipynb')
    (k/'kernel-metadata.json').write_text('{"id": ')
    one_clear_line(ganlab('kaggle', 'push', k, '--dry-run'), 'not valid JSON')
    (k/'kernel-metadata.json').write_bytes(b'\xff\xfe')
    one_clear_line(ganlab('kaggle', 'push', k, '--dry-run'), 'kernel-metadata.json')

# --- the command line as a whole: arguments that make no sense are a usage line or one clear error ---------------------------

_WORDS = ['train', 'dcgan', 'cgan', 'generate', 'fid', 'stats', 'doctor', 'kaggle', 'plan', 'push', '--out', '--n', '--seed', '--epochs',
          '--data', '--size', '--preset', '--config', '--class', 'all', '-1', '0', 'nan', 'inf', '1e400', '/nonexistent', 'x', '--',
          '--resume', '--batch', '--time-budget', 'soon', '12m', '--set', 'x=1', 'epochs=oops', '\udcff']

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=7))
def test_random_command_lines_never_raise(argv, tmp_path):
    from ganlab.cli import main
    import contextlib, io
    argv = [a if a != '/nonexistent' else str(tmp_path/'nope') for a in argv]
    if '--out' not in argv: argv += ['--out', str(tmp_path/'o')]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    assert rc in (0, 2), (argv, rc)
