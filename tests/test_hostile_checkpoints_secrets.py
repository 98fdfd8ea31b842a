"""Issue 27, checkpoints and secrets: a checkpoint of a newer format says a newer ganlab wrote it and which version
reads it; `ganlab kaggle push` redacts credentials in everything it relays from the kaggle client, `VERBOSE=1`
included; a kaggle.json that others may read gets the kaggle client's own warning. The push goes through the real
kaggle client to the local stand-in of the Kaggle API of `test_kaggle.py` (nothing leaves the machine)."""
import base64, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch
import ganlab
from ganlab import kaggle as gk
from ganlab.checkpoint import CKPT_FORMAT, load_checkpoint, save_checkpoint
from ganlab.core import GanlabError
from test_kaggle import StandIn, needs_kaggle, write_kernel

ROOT = Path(__file__).resolve().parent.parent
GANLAB = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
KEY = '0123456789abcdef'
BASIC = base64.b64encode(f'ganlab-tester:{KEY}'.encode()).decode()


def ganlab_cli(*args, env=None):
    return subprocess.run([GANLAB, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


# --- checkpoints ---------------------------------------------------------------------------------------------------

def test_checkpoints_carry_the_writers_version(tmp_path):
    save_checkpoint({'w': torch.zeros(2)}, tmp_path/'a.pt')
    assert load_checkpoint(tmp_path/'a.pt')['versions'] == {'ganlab': ganlab.__version__}
    save_checkpoint({'w': torch.zeros(2), 'versions': {'ganlab': '0.0.9', 'torch': 'x'}}, tmp_path/'b.pt')  # a training checkpoint's own stamp stays
    assert load_checkpoint(tmp_path/'b.pt')['versions'] == {'ganlab': '0.0.9', 'torch': 'x'}


@pytest.mark.slow
@pytest.mark.parametrize('stamp, says', [
    ({'ganlab': '0.7.2'}, "written by ganlab 0.7.2 in format 'ganlab-checkpoint-3', newer than this ganlab"),
    (None, "written by a newer ganlab in format 'ganlab-checkpoint-3'"),
    ({'ganlab': '\x1b[31m' + 'x' * 100}, 'written by a newer ganlab'),  # a stamp that is not a version is not repeated
])
def test_a_newer_format_says_who_wrote_it_and_what_reads_it(tmp_path, stamp, says):
    state = dict(format='ganlab-checkpoint-3', family='dcgan', nets={}, **({'versions': stamp} if stamp else {}))
    torch.save(state, tmp_path/'new.pt')
    with pytest.raises(GanlabError) as e: load_checkpoint(tmp_path/'new.pt')
    msg = str(e.value)
    assert says in msg and 'not a ganlab checkpoint' not in msg and 'pip install -U ganlab' in msg, msg
    assert f'this ganlab ({ganlab.__version__}) reads' in msg and repr(CKPT_FORMAT) in msg and '\n' not in msg and '\x1b' not in msg
    if stamp and stamp['ganlab'] == '0.7.2': assert 'ganlab 0.7.2 or later reads it' in msg
    r = ganlab_cli('generate', tmp_path/'new.pt', '--n', 4, '--out', tmp_path/'out', '--device', 'cpu')  # the command: one line
    assert r.returncode == 2 and 'Traceback' not in r.stderr and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path/'out').exists()


def test_a_foreign_file_is_still_not_a_ganlab_checkpoint(tmp_path):
    for fmt in ('ganlab-checkpoint-0', 'ganlab-checkpoint-x', 'other-3', 3):
        torch.save({'format': fmt}, tmp_path/'x.pt')
        with pytest.raises(GanlabError, match='not a ganlab checkpoint'): load_checkpoint(tmp_path/'x.pt')


# --- secrets -------------------------------------------------------------------------------------------------------

def _no_secret(text:str):
    for s in (KEY, BASIC): assert s not in text, (s, text[-3000:])


@needs_kaggle
def test_verbose_push_relays_no_credentials(tmp_path, capsys):
    "With VERBOSE=1 the client prints its request headers; what ganlab relays (echo, result, error) has no key"
    with StandIn() as api:
        env = dict(api.env(tmp_path/'home'), VERBOSE='1')
        r = gk.push(write_kernel(tmp_path/'k'), env=env)
        echoed = capsys.readouterr()
        assert 'Authorization: Basic [redacted]' in r['output'] and 'successfully pushed' in r['output']  # relayed, redacted
        _no_secret(r['output']); _no_secret(echoed.out + echoed.err)
        # the CLI, with the credentials and VERBOSE=1 in its own environment
        p = ganlab_cli('kaggle', 'push', write_kernel(tmp_path/'k2'), env=dict(env, PYTHONPATH=str(ROOT)))
        assert p.returncode == 0 and 'successfully pushed' in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
        _no_secret(p.stdout + p.stderr)
    assert [q['headers']['Authorization'] for q in api.requests if q['path'].endswith('SaveKernel')] == [f'Basic {BASIC}'] * 2  # the client still sent it


def test_a_failed_push_quotes_the_client_redacted(tmp_path, monkeypatch, capsys):
    "A push the client reports as failed: the error quotes the client's output (a stand-in client here), without the key"
    fake = tmp_path/'kaggle_stand_in.py'
    body = json.dumps({'username': 'ganlab-tester', 'key': KEY})
    fake.write_text(f'import sys\nprint("Authorization: Basic {BASIC}")\nprint({body!r}, file=sys.stderr)\n'
                    'print("Kernel push error: 403 Forbidden")\nsys.exit(1)\n')
    monkeypatch.setattr(gk, 'kaggle_command', lambda: [sys.executable, str(fake)])
    env = dict(os.environ, HOME=str(tmp_path/'home'), KAGGLE_CONFIG_DIR=str(tmp_path/'home'), KAGGLE_USERNAME='ganlab-tester', KAGGLE_KEY=KEY)
    with pytest.raises(GanlabError, match='kaggle kernels push failed') as e: gk.push(write_kernel(tmp_path/'k'), env=env)
    msg = str(e.value)
    assert 'Authorization: Basic [redacted]' in msg and '"key": "[redacted]"' in msg and 'Kernel push error: 403 Forbidden' in msg, msg
    _no_secret(msg); _no_secret(capsys.readouterr().out)


def test_redact_patterns():
    text = '\n'.join([f'Authorization: Basic {BASIC}', 'authorization: bearer abcdefghijklmnop', f'{{"username": "a", "key": "{KEY}"}}',
                      f"{{'Authorization': 'Basic {BASIC}'}}", f'KAGGLE_KEY={KEY}', f'GET /?api_key={KEY}&x=1', f'\\"token\\": \\"{KEY}\\"'])
    out = gk.redact(text)
    _no_secret(out); assert 'abcdefghijklmnop' not in out
    assert out.count('[redacted]') == 7 and '"username": "a"' in out, out
    assert gk.redact(gk.redact(text)) == out  # redacting twice changes nothing
    plain = 'Kernel version 3 successfully pushed.  Basic checks passed; the keyboard works: yes'
    assert gk.redact(plain) == plain
    assert gk.redact(f'printed as {KEY[::-1]}', [KEY[::-1]]) == 'printed as [redacted]'  # a known value, however printed


def test_a_kaggle_json_readable_by_others_gets_the_clients_warning(tmp_path, capsys):
    if os.name == 'nt': pytest.skip('no group or other read bits on Windows (the kaggle client does not warn there either)')
    home = tmp_path/'home'; (home/'.kaggle').mkdir(parents=True)
    kj = home/'.kaggle'/'kaggle.json'
    kj.write_text(json.dumps({'username': 'ada', 'key': KEY}))
    for mode, warned in ((0o600, False), (0o640, True), (0o604, True)):
        gk._KEY_FILES_WARNED.clear()
        kj.chmod(mode)
        assert gk.kaggle_username(env={'HOME': str(home)}) == 'ada'  # still used, as the client does
        err = capsys.readouterr().err
        want = f"Warning: Your Kaggle API key is readable by other users on this system! To fix this, you can run 'chmod 600 {kj}'"
        assert (err.strip() == want) if warned else err == '', (oct(mode), err)
    # the kaggle client's own words, from its source
    import importlib.util
    spec = importlib.util.find_spec('kaggle')
    if spec is not None:
        src = (Path(spec.origin).parent/'api'/'kaggle_api_extended.py').read_text()
        assert '"Warning: Your Kaggle API key is readable by other "' in src and "'chmod 600 {}'" in src


@needs_kaggle
def test_push_warns_once_for_a_readable_kaggle_json(tmp_path):
    "ganlab warns as it reads kaggle.json; the client's copy of the same line is not relayed a second time"
    with StandIn() as api:
        env = api.env(tmp_path/'home')
        env.pop('KAGGLE_USERNAME'); env.pop('KAGGLE_KEY')
        kj = Path(env['KAGGLE_CONFIG_DIR'])/'kaggle.json'
        kj.write_text(json.dumps({'username': 'ganlab-tester', 'key': KEY})); kj.chmod(0o644)
        p = ganlab_cli('kaggle', 'push', write_kernel(tmp_path/'k'), env=dict(env, PYTHONPATH=str(ROOT)))
    out = p.stdout + p.stderr
    assert p.returncode == 0 and out.count('Your Kaggle API key is readable by other users') == 1, out[-3000:]
    assert f"'chmod 600 {kj}'" in p.stderr
