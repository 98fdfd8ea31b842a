"""No absolute path of a developer's machine in what the project shows people: README.md, the notebooks (sources and
committed outputs, nbs/**/*.ipynb) and bench/ (RESULTS.md, the scripts and the results kept beside them).

A machine path is this checkout's own absolute path or its parent's (computed here, from this file's resolved
location), the user's home, or a path that only a developer's machine has: `/home/NAME`, `/Users/NAME`,
`C:\\Users\\NAME`, `/root`, `/work/`, pytest's `/tmp/pytest-of-USER`, macOS's `/var/folders/`, or anything inside a
virtual environment or an installed package (`.venv/`, `site-packages`) under an absolute path. What is absolute on
every machine stays allowed: `/kaggle/input`, `/kaggle/working`, `/tmp/...` in an example, `/dev/null`, `/etc/...`,
`/usr/bin/...`, and URLs (`https://host/home/...` is not a path). Notebook images are not read (base64 is not text).

The files are those git would commit (tracked, or new and not ignored); outside a git checkout, every file under
README.md, nbs/ and bench/. A leak is fixed where it was made: a notebook output is re-made by running its cell with
the path printed relative (or the output cleared), a script names the folder relative to the project."""
import functools, json, re, shutil, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT = {'.md', '.py', '.sh', '.ipynb', '.json', '.csv', '.txt', '.yaml', '.yml', '.toml', '.cfg', '.ini', '.html'}
_START = r'(?:(?<![\w.~/\\-])|(?<=file://))'  # where an absolute path may begin: not inside a word, a path or a URL's path
_END = r'(?![\w.-])'
PATTERNS = [  # (a path only a developer's machine has, what it is)
    (_START + r'/home/[\w.-]+', 'a home folder (/home/NAME)'),
    (_START + r'/Users/[\w.-]+', 'a macOS home folder (/Users/NAME)'),
    (r'(?<![\w.-])[A-Za-z]:[\\/]+Users[\\/]+[\w.-]+', 'a Windows home folder'),
    (_START + r'/root' + _END, "root's home folder (/root)"),
    (_START + r'/work/', 'a workspace folder (/work/)'),
    (r'/tmp/pytest-of-[\w.-]+', "pytest's temporary folder, which names the user"),
    (_START + r'/(?:private/)?var/folders/', "macOS's per-user temporary folder"),
    (_START + r'/(?:[^\s/"\'`<>]+/)*?(?:site-packages|dist-packages)' + _END, 'an installed package under an absolute path'),
    (_START + r'/(?:[^\s/"\'`<>]+/)*?\.?venv/', 'a virtual environment under an absolute path'),
]


def machine_folders(root:Path=ROOT) -> list[Path]:
    "The folders that name this machine: the checkout, its parent and the user's home (resolved; `/` left out)"
    out = []
    for p in (root, root.parent, Path.home()):
        try: p = p.resolve()
        except OSError: continue
        if p != Path(p.anchor) and p not in out: out.append(p)
    return out


@functools.lru_cache(maxsize=8)
def _pattern(folders:tuple) -> tuple:
    "One regular expression for every machine path (a group each), and what each group is"
    own = [(_START + re.escape(str(f)) + _END, f"this machine's {f}") for f in folders]
    pats = own + PATTERNS
    return re.compile('|'.join(f'(?P<g{i}>{rx})' for i, (rx, _) in enumerate(pats))), {f'g{i}': why for i, (_, why) in enumerate(pats)}


def find_machine_paths(text:str, folders=()) -> list[str]:
    "Every machine path in `text`, each with what it is: 'PATH (WHY)'"
    rx, why = _pattern(tuple(folders))
    return [f'{m.group(0)} ({why[m.lastgroup]})' for m in rx.finditer(text)]


def _notebook_texts(path:Path):
    "(where, text) of a notebook: each cell's source and text outputs, and the metadata; images are skipped"
    nb = json.loads(path.read_text(encoding='utf-8'))
    yield 'metadata', json.dumps(nb.get('metadata', {}), ensure_ascii=False)
    join = lambda t: ''.join(t) if isinstance(t, list) else str(t)
    for i, c in enumerate(nb.get('cells', [])):
        yield f'cell {i} source', join(c.get('source', ''))
        yield f'cell {i} metadata', json.dumps(c.get('metadata', {}), ensure_ascii=False)
        for j, o in enumerate(c.get('outputs', [])):
            parts = [o.get('text', ''), o.get('evalue', ''), '\n'.join(o.get('traceback', []))]
            parts += [join(v) if isinstance(v, (str, list)) else json.dumps(v, ensure_ascii=False)
                      for k, v in o.get('data', {}).items() if not k.startswith('image/')]
            yield f'cell {i} output {j}', '\n'.join(join(p) for p in parts if p)


def _files(root:Path) -> list[Path]:
    "README.md, nbs/**/*.ipynb and bench/'s text files: those git would commit, or all of them outside a git checkout"
    names = None
    if (root/'.git').exists() and shutil.which('git'):
        r = subprocess.run(['git', '-C', str(root), 'ls-files', '-z', '--cached', '--others', '--exclude-standard', '--', 'README.md', 'nbs', 'bench'],
                           capture_output=True, text=True)
        if r.returncode == 0: names = [root/n for n in r.stdout.split('\0') if n]
    if names is None: names = [root/'README.md', *(root/'nbs').rglob('*'), *(root/'bench').rglob('*')]
    keep = lambda p: p.is_file() and (p.name == 'README.md' and p.parent == root or p.parts[len(root.parts)] == 'nbs' and p.suffix == '.ipynb'
                                      or p.parts[len(root.parts)] == 'bench' and p.suffix in TEXT)
    return sorted({p for p in names if keep(p)})


