"""`ganlab.kaggle`: the whole push through the real `kaggle` client against a local stand-in of the Kaggle API.

How the stand-in is reached: the kaggle client (2.x) talks to kagglesdk's `KaggleHttpClient`, whose endpoint is chosen
by `KAGGLE_API_ENVIRONMENT`; `LOCALHOST` makes the client use `http://localhost/api/v1/...` (plain HTTP, port 80).
The client sends through `requests`, which honours `HTTP_PROXY`, so the test runs a small HTTP server on 127.0.0.1 at a
free port and names it as the proxy (with `NO_PROXY` emptied): every request the client makes arrives there, with the
absolute URL, and nothing leaves the machine. Credentials are a fake `KAGGLE_USERNAME`/`KAGGLE_KEY` in a throwaway
`HOME` and `KAGGLE_CONFIG_DIR`.
"""
import base64, contextlib, importlib.util, json, os, shutil, subprocess, sys, tempfile, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
from ganlab.core import GanlabError
from ganlab import kaggle as gk

ROOT = Path(__file__).resolve().parent.parent
HAVE_KAGGLE = importlib.util.find_spec('kaggle') is not None and importlib.util.find_spec('kagglesdk') is not None
needs_kaggle = pytest.mark.skipif(not HAVE_KAGGLE, reason='the kaggle client is not installed (pip install kaggle, in the dev extras)')


