"""The Kaggle kernels in nbs/kaggle/, run as Kaggle runs them: every cell in order in a Jupyter kernel, a stand-in
`/kaggle` tree (`input/` built from ../shared/data, `working/`), `KAGGLE_KERNEL_RUN_TYPE` set, and two training
processes (gloo on the CPU, where a T4x2 has two GPUs). A guard in the notebook's process fails the run if that
process touches CUDA before a launch: a process that has initialised CUDA cannot fork children that use it, and on
a T4x2 the memory it holds belongs to the training processes.

What differs from Kaggle, and why: the first cell (`pip install` of the attached wheel; `#| notest`) is not run, as
ganlab is installed here already; `GANLAB_REHEARSAL=1` picks each kernel's tiny settings (the competition's run takes
hours); `GANLAB_CPU_PROCS=2` stands for the two GPUs. The executed notebooks are left in test-artefacts/kaggle/.

Then each kernel as a user runs it on their own machine (`jupyter nbconvert --execute`, or Jupyter): every cell, the
install cell included, from nbs/kaggle/ with no /kaggle, no rehearsal variables and matplotlib's own backend. It must
print no ERROR, show its figures as PNGs (not `<Figure size ...>`), and write only to the folder its environment report
names (issue 25)."""
import json, os, re, shutil, zipfile
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent/'shared'/'data'
ARTEFACTS = REPO/'test-artefacts'/'kaggle'

GUARD = '''# the rehearsal's guard (not part of the kernel): CUDA touched in this process before a launch fails the run
import os, traceback, torch, ganlab.launch as _launch
_GUARD = dict(pid=os.getpid(), touched=[], launches=0)
def _tripwire(name, f):
    def wrapped(*a, **k):
        if os.getpid() == _GUARD['pid']: _GUARD['touched'].append(f"{name}, from:\\n{''.join(traceback.format_stack(limit=8)[:-1])}")
        return f(*a, **k)
    return wrapped
torch._C._cuda_getDeviceCount = _tripwire('cudaGetDeviceCount (torch.cuda.is_available, torch.cuda.device_count)', torch._C._cuda_getDeviceCount)
if hasattr(torch._C, '_cuda_init'): torch._C._cuda_init = _tripwire('CUDA initialisation (torch.cuda._lazy_init)', torch._C._cuda_init)
_pick = _launch.pick_start_method
def _guarded_pick(fn, method=None):
    if os.getpid() == _GUARD['pid']:
        _GUARD['launches'] += 1
        if _GUARD['touched']: raise RuntimeError('kaggle rehearsal guard: the notebook process touched CUDA before this launch: ' + _GUARD['touched'][0])
        if _launch.fork_poisoned(): raise RuntimeError('kaggle rehearsal guard: the notebook process initialised CUDA before this launch')
    return _pick(fn, method)
_launch.pick_start_method = _guarded_pick'''

CHECK = '''# the rehearsal's guard, at the end: the training processes were launched
print('launches from the notebook process:', _GUARD['launches'])
assert _GUARD['launches'] >= 1'''


def _write_photo_tfrecord(path:Path, n:int=40):
    "A Kaggle-style photo shard (`image_name`, `image`, `target`) of the first `n` CelebA faces, resized to 256x256 JPEGs"
    import io
    from PIL import Image
    from ganlab.unpaired import make_example, write_tfrecord
    recs = []
    with zipfile.ZipFile(SHARED/'celeba-10k-jpg.zip') as z:
        names = sorted(m for m in z.namelist() if m.lower().endswith('.jpg'))[:n]
        for name in names:
            img = Image.open(io.BytesIO(z.read(name))).convert('RGB').resize((256, 256))
            buf = io.BytesIO(); img.save(buf, 'JPEG', quality=90)
            recs.append(make_example({'image_name': Path(name).stem, 'image': buf.getvalue(), 'target': 'photo'}))
    write_tfrecord(path, recs)