def scan(root:Path, folders=()) -> list[str]:
    "Every machine path in the files of the checkout at `root`: 'FILE:WHERE: PATH (WHY)'"
    out = []
    for f in _files(root):
        rel = f.relative_to(root).as_posix()
        if f.suffix == '.ipynb':
            try: texts = list(_notebook_texts(f))
            except (ValueError, UnicodeDecodeError) as e: out.append(f'{rel}: not a readable notebook ({e})'); continue
        else:
            try: texts = [(f'line {i}', l) for i, l in enumerate(f.read_text(encoding='utf-8').splitlines(), 1)]
            except UnicodeDecodeError: continue
        out += [f'{rel}:{where}: {hit}' for where, t in texts for hit in find_machine_paths(t, folders)]
    return out


def test_no_machine_paths_in_readme_notebooks_or_bench():
    leaks = scan(ROOT, machine_folders())
    assert not leaks, 'absolute paths of a developer\'s machine (print them relative to the project, or clear the output):\n' + '\n'.join(leaks)


# --- the scan can fail -------------------------------------------------------------------------------------------

@pytest.fixture
def copy(tmp_path):
    "A copy of README.md, the Kaggle kernels and bench/RESULTS.md, which the scan finds clean"
    for rel in ('README.md', 'nbs/kaggle/monet.ipynb', 'nbs/kaggle/noisy_dcgan.ipynb', 'bench/RESULTS.md', 'bench/gpu_check.py'):
        (tmp_path/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy(ROOT/rel, tmp_path/rel)
    assert not scan(tmp_path, machine_folders()), scan(tmp_path, machine_folders())
    return tmp_path


def _plant(root:Path, place:str, text:str):
    "Put `text` in `root`'s README, a notebook's source or output, RESULTS.md or a bench script"
    if place in ('README.md', 'bench/RESULTS.md', 'bench/gpu_check.py'):
        with open(root/place, 'a', encoding='utf-8') as f: f.write(f'\nsee {text} for it\n')
        return
    nb = root/'nbs'/'kaggle'/'monet.ipynb'
    d = json.loads(nb.read_text())
    cell = next(c for c in d['cells'] if c['cell_type'] == 'code')
    if place == 'stream': cell['outputs'] = [{'output_type': 'stream', 'name': 'stdout', 'text': ['writing to\n', f'{text}\n']}]
    elif place == 'result': cell['outputs'] = [{'output_type': 'execute_result', 'data': {'text/plain': [f"PosixPath('{text}')"]}, 'metadata': {}, 'execution_count': 1}]
    elif place == 'source': cell['source'] += ['\n', f'# {text}']
    nb.write_text(json.dumps(d, indent=1))


PLACES = ['README.md', 'stream', 'result', 'source', 'bench/RESULTS.md', 'bench/gpu_check.py']
LEAKS = [lambda: f'{ROOT}/nbs/kaggle', lambda: f'{ROOT.parent}/shared/data/monet', lambda: f'{Path.home().resolve()}/.cache/torch',
         lambda: str(ROOT), lambda: '/home/alice/ganlab/runs/a', lambda: '/Users/alice/ganlab', lambda: 'C:\\Users\\alice\\ganlab',
         lambda: '/root/.cache/torch/hub', lambda: '/work/ganlab/bench', lambda: '/tmp/pytest-of-alice/pytest-3/test0/run',
         lambda: '/var/folders/x1/abc/T/run', lambda: '/opt/conda/lib/python3.10/site-packages/torch/nn/x.py',
         lambda: '/srv/ganlab/.venv/bin/python', lambda: 'file:///home/alice/x.png']


@pytest.mark.parametrize('i', range(len(LEAKS)))
def test_a_planted_machine_path_is_found(copy, i):
    leak, place = LEAKS[i](), PLACES[i % len(PLACES)]
    _plant(copy, place, leak)
    found = scan(copy, machine_folders())
    assert found and all(f.split(':')[0] in (place if place.startswith(('README', 'bench')) else 'nbs/kaggle/monet.ipynb') for f in found), (leak, place, found)


ALLOWED = ['/kaggle/input/gan-getting-started', '/kaggle/working/images.zip', '/tmp/ganlab-demo', '/dev/null', '/etc/xdg/pip/pip.conf',
           '/usr/bin/chromium', '/proc/self/status', 'https://github.com/root/home/Users/x', 'http://127.0.0.1:7860/', '~/.cache/torch/hub',
           'nbs/kaggle/work/x', '$HOME/.kaggle/kaggle.json', 'the part after site-packages', 'runs/.venv-free/x', 'kaggle.com/work/x']


@pytest.mark.parametrize('text', ALLOWED)
def test_what_every_machine_has_is_allowed(copy, text):
    for place in PLACES: _plant(copy, place, text)
    assert not scan(copy, machine_folders()), scan(copy, machine_folders())


def test_notebook_images_are_not_read(copy):
    nb = copy/'nbs'/'kaggle'/'monet.ipynb'
    d = json.loads(nb.read_text())
    next(c for c in d['cells'] if c['cell_type'] == 'code')['outputs'] = [
        {'output_type': 'display_data', 'data': {'image/png': 'iVBORw0KGgo/root/AAAA/home/abc/Users/x=', 'text/plain': ['<IPython.core.display.Image object>']}, 'metadata': {}}]
    nb.write_text(json.dumps(d))
    assert not scan(copy, machine_folders())