class StandIn:
    "A local stand-in of the Kaggle API: records every request and answers SaveKernel like Kaggle does"
    def __init__(self):
        self.requests = []
        outer = self
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                outer.requests.append(dict(path=self.path, headers=dict(self.headers), body=json.loads(body or b'{}')))
                if self.path.endswith('/kernels.KernelsApiService/SaveKernel'):
                    slug = outer.requests[-1]['body'].get('slug', '')
                    reply = dict(ref=f'/code/{slug}', url=f'https://www.kaggle.com/code/{slug}', versionNumber=3, error='')
                else: reply = {}
                data = json.dumps(reply).encode()
                self.send_response(200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(data)))
                self.end_headers(); self.wfile.write(data)
            do_GET = do_POST
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *a): self.server.shutdown(); self.server.server_close()

    def env(self, home:Path) -> dict:
        "The environment that sends the real kaggle client here, with fake credentials"
        proxy = f'http://127.0.0.1:{self.server.server_address[1]}'
        e = {k: v for k, v in os.environ.items() if not k.upper().startswith(('KAGGLE_', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY'))}
        (home/'kaggle-config').mkdir(parents=True, exist_ok=True)
        e.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(home/'kaggle-config'), KAGGLE_API_ENVIRONMENT='LOCALHOST',
                 KAGGLE_USERNAME='ganlab-tester', KAGGLE_KEY='0123456789abcdef', HTTP_PROXY=proxy, http_proxy=proxy,
                 HTTPS_PROXY='http://127.0.0.1:9', https_proxy='http://127.0.0.1:9', NO_PROXY='', no_proxy='')
        return e


def write_kernel(d:Path, **changes) -> Path:
    "A kernel folder: a notebook that installs ganlab offline, and valid T4x2 metadata (with `changes`)"
    d.mkdir(parents=True, exist_ok=True)
    nb = {'cells': [{'cell_type': 'code', 'source': ['!pip install --no-index --no-deps /kaggle/input/ganlab/*.whl\n'], 'outputs': [], 'metadata': {}, 'execution_count': None},
                    {'cell_type': 'code', 'source': ['import ganlab  # the notebook text travels\n', 'print(ganlab.__version__)'], 'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': ['0.1.0']}], 'metadata': {}, 'execution_count': 2}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (d/'kernel.ipynb').write_text(json.dumps(nb))
    meta = gk.kernel_metadata('ganlab-tester/ganlab-test-kernel', 'ganlab test kernel', 'kernel.ipynb', ['gan-getting-started'], ['ganlab-tester/ganlab'])
    meta.update(changes)
    (d/'kernel-metadata.json').write_text(json.dumps(meta))
    return d


@needs_kaggle
def test_push_reaches_the_standin_with_notebook_accelerator_and_sources(tmp_path):
    with StandIn() as api:
        r = gk.push(write_kernel(tmp_path/'k'), env=api.env(tmp_path/'home'), quiet=True)
    saves = [q for q in api.requests if q['path'].endswith('/api/v1/kernels.KernelsApiService/SaveKernel')]
    assert len(saves) == 1, [q['path'] for q in api.requests]
    q = saves[0]
    assert q['path'].startswith('http://localhost/'), q['path']  # the client's own URL, through the proxy
    b = q['body']
    assert b['slug'] == 'ganlab-tester/ganlab-test-kernel' and b['newTitle'] == 'ganlab test kernel'
    assert b['machineShape'] == 'NvidiaTeslaT4' and b['enableGpu'] is True and b.get('enableInternet', False) is False
    assert b['competitionDataSources'] == ['gan-getting-started'] and b['datasetDataSources'] == ['ganlab-tester/ganlab']
    assert b['language'] == 'python' and b['kernelType'] == 'notebook'
    text = json.loads(b['text'])
    assert 'import ganlab  # the notebook text travels' in text['cells'][1]['source']
    assert text['cells'][1]['outputs'] == []  # outputs are not pushed
    assert text['metadata']['kaggle']['accelerator'] == 'nvidiaTeslaT4'
    user, key = base64.b64decode(q['headers']['Authorization'].split()[1]).decode().split(':')
    assert (user, key) == ('ganlab-tester', '0123456789abcdef')
    assert 'Kernel version 3 successfully pushed' in r['output']


@needs_kaggle
def test_plain_kaggle_cli_pushes_the_repository_kernels(tmp_path):
    "`kaggle kernels push -p .` works on the top-level metadata as it is: its code_file is the notebook in nbs/kaggle"
    with StandIn() as api:
        for folder, nb in ((ROOT, 'monet.ipynb'), (ROOT/'nbs'/'kaggle', 'noisy_dcgan.ipynb')):
            gk.check_kernel(folder, need_gpu=True)
            p = subprocess.run(gk.kaggle_command() + ['kernels', 'push', '-p', str(folder)], env=api.env(tmp_path/'home'),
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0 and 'successfully pushed' in p.stdout, p.stdout + p.stderr
            b = api.requests[-1]['body']
            assert b['machineShape'] == 'NvidiaTeslaT4' and b['enableGpu'] is True and not b.get('enableInternet', False)
            assert json.loads(b['text'])['cells'], nb
    monet = [q['body'] for q in api.requests if q['path'].endswith('SaveKernel')][0]
    assert monet['competitionDataSources'] == ['gan-getting-started'] and 'ganlab/ganlab' in monet['datasetDataSources']
    assert 'monet_submit' in monet['text'] and 'cyclegan' in monet['text']


@needs_kaggle
def test_push_moves_the_repository_kernel_to_the_clients_user_and_cleans_up(tmp_path):
    "The repository's metadata is owned by the placeholder `ganlab`: a push goes out as the user the client logs in as"
    before = set(Path(tempfile.gettempdir()).glob('ganlab-push-*'))
    with StandIn() as api:
        r = gk.push(ROOT/'nbs'/'kaggle'/'noisy_dcgan.ipynb', repo=ROOT, env=api.env(tmp_path/'home'), quiet=True)
    b = [q['body'] for q in api.requests if q['path'].endswith('SaveKernel')][-1]
    assert r['id'] == b['slug'] == 'ganlab-tester/ganlab-noisy-shard-dcgan'
    assert b['datasetDataSources'] == ['ganlab-tester/ganlab', 'ganlab-tester/noisy-image-shards', 'ganlab-tester/fid-inception-weights']
    assert not r['folder'].exists() and set(Path(tempfile.gettempdir()).glob('ganlab-push-*')) == before  # nothing left behind
    with StandIn() as api:
        gk.push(ROOT/'nbs'/'kaggle'/'monet.ipynb', repo=ROOT, env=api.env(tmp_path/'home'), quiet=True, owner='ada')
    b = [q['body'] for q in api.requests if q['path'].endswith('SaveKernel')][-1]
    assert b['slug'] == 'ada/ganlab-monet-cyclegan' and b['datasetDataSources'] == ['ada/ganlab'] and b['competitionDataSources'] == ['gan-getting-started']


@needs_kaggle
@pytest.mark.parametrize('change, message', [
    (dict(machine_shape='NvidiaTeslaT4x2'), "machine_shape 'NvidiaTeslaT4x2' is not one of"),
    (dict(enable_gpu=False), 'is a GPU, but enable_gpu is not true'),
    (dict(dataset_sources=['ganlab']), "dataset_sources: 'ganlab' is not 'owner/dataset-slug'"),
    (dict(competition_sources=['Gan Getting Started']), 'is not a competition slug'),
    (dict(code_file='missing.ipynb'), 'code_file missing.ipynb does not exist'),
    (dict(title='Another title'), "does not match the title's slug"),
    (dict(is_private='yes'), 'is_private must be true or false'),
])
def test_bad_metadata_fails_before_any_request(tmp_path, change, message):
    with StandIn() as api:
        with pytest.raises(GanlabError, match='problem') as e:
            gk.push(write_kernel(tmp_path/'k', **change), env=api.env(tmp_path/'home'), quiet=True)
    assert message in str(e.value)
    assert api.requests == []


@needs_kaggle
def test_network_install_with_internet_off_fails_before_any_request(tmp_path):
    d = write_kernel(tmp_path/'k')
    nb = json.loads((d/'kernel.ipynb').read_text())
    nb['cells'].insert(0, {'cell_type': 'code', 'source': '%pip install -q timm\n!pip install --no-index x.whl', 'outputs': [], 'metadata': {}, 'execution_count': None})
    (d/'kernel.ipynb').write_text(json.dumps(nb))
    with StandIn() as api:
        with pytest.raises(GanlabError, match=r'installs from the network: cell 1: %pip install -q timm \(') as e:
            gk.push(d, env=api.env(tmp_path/'home'), quiet=True)
        assert api.requests == []
        meta = json.loads((d/'kernel-metadata.json').read_text()); meta['enable_internet'] = True
        (d/'kernel-metadata.json').write_text(json.dumps(meta))
        gk.push(d, env=api.env(tmp_path/'home'), quiet=True)  # with the internet on, the same notebook may install
        assert len(api.requests) == 1


def test_every_problem_is_listed_at_once(tmp_path):
    d = write_kernel(tmp_path/'k', enable_gpu=False, dataset_sources=['x'], title='Bad')
    meta = json.loads((d/'kernel-metadata.json').read_text()); del meta['kernel_sources']
    (d/'kernel-metadata.json').write_text(json.dumps(meta))
    with pytest.raises(GanlabError) as e: gk.check_kernel(d)
    msg = str(e.value)
    assert '4 problems' in msg
    for part in ('missing fields: kernel_sources', 'title must be at least 5 characters', "dataset_sources: 'x'", 'enable_gpu is not true'):
        assert part in msg


def test_push_assembles_a_folder_from_a_notebook_in_nbs_kaggle(tmp_path):
    for nb, slug in (('monet.ipynb', 'ganlab-monet-cyclegan'), ('noisy_dcgan.ipynb', 'ganlab-noisy-shard-dcgan')):
        out = gk.push_folder(ROOT/'nbs'/'kaggle'/nb, tmp_path/slug, repo=ROOT)
        meta = json.loads((out/'kernel-metadata.json').read_text())
        assert meta['code_file'] == nb and (out/nb).is_file() and meta['id'].endswith('/' + slug)
        assert gk.kernel_problems(meta, out, need_gpu=True) == []
    with pytest.raises(GanlabError, match='no kernel-metadata.json names it'):
        gk.find_kernel(ROOT/'nbs'/'08_kaggle.ipynb', repo=ROOT)


def test_package_builds_an_installable_wheel_offline(tmp_path):
    r = gk.package(tmp_path/'ds', user='ganlab-tester')
    meta = json.loads(r['metadata'].read_text())
    assert meta['id'] == 'ganlab-tester/ganlab' and meta['licenses'] == [{'name': 'apache-2.0'}] and 6 <= len(meta['title']) <= 50
    target = tmp_path/'site'
    p = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--no-deps', '--target', str(target), str(r['wheel'])],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (target/'ganlab'/'kaggle.py').is_file() and (target/'ganlab'/'train.py').is_file()


def test_fake_kaggle_tree_drives_the_environment(tmp_path, monkeypatch):
    root = tmp_path/'kaggle'
    for p in gk.MONET_PARTS: (root/'input'/'gan-getting-started'/p).mkdir(parents=True)
    (root/'working').mkdir()
    monkeypatch.delenv('KAGGLE_KERNEL_RUN_TYPE', raising=False)
    monkeypatch.setenv(gk.ROOT_ENV, str(root))
    assert gk.on_kaggle() and gk.output_dir('images.zip') == root/'working'/'images.zip'
    assert gk.monet_data()['photo'] == root/'input'/'gan-getting-started'/'photo_tfrec'
    t4 = gk.parse_nvidia_smi('Tesla T4, 7.5, 15360\nTesla T4, 7.5, 15360')
    d = gk.kaggle_defaults('cyclegan', gpu_list=t4)
    assert d == dict(nprocs=2, amp='fp16', batch=2, progress=False)
    monkeypatch.setenv(gk.ROOT_ENV, str(tmp_path/'elsewhere'))
    assert not gk.on_kaggle() and gk.output_dir('x') == Path('x')


@pytest.mark.slow
def test_plan_monet_competition_run():
    from ganlab.config import CycleGANConfig
    from ganlab import planner as gp
    p = gp.plan(CycleGANConfig(size=256, epochs=25, batch=2), images={'monet': 300, 'photo': 7038})
    assert p.steps == 7038 // 2 * 25 and p.fits and p.spare_s > 0
    assert 'ASSUMED' in p.how and 'GFLOP' in str(p)
    slow = gp.plan('cyclegan', epochs=25, batch=2, rate=1.0)
    assert not slow.may_fit and slow.max_epochs == int((12 * 3600 - 600) // (3519 * 2 / 1.0))
    twice = gp.plan('cyclegan', epochs=50, batch=2)
    assert twice.seconds[1] - 600 == pytest.approx(2 * (p.seconds[1] - 600))