@pytest.fixture(scope='module')
def kaggle_root(tmp_path_factory):
    "A stand-in /kaggle: the Monet competition's folders and a noisy-shard dataset under input/, an empty working/"
    if not (SHARED/'monet'/'monet00-60.tfrec').is_file() or not (SHARED/'noisy-shards').is_dir() or not (SHARED/'celeba-10k-jpg.zip').is_file():
        pytest.skip('../shared/data (the Monet shard, the CelebA zip, the noisy shards) is not here')
    root = tmp_path_factory.mktemp('kaggle')
    comp = root/'input'/'gan-getting-started'
    for d in ('monet_tfrec', 'photo_tfrec', 'monet_jpg', 'photo_jpg'): (comp/d).mkdir(parents=True)
    (comp/'monet_tfrec'/'monet00-60.tfrec').symlink_to(SHARED/'monet'/'monet00-60.tfrec')
    _write_photo_tfrecord(comp/'photo_tfrec'/'photo00-40.tfrec')
    shards = root/'input'/'noisy-image-shards'; shards.mkdir()
    for p in sorted((SHARED/'noisy-shards').glob('shard-*')): (shards/p.name).symlink_to(p)
    (root/'input'/'ganlab').mkdir()  # where the wheel dataset would be
    (root/'working').mkdir()
    return root


@pytest.fixture
def kaggle_env(kaggle_root, monkeypatch):
    "The environment a kernel sees, for the Jupyter kernel the test starts"
    shutil.rmtree(kaggle_root/'working'); (kaggle_root/'working').mkdir()
    for k, v in dict(GANLAB_KAGGLE_ROOT=str(kaggle_root), KAGGLE_KERNEL_RUN_TYPE='Batch', GANLAB_REHEARSAL='1', GANLAB_CPU_PROCS='2',
                     GANLAB_OFFLINE='1', PYTHONWARNINGS='ignore', MPLBACKEND='Agg').items(): monkeypatch.setenv(k, v)
    monkeypatch.delenv('GANLAB_SHARED_DATA', raising=False)
    return kaggle_root


def _rehearse(name:str, root:Path, extra:dict|None=None) -> nbformat.NotebookNode:
    "Run nbs/kaggle/NAME as Kaggle would, with the guard first and its check last; `extra`: {after cell index: source} to inject"
    nb = nbformat.read(REPO/'nbs'/'kaggle'/name, as_version=4)
    cells = [c for c in nb.cells if not (c.cell_type == 'code' and c.source.lstrip().startswith('#| notest'))]
    for i, src in sorted((extra or {}).items(), reverse=True): cells.insert(i + 1, nbformat.v4.new_code_cell(src))
    nb.cells = [nbformat.v4.new_code_cell(GUARD)] + cells + [nbformat.v4.new_code_cell(CHECK)]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(root/'working')}})
    try: client.execute()
    finally: nbformat.write(nb, ARTEFACTS/name)
    return nb


def _text(nb) -> str:
    return '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'stream')


@pytest.mark.slow
def test_monet_kernel_rehearses_with_two_processes(kaggle_env):
    nb = _rehearse('monet.ipynb', kaggle_env)
    run = kaggle_env/'working'/'run'
    md = json.loads((run/'metadata.json').read_text())
    assert md['world'] == 2 and md['family'] == 'cut', md
    assert (run/'checkpoints'/'last.pt').is_file() and sorted((run/'samples').glob('*.png'))
    with zipfile.ZipFile(kaggle_env/'working'/'images.zip') as z: assert len(z.namelist()) == 16
    out = _text(nb)
    assert 'Kaggle kernel (run type Batch)' in out and 'training may take' in out and 'launches from the notebook process: 3' in out, out
    assert f"output folder: {kaggle_env/'working'}" in out, out  # the folder the report names is the one written to
    assert not _problems(nb), _problems(nb)
    _check_figures(nb, 'monet.ipynb')  # PNGs under matplotlib's Agg backend too


@pytest.mark.slow
def test_noisy_kernel_rehearses_with_two_processes(kaggle_env):
    nb = _rehearse('noisy_dcgan.ipynb', kaggle_env)
    md = json.loads((kaggle_env/'working'/'run'/'metadata.json').read_text())
    assert md['world'] == 2 and md['family'] == 'dcgan', md
    rows = (kaggle_env/'working'/'submission.csv').read_text().splitlines()
    assert len(rows) == 41, len(rows)  # a header and the rehearsal's 40 images
    assert 'launches from the notebook process: 1' in _text(nb)
    assert f"output folder: {kaggle_env/'working'}" in _text(nb) and not _problems(nb), (_text(nb), _problems(nb))
    _check_figures(nb, 'noisy_dcgan.ipynb')


@pytest.mark.slow
def test_the_guard_fails_a_kernel_that_touches_cuda_before_training(kaggle_env):
    with pytest.raises(nbclient.exceptions.CellExecutionError) as e:
        _rehearse('noisy_dcgan.ipynb', kaggle_env, {1: 'import torch\nprint("CUDA here:", torch.cuda.is_available())'})
    assert 'the notebook process touched CUDA before this launch' in str(e.value) and 'is_available' in str(e.value), str(e.value)[-3000:]


# --- the same kernels off Kaggle, as a user runs them on their own machine (issue 25) ------------------------------

FIGURES = {'monet.ipynb': 4, 'noisy_dcgan.ipynb': 2}  # the cells that show a figure or a grid (`IPImage(...)`)


def _problems(nb) -> list[str]:
    "Every output of `nb` that is an error, says ERROR, or is a figure printed as text instead of drawn"
    bad = []
    for i, c in enumerate(nb.cells):
        for o in c.get('outputs', []) if c.cell_type == 'code' else []:
            if o.output_type == 'error': bad.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
            for t in (o.get('text', ''), o.get('data', {}).get('text/plain', '')):
                t = ''.join(t) if isinstance(t, list) else t
                if 'ERROR' in t or '<Figure size' in t: bad.append(f'cell {i}: {t.strip()[:300]}')
    return bad


def _figure_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == 'code' and 'IPImage(filename' in c.source]


def _check_figures(nb, name:str):
    "Each figure cell of kernel `name` shows its figure as a PNG"
    cells = _figure_cells(nb)
    assert len(cells) == FIGURES[name], [c.source for c in cells]
    for c in cells: assert any('image/png' in o.get('data', {}) for o in c.outputs), (c.source, c.outputs)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['monet.ipynb', 'noisy_dcgan.ipynb'])
def test_kernel_off_kaggle_as_a_user_runs_it(name, shared, tmp_path, monkeypatch):
    """Every cell, the install cell included, in a Jupyter kernel started in nbs/kaggle/ (as `jupyter nbconvert
    --execute` or Jupyter starts it) with the user's settings: no stand-in /kaggle, no rehearsal variables, matplotlib's
    own backend. No ERROR, the figures embedded as PNGs, and everything written to the folder the environment report
    names, nothing into the checkout"""
    from ganlab.kaggle import on_kaggle
    for k in ('KAGGLE_KERNEL_RUN_TYPE', 'GANLAB_KAGGLE_ROOT', 'GANLAB_REHEARSAL', 'GANLAB_CPU_PROCS', 'MPLBACKEND'): monkeypatch.delenv(k, raising=False)
    if on_kaggle(): pytest.skip('this machine has a /kaggle tree: it is not off Kaggle')
    monkeypatch.setenv('TMPDIR', str(tmp_path))  # where the kernel's own folder goes, so that the test leaves nothing behind
    monkeypatch.setenv('GANLAB_OFFLINE', '1')  # nothing downloaded
    here = REPO/'nbs'/'kaggle'
    before = set(here.iterdir())
    nb = nbformat.read(here/name, as_version=4)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    try: nbclient.NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(here)}}).execute()
    finally: nbformat.write(nb, ARTEFACTS/f'off-kaggle-{name}')
    assert set(here.iterdir()) == before, sorted(set(here.iterdir()) - before)
    assert not _problems(nb), _problems(nb)
    _check_figures(nb, name)
    out = _text(nb)
    assert 'install skipped: no ganlab wheel' in out and 'not Kaggle' in out, out
    written = Path(re.search(r'^output folder: (.+)$', out, re.M).group(1))
    assert written.parent == tmp_path.resolve(), written
    assert (written/'run'/'metadata.json').is_file()
    assert (written/('images.zip' if name == 'monet.ipynb' else 'submission.csv')).is_file(), sorted(p.name for p in written.iterdir())
