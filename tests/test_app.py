"""The Gradio app (`ganlab.app`): its functions called directly, the app served on 127.0.0.1 and driven through
`gradio_client`, and a headless Chromium (Debian's chromium + chromium-driver, through selenium) pressing Sample.

The served and browser tests skip with their reason when Gradio, selenium or the browser is absent; `.ci/run` installs
them. The browser's screenshot is written to $GANLAB_TEST_ARTEFACTS (default: test-artefacts/ in the checkout)."""
import importlib.util, io, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request, zipfile
from pathlib import Path
import numpy as np, pytest, torch, torch.nn as nn
from PIL import Image
from ganlab import app
from ganlab.core import GanlabError
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab.eda import image_grid
from ganlab.train import train

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = Path(os.environ.get('GANLAB_TEST_ARTEFACTS', ROOT/'test-artefacts'))
HAS_GRADIO = importlib.util.find_spec('gradio') is not None
needs_gradio = pytest.mark.skipif(not HAS_GRADIO, reason='Gradio is not installed (pip install "ganlab[app]"; the dev extra has it)')
CPU = dict(device='cpu')

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny DCGAN run with EMA: two epochs of 16-pixel digits"
    out = tmp_path_factory.mktemp('app')/'run'
    train('dcgan', dataset=ImageArrayDataset(draw_digits(256, seed=1, size=16)[0]), out=out, quiet=True, size=16, epochs=2, batch=32,
          g_width=8, d_width=8, latent=16, ema=0.9, samples=16, log_every=2, tensorboard=False, device='cpu')
    return out

@pytest.fixture(scope='module')
def cyc(tmp_path_factory):
    "A tiny CycleGAN run at 64 pixels"
    out = tmp_path_factory.mktemp('app')/'cyc'
    rng = np.random.default_rng(0)
    train('cyclegan', dataset={'monet': (rng.random((8, 64, 64, 3)) * 255).astype(np.uint8), 'photo': draw_digits(10, seed=1, size=64)[0]},
          out=out, quiet=True, size=64, ngf=4, ndf=4, g_arch='resnet6', epochs=1, batch=2, samples=2, log_every=1, tensorboard=False, device='cpu')
    return out

class Conditional(nn.Module):
    "A stand-in conditional generator: image brightness is the label, a pixel shows z (the cGAN family comes later)"
    latent, classes = 4, 3
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(1))
    def forward(self, z, y):
        x = (y.float() - 1).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone() + self.w
        x[:, :, 0, 0] = z[:, :1].tanh()
        return x

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _png(path) -> np.ndarray: return np.asarray(Image.open(path).convert('RGB'))

# --- without a server ---------------------------------------------------------------------------------------------

def test_import_is_light():
    code = "import sys, ganlab.app; heavy = [m for m in ('torch', 'gradio', 'pandas', 'matplotlib') if m in sys.modules]; assert not heavy, heavy"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr

def test_without_gradio_one_clear_line(monkeypatch, run):
    monkeypatch.setitem(sys.modules, 'gradio', None)  # `import gradio` now raises ImportError
    for f in (lambda: app.serve(run), lambda: app.launch(run), lambda: app.build_app(run)):
        with pytest.raises(GanlabError) as e: f()
        assert str(e.value) == 'the app needs Gradio: pip install "ganlab[app]"'

def test_grid_is_what_ganlab_generate_writes(run, tmp_path):
    from ganlab.generate import generate
    out = generate(run/'checkpoints'/'last.pt', n=16, seed=5, out=tmp_path/'gen', quiet=True, device='cpu')
    written = np.stack([_png(p) for p in sorted(out.glob('*.png'))])
    s = app.open_source(run, **CPU)
    assert s.kind == 'sampler' and s.ckpt.name == 'last.pt' and s.run == run
    np.testing.assert_array_equal(app.sample_grid(s.g, 16, seed=5), image_grid(written, ncol=4))
    raw = app.open_source(run, ema=False, **CPU)  # the EMA generator is the default, as in `ganlab generate`
    assert not np.array_equal(app.sample_grid(raw.g, 16, seed=5), app.sample_grid(s.g, 16, seed=5))

def test_truncation_is_deterministic_and_bounded(run, tmp_path):
    from ganlab.generate import generate, latents
    g = app.open_source(run, **CPU).g
    z = latents(0, 64, 16, seed=9, truncation=0.7)  # the noise the app draws: `ganlab generate --truncation`'s
    assert z.abs().max() <= 0.7 and torch.equal(z, latents(0, 64, 16, seed=9, truncation=0.7))
    assert torch.equal(z[:10], latents(0, 10, 16, seed=9, truncation=0.7))
    assert (z.abs() < 0.7).float().mean() > 0.99  # redrawn, not clipped: almost nothing sits at the threshold
    out = generate(run, n=16, seed=9, truncation=0.7, out=tmp_path/'gen', quiet=True, device='cpu')
    a = app.sample_grid(g, 16, seed=9, truncation=0.7)
    np.testing.assert_array_equal(a, image_grid(np.stack([_png(p) for p in sorted(out.glob('*.png'))]), ncol=4))
    assert np.array_equal(a, app.sample_grid(g, 16, seed=9, truncation=0.7)) and not np.array_equal(a, app.sample_grid(g, 16, seed=9))
    with pytest.raises(GanlabError, match='truncation'): app.sample_grid(g, 4, truncation=-1)
    with pytest.raises(GanlabError, match='seed'): app.sample_grid(g, 4, seed=2**63)
    with pytest.raises(GanlabError, match='number of images'): app.sample_grid(g, app.MAX_GRID + 1)

def test_interpolation_ends_are_the_grids_first_images(run):
    g = app.open_source(run, **CPU).g
    strip = app.interpolation_strip(g, 3, 4, steps=5, truncation=1.0)
    assert strip.shape == (20, 5 * 18 + 2, 3)
    np.testing.assert_array_equal(strip[2:18, 2:18], app.sample_grid(g, 1, seed=3, truncation=1.0)[2:18, 2:18])
    np.testing.assert_array_equal(strip[2:18, -18:-2], app.sample_grid(g, 1, seed=4, truncation=1.0)[2:18, 2:18])
    with pytest.raises(GanlabError, match='steps'): app.interpolation_strip(g, steps=1)

def test_grey_generator_gives_rgb_grids(tmp_path):
    grey = ImageArrayDataset(draw_digits(32, seed=0, size=28)[0].mean(-1, keepdims=True).astype(np.uint8))
    train('mlp', dataset=grey, out=tmp_path/'mlp', quiet=True, epochs=1, batch=16, g_hidden='16', d_hidden='16', latent=8, tensorboard=False, device='cpu')
    g = app.open_source(tmp_path/'mlp', **CPU).g
    grid = app.sample_grid(g, 4, seed=1)
    assert grid.shape == (2 * 30 + 2, 2 * 30 + 2, 3) and (grid[..., 0] == grid[..., 2]).all()

@pytest.fixture(scope='module')
def cgan_run(tmp_path_factory):
    "A tiny class-conditional run trained from a folder of class subfolders (cat, dog, owl: eight random 16x16 PNGs each)"
    d = tmp_path_factory.mktemp('app')
    rng = np.random.default_rng(0)
    for c in ('cat', 'dog', 'owl'):
        (d/'pets'/c).mkdir(parents=True)
        for i in range(8): Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(d/'pets'/c/f'{i}.png')
    train('cgan', data=str(d/'pets'), out=d/'run', quiet=True, size=16, epochs=1, batch=8, g_width=8, d_width=8, latent=16, samples=6,
          log_every=1, tensorboard=False, progress=False, device='cpu')
    return d/'run'

def test_conditional_run_grids_are_what_ganlab_generate_writes(cgan_run, tmp_path):
    "A cgan run trained on class folders: its config keeps the names as one comma-separated string; the grids are `generate --class`'s"
    from ganlab.generate import generate
    s = app.open_source(cgan_run, **CPU)
    assert s.kind == 'sampler' and app.class_count(s.g) == 3 and s.cfg.class_names == 'cat,dog,owl'
    every = sorted(generate(cgan_run, n=6, seed=2, out=tmp_path/'all', quiet=True, device='cpu').glob('*.png'))
    assert [p.name for p in every[:3]] == ['img-000000-cat.png', 'img-000001-dog.png', 'img-000002-owl.png']
    np.testing.assert_array_equal(app.sample_grid(s.g, 6, seed=2), image_grid(np.stack([_png(p) for p in every]), ncol=3))  # a column per class
    dogs = sorted(generate(cgan_run, n=4, seed=2, cls='dog', truncation=0.8, out=tmp_path/'dog', quiet=True, device='cpu').glob('*.png'))
    np.testing.assert_array_equal(app.sample_images(s.g, 4, seed=2, truncation=0.8, label=1), np.stack([_png(p) for p in dogs]))

@pytest.mark.slow
def test_translate_matches_monet_submit(cyc, tmp_path):
    from ganlab.generate import monet_submit
    photos = tmp_path/'photos'; photos.mkdir()
    for i, im in enumerate(draw_digits(3, seed=7, size=90)[0]): Image.fromarray(im).save(photos/f'p{i}.png')
    res = monet_submit(cyc/'checkpoints'/'last.pt', photo=photos, out=tmp_path/'images.zip', quality=100, device='cpu', check=False, mifid=False, quiet=True)
    s = app.open_source(cyc, **CPU)
    assert s.kind == 'translator' and res['images'] == 3
    with zipfile.ZipFile(res['out']) as zf:
        for i in range(3):
            ours = app.translate(s.g, photos/f'p{i}.png', s.cfg.size)
            theirs = np.asarray(Image.open(io.BytesIO(zf.read(f'p{i}.jpg'))))
            assert ours.shape == (256, 256, 3) and np.abs(ours.astype(int) - theirs).mean() < 1.5  # JPEG at quality 100 aside, the same
            np.testing.assert_array_equal(app.translate(s.g, (photos/f'p{i}.png').read_bytes(), s.cfg.size), ours)
    with pytest.raises(GanlabError, match='photo'): app.translate(s.g, b'\x89PNG not really', 64)
    with pytest.raises(GanlabError, match='no such photo'): app.translate(s.g, tmp_path/'none.png', 64)

def test_run_records(run, tmp_path):
    r = tmp_path/'r'; shutil.copytree(run, r)
    assert list(app.sample_epochs(r)) == [1, 2]
    e, im = app.sample_at(r, 1)
    assert e == 1 and np.array_equal(im, _png(r/'samples'/'epoch_001.png'))
    assert app.sample_at(r, 99)[0] == 2 and app.sample_at(r, 0)[0] == 1
    df = app.run_metrics(r)
    assert app.eval_columns(df) == [] and len(df) == 8
    # evaluations as training writes them (rows of their own, in columns after the speed): FID, and a ruler's metric
    text = (r/'metrics.csv').read_text().splitlines()
    rows = [text[0] + ',fid,ruler'] + [l + ',,' for l in text[1:]]
    row = {'epoch': '2', 'step': '16', 'images': '512', 'seconds': '5.0', 'fid': '123.5', 'ruler': '0.25'}
    (r/'metrics.csv').write_text('\n'.join(rows + [','.join(row.get(c, '') for c in rows[0].split(','))]) + '\n')
    df = app.run_metrics(r)
    assert app.eval_columns(df) == ['fid', 'ruler']
    assert app.eval_table(df).to_dict('records') == [{'epoch': 2, 'step': 16, 'fid': 123.5, 'ruler': 0.25}]
    fig = app.plot_run(df)
    assert [ax.get_title() for ax in fig.axes] == ['losses', 'mean D output', 'FID', 'ruler']
    assert app.run_settings(r)['family'] == 'dcgan'
    (r/'metadata.json').write_text('{broken'); (r/'metrics.csv').write_bytes(b'\x00\xff' * 10)
    with pytest.raises(GanlabError, match='metadata.json'): app.run_settings(r)
    with pytest.raises(GanlabError, match='metrics.csv'): app.run_metrics(r)
    (r/'samples'/'epoch_003.png').write_bytes(b'not a png')
    with pytest.raises(GanlabError, match='epoch_003.png'): app.sample_at(r, 3)

def test_open_source_reports_problems(run, tmp_path):
    bad = tmp_path/'bad.pt'; bad.write_bytes(b'not a checkpoint')
    torch.save({'x': 1}, tmp_path/'other.pt')
    only_run = tmp_path/'only'; only_run.mkdir(); shutil.copy(run/'metrics.csv', only_run)
    for src, why in ((tmp_path/'nowhere', 'no such checkpoint file or run folder'), (tmp_path, 'not a ganlab run folder'),
                     (bad, 'cannot be read safely'), (tmp_path/'other.pt', 'not a ganlab checkpoint'), (only_run, 'no checkpoint')):
        s = app.open_source(src)
        assert s.kind is None and any(why in p for p in s.problems), (src, s.problems)
    assert app.open_source(only_run).run == only_run
    s = app.open_source(run/'checkpoints'/'epoch_001.pt', **CPU)
    assert s.kind == 'sampler' and s.run == run

# --- the page, built and served -----------------------------------------------------------------------------------

def _components(demo) -> dict: return {c.get('props', {}).get('elem_id'): c for c in demo.config['components']}
def _endpoints(demo) -> set: return {d.get('api_name') for d in demo.config['dependencies']} - {None, False}

@pytest.mark.slow
@needs_gradio
def test_pages_for_each_kind_of_source(run, cyc, tmp_path):
    demo = app.build_app(run, **CPU)
    assert {'sample', 'interpolate', 'run', 'run_samples'} <= _endpoints(demo) and 'translate' not in _endpoints(demo)
    assert 'problems' not in _components(demo)
    demo = app.build_app(cyc/'checkpoints'/'last.pt', **CPU)
    assert {'translate', 'run'} <= _endpoints(demo) and 'sample' not in _endpoints(demo)
    demo = app.build_app(app.Source(g=Conditional().eval(), kind='sampler'))
    assert _components(demo)['class']['props']['choices']
    for bad in (tmp_path/'nowhere', tmp_path/'bad.pt'):
        if bad.suffix: bad.write_bytes(b'junk')
        demo = app.build_app(bad)  # no traceback: the problem is in the page
        assert str(bad) in _components(demo)['problems']['props']['value'] and not _endpoints(demo)

@pytest.mark.slow
@needs_gradio
def test_conditional_run_page_names_its_class_folders(cgan_run):
    "The Class menu of a cgan run trained on class folders lists the folders' names (not 0, 1, 2), and choosing one samples that class"
    from gradio_client import Client
    demo = app.build_app(cgan_run, **CPU)
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in _components(demo)['class']['props']['choices']]
    assert choices == ['all (one class per column)', 'cat', 'dog', 'owl'], choices
    demo = app.launch(cgan_run, port=_free_port(), share=False, device='cpu')
    try:
        c = Client(f'http://127.0.0.1:{demo.server_port}/', verbose=False)
        grid = _png(c.predict(seed=2, n=4, truncation=0, label='owl', api_name='/sample'))
        with pytest.raises(Exception, match='class must be one of'): c.predict(seed=2, n=4, truncation=0, label='2', api_name='/sample')
    finally: demo.close()
    g = app.open_source(cgan_run, **CPU).g
    np.testing.assert_array_equal(grid, app.sample_grid(g, 4, seed=2, label=2))

@pytest.fixture(scope='module')
def served(run):
    "`ganlab app RUN` in its own process on a free port of 127.0.0.1, as a user starts it"
    if not HAS_GRADIO: pytest.skip('Gradio is not installed (pip install "ganlab[app]"; the dev extra has it)')
    port = _free_port()
    log = tempfile.TemporaryFile()
    ganlab = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
    p = subprocess.Popen([ganlab, 'app', str(run), '--port', str(port), '--device', 'cpu', '--quiet'], stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED='False'))
    url, t0 = f'http://127.0.0.1:{port}/', time.monotonic()
    try:
        while True:
            if p.poll() is not None: log.seek(0); pytest.fail(f'the app exited ({p.returncode}):\n{log.read().decode()[-3000:]}')
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.monotonic() - t0 > 180: log.seek(0); pytest.fail(f'the app did not serve {url} in 180 s:\n{log.read().decode()[-3000:]}')
            time.sleep(0.5)
        yield url
    finally:
        p.terminate()
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
        log.close()

@pytest.mark.slow
def test_served_app_through_gradio_client(served, run):
    from gradio_client import Client
    c = Client(served, verbose=False)
    a = c.predict(seed=3, n=16, truncation=0, api_name='/sample')
    b = c.predict(seed=3, n=16, truncation=0, api_name='/sample')
    d = c.predict(seed=4, n=16, truncation=0, api_name='/sample')
    assert Image.open(a).size == (4 * 18 + 2, 4 * 18 + 2) and Image.open(a).format == 'PNG'
    assert Path(a).read_bytes() == Path(b).read_bytes() != Path(d).read_bytes()
    g = app.open_source(run, **CPU).g
    np.testing.assert_array_equal(_png(a), app.sample_grid(g, 16, seed=3))
    np.testing.assert_array_equal(_png(c.predict(seed=3, n=9, truncation=0.5, api_name='/sample')), app.sample_grid(g, 9, seed=3, truncation=0.5))
    np.testing.assert_array_equal(_png(c.predict(seed_a=3, seed_b=4, steps=4, truncation=0, api_name='/interpolate')), app.interpolation_strip(g, 3, 4, 4))
    with pytest.raises(Exception, match='minimum|seed'): c.predict(seed=-1, n=4, truncation=0, api_name='/sample')
    epoch, grid, plot, table, note, settings = c.predict(api_name='/run')
    assert settings['family'] == 'dcgan' and _png(grid).shape == _png(run/'samples'/'epoch_002.png').shape

@pytest.mark.slow
@needs_gradio
def test_notebook_launch_with_a_conditional_generator():
    from gradio_client import Client
    demo = app.launch(app.Source(g=Conditional().eval(), kind='sampler'), port=_free_port(), share=False)
    try:
        c = Client(f'http://127.0.0.1:{demo.server_port}/', verbose=False)
        grid = _png(c.predict(seed=1, n=6, truncation=0, label='2', api_name='/sample'))  # choice '2' is class 2
        assert grid.shape == (14, 20, 3) and (grid[3:6, 3:6] == 255).all()  # one class: 3 columns
        grid = _png(c.predict(seed=1, n=6, truncation=0, label='all (one class per column)', api_name='/sample'))
        np.testing.assert_array_equal(grid, app.sample_grid(Conditional().eval(), 6, seed=1))
    finally: demo.close()

# --- a real browser -----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def browser():
    "A headless Debian Chromium through selenium and chromedriver, or a skip saying what is missing (checked before the app is served)"
    if importlib.util.find_spec('selenium') is None: pytest.skip('selenium is not installed (the dev extra has it)')
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    if not chromium or not driver: pytest.skip('no Chromium or chromedriver (apt-get install chromium chromium-driver; .ci/run does)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = chromium
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--window-size=1280,1100',
              f'--user-data-dir={tempfile.mkdtemp(prefix="ganlab-chromium-")}'):
        o.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=o)
    yield b
    b.quit()

@pytest.mark.slow
def test_browser_presses_sample(browser, served, run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    b = browser
    if True:
        b.get(served)
        wait = WebDriverWait(b, 60)
        wait.until(lambda b: b.find_elements(By.ID, 'sample-button'))
        assert not b.find_elements(By.CSS_SELECTOR, '#sample-grid img')
        seed = b.find_element(By.CSS_SELECTOR, '#seed input')
        seed.send_keys(Keys.CONTROL, 'a'); seed.send_keys('5', Keys.TAB)
        b.find_element(By.ID, 'sample-button').click()
        img = wait.until(lambda b: [i for i in b.find_elements(By.CSS_SELECTOR, '#sample-grid img') if b.execute_script('return arguments[0].complete && arguments[0].naturalWidth', i)])[0]
        assert b.execute_script('return [arguments[0].naturalWidth, arguments[0].naturalHeight]', img) == [8 * 18 + 2] * 2
        with urllib.request.urlopen(img.get_attribute('src'), timeout=30) as r: shown = np.asarray(Image.open(io.BytesIO(r.read())).convert('RGB'))
        np.testing.assert_array_equal(shown, app.sample_grid(app.open_source(run, **CPU).g, 64, seed=5))  # the grid of the seed typed in
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        b.save_screenshot(str(ARTEFACTS/'app_sample.png'))
        assert (ARTEFACTS/'app_sample.png').stat().st_size > 1000

@pytest.mark.slow
@needs_gradio
def test_unreadable_run_files_leave_the_rest_of_the_run_tab(run, tmp_path):
    from gradio_client import Client
    r = tmp_path/'r'; shutil.copytree(run, r)
    (r/'metrics.csv').write_bytes(b'\x00\xff' * 10)
    demo = app.launch(r, port=_free_port(), share=False, device='cpu')
    try:
        epoch, grid, plot, table, note, settings = Client(f'http://127.0.0.1:{demo.server_port}/', verbose=False).predict(api_name='/run')
        assert settings['family'] == 'dcgan' and _png(grid).shape == _png(r/'samples'/'epoch_002.png').shape
        assert plot is None and table['value']['data'] == [] and not note['visible']  # the unreadable metrics.csv: a warning, nothing plotted or tabled
    finally: demo.close()


@pytest.mark.slow
@needs_gradio
def test_run_tab_says_when_a_run_has_no_evaluations(run, tmp_path):
    "A run trained without --fid-every: the Run tab says so in one line instead of an empty table; with an FID, the table"
    from gradio_client import Client
    assert app.eval_columns(app.run_metrics(run)) == []  # the tiny run measured no FID
    r = tmp_path/'r'; shutil.copytree(run, r)
    text = (r/'metrics.csv').read_text().splitlines()  # an FID column and row, as training with --fid-every writes them
    (r/'metrics.csv').write_text('\n'.join([text[0] + ',fid'] + [l + ',' for l in text[1:]] + ['2,16,512,5.0' + ',' * (len(text[0].split(',')) - 3) + '123.5']) + '\n')
    for folder, evaluated in ((run, False), (r, True)):
        demo = app.launch(folder, port=_free_port(), share=False, device='cpu')
        try:
            c = Client(f'http://127.0.0.1:{demo.server_port}/', verbose=False, download_files=False)
            epoch, grid, plot, table, note, settings = c.predict(api_name='/run')
        finally: demo.close()
        assert (table['visible'], note['visible']) == (evaluated, not evaluated), (folder, table, note)
        if evaluated: assert table['value']['data'] == [[2, 16, 123.5]], table
        else: assert note['value'] == app.NO_EVALS == 'no evaluations in this run (train with --fid-every N)', note


# --- issue 27: hostile uploads, run folders with links, the console, load and disk --------------------------------

def _start_app(source, log, *flags, **env) -> tuple:
    "`ganlab app SOURCE` in its own process on a free port, its console in `log`; `(url, process)` once it serves"
    port = _free_port()
    ganlab = shutil.which('ganlab') or str(Path(sys.executable).parent/'ganlab')
    p = subprocess.Popen([ganlab, 'app', str(source), '--port', str(port), '--device', 'cpu', '--quiet', *flags], stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED='False', **env))
    url, t0 = f'http://127.0.0.1:{port}/', time.monotonic()
    while True:
        if p.poll() is not None: pytest.fail(f'the app exited ({p.returncode}):\n{Path(log.name).read_text()[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return url, p
        except OSError: pass
        if time.monotonic() - t0 > 180: p.kill(); pytest.fail(f'the app did not serve {url} in 180 s')
        time.sleep(0.5)

def _stop_app(p) -> int:
    p.terminate()
    try: return p.wait(30)
    except subprocess.TimeoutExpired: p.kill(); return p.wait()

def _rss(pid:int, field:str='VmHWM') -> int:
    "Bytes of a process's resident memory now (VmRSS) or at its peak (VmHWM); 0 without /proc"
    try: lines = Path(f'/proc/{pid}/status').read_text().splitlines()
    except OSError: return 0
    return next((int(l.split()[1]) * 1024 for l in lines if l.startswith(field + ':')), 0)

def _png_bytes(a, **kw) -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, 'PNG', **kw); return b.getvalue()

def _bomb_png(w:int, h:int) -> bytes:
    "A small PNG whose header declares w x h RGBA pixels (IDAT: a few zero rows, compressed)"
    import struct, zlib
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 6, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(b'\0' * (4 * w + 1) * 4)) + chunk(b'IEND', b''))

@pytest.fixture(scope='module')
def served_cyc(cyc, tmp_path_factory):
    "`ganlab app CYC` in its own process with a Gradio temp folder of the test's, and its console"
    if not HAS_GRADIO: pytest.skip('Gradio is not installed (pip install "ganlab[app]"; the dev extra has it)')
    d = tmp_path_factory.mktemp('served_cyc')
    (d/'gradio').mkdir()
    log = open(d/'console.log', 'w+b')
    url, p = _start_app(cyc, log, GRADIO_TEMP_DIR=str(d/'gradio'))
    yield dict(url=url, p=p, log=d/'console.log', temp=d/'gradio')
    if p.poll() is None: _stop_app(p)
    log.close()

def _client_error(c, **kw) -> str:
    "The message of the error the app answers `c.predict(**kw)` with"
    with pytest.raises(Exception) as e: c.predict(**kw)
    return str(e.value)

@pytest.mark.slow
def test_hostile_uploads_get_ganlabs_one_line_and_no_traceback(served_cyc, cyc, tmp_path):
    "Zero bytes, text named .png, a 169 Mpx decompression bomb, a 16-bit PNG, CMYK and animated uploads, as a visitor sends them"
    from gradio_client import Client, handle_file
    c = Client(served_cyc['url'], verbose=False)
    s = app.open_source(cyc, **CPU)
    files = {'empty.png': b'', 'notes.png': b'root:x:0:0:root:/root:/bin/bash\n', 'bomb.png': _bomb_png(13000, 13000)}
    for name, data in files.items(): (tmp_path/name).write_bytes(data)
    assert (tmp_path/'bomb.png').stat().st_size < 200_000
    want = {'empty.png': 'not an image', 'notes.png': 'not an image', 'bomb.png': 'larger than the pixel limit'}
    peak0 = _rss(served_cyc['p'].pid)
    for name in files:
        t = time.monotonic()
        msg = _client_error(c, photo=handle_file(tmp_path/name), api_name='/translate')
        assert f"photo '{name}'" in msg and want[name] in msg, msg
        assert 'preprocess' not in msg and str(served_cyc['temp']) not in msg and 'ganlab-app-' not in msg and 'root:x' not in msg, msg
        assert time.monotonic() - t < 20, name
    if peak0: assert _rss(served_cyc['p'].pid) - peak0 < 300e6  # the bomb allocated nothing (169 Mpx of RGBA is 676 MB)
    # 16-bit grey: read as its 8-bit twin, not as white
    ramp = np.tile(np.linspace(0, 255, 96).round().astype(np.uint16)[None], (96, 1))
    (tmp_path/'grey16.png').write_bytes(_png_bytes(ramp * 257)); (tmp_path/'grey8.png').write_bytes(_png_bytes(ramp.astype(np.uint8)))
    assert Image.open(tmp_path/'grey16.png').mode.startswith('I;16')
    a, b = (_png(c.predict(photo=handle_file(tmp_path/f), api_name='/translate')) for f in ('grey16.png', 'grey8.png'))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, app.translate(s.g, np.repeat(ramp.astype(np.uint8)[..., None], 3, -1), s.cfg.size))
    # CMYK and animated uploads still translate
    rgb = draw_digits(1, seed=3, size=80)[0][0]
    Image.fromarray(rgb).convert('CMYK').save(tmp_path/'cmyk.jpg', quality=95)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(tmp_path/'anim.gif', save_all=True, append_images=frames[1:], duration=100)
    for f in ('cmyk.jpg', 'anim.gif'): assert _png(c.predict(photo=handle_file(tmp_path/f), api_name='/translate')).shape == (256, 256, 3)
    console = served_cyc['log'].read_text(errors='replace')
    assert 'Traceback' not in console, console[-3000:]

@pytest.mark.slow
def test_page_errors_print_no_traceback(served, run):
    "Every error the page shows cleanly is one line in the page and nothing on the server's console"
    from gradio_client import Client
    c = Client(served, verbose=False)
    cases = [(dict(seed=-1, n=4, truncation=0, api_name='/sample'), 'seed must be'), (dict(seed=1, n=0, truncation=0, api_name='/sample'), 'number of images'),
             (dict(seed=1, n=4, truncation=-1, api_name='/sample'), 'truncation'), (dict(seed='x' * 1000, n=4, truncation=0, api_name='/sample'), 'seed must be'),
             (dict(seed_a=0, seed_b=1, steps=1, truncation=0, api_name='/interpolate'), 'steps'), (dict(epoch=-3, api_name='/run_samples'), 'epoch')]
    for kw, want in cases:
        msg = _client_error(c, **kw)
        assert want in msg and len(msg) < 300, msg
    assert _png(c.predict(seed=3, n=4, truncation=0, api_name='/sample')).shape == (2 * 18 + 2,) * 2 + (3,)  # and it still serves

@pytest.mark.slow
@needs_gradio
def test_console_of_the_served_sampler_has_no_traceback(run, tmp_path):
    "The served app's own console after the errors above: no traceback (a server of its own, so the log is this test's)"
    from gradio_client import Client
    with open(tmp_path/'console.log', 'w+b') as log:
        url, p = _start_app(run, log, GRADIO_TEMP_DIR=str(tmp_path))
        try:
            c = Client(url, verbose=False)
            for kw in (dict(seed=-1, n=4, truncation=0, api_name='/sample'), dict(seed=1, n=9999, truncation=0, api_name='/sample'),
                       dict(seed_a=0, seed_b=1, steps=99, truncation='x', api_name='/interpolate')):
                _client_error(c, **kw)
        finally: code = _stop_app(p)
    console = (tmp_path/'console.log').read_text(errors='replace')
    assert 'Traceback' not in console and code == 0, (code, console[-3000:])

@pytest.mark.slow
@needs_gradio
def test_run_tab_shows_only_regular_files_inside_the_run(run, tmp_path):
    from gradio_client import Client
    r = tmp_path/'r'; shutil.copytree(run, r)
    secret = tmp_path/'secret.txt'; secret.write_text('root:x:0:0:SECRET-LINE\n' * 50)
    (r/'metadata.json').unlink(); (r/'metadata.json').symlink_to(secret)
    (r/'samples'/'epoch_009.png').symlink_to(secret)
    (r/'samples'/'epoch_010.png').symlink_to('/etc/hostname' if Path('/etc/hostname').exists() else secret)
    os.mkfifo(r/'samples'/'epoch_011.png')  # a FIFO must not hang the tab
    assert list(app.sample_epochs(r)) == [1, 2]
    with pytest.raises(GanlabError, match='not a regular file inside the run folder'): app.run_settings(r)
    demo = app.launch(r, port=_free_port(), share=False, device='cpu')
    try:
        c = Client(f'http://127.0.0.1:{demo.server_port}/', verbose=False, download_files=False)
        epoch, grid, plot, table, note, settings = c.predict(api_name='/run')
        assert settings is None and epoch['value'] == 2 and grid is not None  # metadata.json linked out: a warning, not its content
        shown = c.predict(epoch=11, api_name='/run_samples')
        assert shown is not None  # the nearest regular grid (epoch 2)
        everything = json.dumps([epoch, grid, table, settings, shown], default=str)
        assert 'SECRET' not in everything and 'root:x' not in everything
    finally: demo.close()

@pytest.mark.slow
@needs_gradio
def test_served_files_are_swept_and_the_temp_folder_goes_with_the_server(run, tmp_path, monkeypatch):
    from gradio_client import Client
    # a page in this process, its files kept 2 s and swept every second
    monkeypatch.setattr(app, 'CACHE_AGE', 2); monkeypatch.setattr(app, 'CACHE_SWEEP', 1)
    demo = app.launch(run, port=_free_port(), share=False, device='cpu')
    try:
        c = Client(f'http://127.0.0.1:{demo.server_port}/', verbose=False, download_files=False)
        paths = [Path(c.predict(seed=s, n=4, truncation=0, api_name='/sample')['path']) for s in range(3)]
        assert all(p.is_file() for p in paths)
        time.sleep(4.5)
        assert not any(p.exists() for p in paths), paths
    finally: demo.close()
    # `ganlab app` in its own process: a temp folder of its own, deleted when SIGTERM stops it
    with open(tmp_path/'console.log', 'w+b') as log:
        (tmp_path/'gt').mkdir()
        url, p = _start_app(run, log, GRADIO_TEMP_DIR=str(tmp_path/'gt'))
        try:
            c = Client(url, verbose=False, download_files=False)
            served = Path(c.predict(seed=1, n=4, truncation=0, api_name='/sample')['path'])
            assert served.is_file() and served.is_relative_to(tmp_path/'gt') and served.relative_to(tmp_path/'gt').parts[0].startswith('ganlab-app-')
        finally: code = _stop_app(p)
    assert code == 0 and list((tmp_path/'gt').iterdir()) == [], (code, list((tmp_path/'gt').rglob('*'))[:5])
    assert 'Traceback' not in (tmp_path/'console.log').read_text(errors='replace')

def test_sweep_keeps_the_last_cache_age_seconds(tmp_path):
    "`serve`'s own sweep of its temporary folder (Gradio 6.31's delete_cache dies under concurrent load)"
    old, now = time.time() - app.CACHE_AGE - 5, time.time()
    for i in range(20):
        d = tmp_path/f'h{i}'; d.mkdir(); (d/'image.png').write_bytes(b'x' * 100)
        if i % 2: os.utime(d/'image.png', (old, old))
    assert app._sweep(tmp_path, app.CACHE_AGE) == 10
    assert sorted(int(p.parent.name[1:]) for p in tmp_path.rglob('*.png')) == list(range(0, 20, 2))
    for d in tmp_path.iterdir():
        if not any(d.iterdir()): os.utime(d, (old, old))
    app._sweep(tmp_path, app.CACHE_AGE)
    assert len(list(tmp_path.iterdir())) == 10  # the emptied folders go once they are as old

class Slow(nn.Module):
    "A stand-in generator that takes a second per call (inference only, as every generator is)"
    latent = 4
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(1))
    def forward(self, z): time.sleep(1); return torch.zeros(len(z), 3, 4, 4) + self.w

@pytest.mark.slow
@needs_gradio
def test_requests_are_served_concurrently_and_the_page_says_so():
    import threading
    from gradio_client import Client
    assert app.CONCURRENCY >= 2
    demo = app.launch(app.Source(g=Slow().eval(), kind='sampler'), port=_free_port(), share=False)
    try:
        assert 'served at once' in _components(demo)['header']['props']['value']
        url = f'http://127.0.0.1:{demo.server_port}/'
        clients = [Client(url, verbose=False, download_files=False) for _ in range(app.CONCURRENCY)]
        t = time.monotonic()
        ts = [threading.Thread(target=c.predict, kwargs=dict(seed=i, n=1, truncation=0, api_name='/sample')) for i, c in enumerate(clients)]
        for x in ts: x.start()
        for x in ts: x.join()
        assert time.monotonic() - t < app.CONCURRENCY - 0.5  # one at a time would take CONCURRENCY seconds
    finally: demo.close()

@pytest.mark.slow
@needs_gradio
def test_load_bench_serves_without_errors_and_leaves_no_temp_files():
    "bench/app.py's load test, short: 8 clients for 15 s (the figures of the report come from the full run)"
    import importlib.util as iu
    spec = iu.spec_from_file_location('bench_app', ROOT/'bench'/'app.py'); bench = iu.module_from_spec(spec); spec.loader.exec_module(bench)
    tmp = Path(tempfile.mkdtemp(prefix='ganlab-test-load-'))
    try:
        r = bench.load_test(bench.default_width_checkpoint(tmp, 32), clients=8, seconds=15)
        assert r['errors'] == 0 and r['grids'] > 0 and r['same seed, same bytes afterwards'], r
        assert r['tracebacks on the server console'] == 0 and r['server exit code'] == 0, r
        assert r['temp folder after the server stopped (MB, files)'][1] == 0, r
    finally: shutil.rmtree(tmp, ignore_errors=True)


# --- issue 25: what the extra does to the core's Pillow -----------------------------------------------------------

def test_readme_says_what_the_app_extra_does_to_pillow():
    "README.md's sentence on `[app]` and Pillow holds for the Gradio installed here (read from its metadata, no network)"
    import importlib.metadata as md, re
    readme = ' '.join((ROOT/'README.md').read_text(encoding='utf-8').split())
    m = re.search(r'`\[app\]` \(and `\[dev\]`, which includes it\) also installs Gradio, which requires `pillow<(\d+)`: where a newer '
                  r'Pillow is installed, pip replaces it with the newest (\d+)\.x without asking, though ganlab itself needs only `(pillow>=[\d.]+)`', readme)
    assert m, "README.md no longer says what `[app]` does to Pillow"
    cap, newest, core = int(m[1]), int(m[2]), m[3]
    assert newest == cap - 1, m[0]
    project = (ROOT/'pyproject.toml').read_text()
    assert re.search(rf'^\s*"{re.escape(core)}",', project, re.M), f'pyproject.toml no longer asks for {core}'
    assert not re.search(r'^\s*"pillow[^"]*<', project, re.M | re.I), 'the core caps Pillow: floors only'
    assert re.search(r'^app = \["gradio>=', project, re.M)
    try: requires = md.requires('gradio') or []
    except md.PackageNotFoundError: pytest.skip('Gradio is not installed (pip install "ganlab[app]"; the dev extra has it)')
    from packaging.requirements import Requirement
    pillow = [r for r in map(Requirement, requires) if r.name.lower() == 'pillow' and (r.marker is None or r.marker.evaluate())]
    assert pillow, f"Gradio {md.version('gradio')} no longer requires Pillow: change README.md's sentence (nbs/index.ipynb)"
    spec = pillow[0].specifier
    assert f'{cap - 1}.0' in spec and f'{cap}.0' not in spec, f"Gradio {md.version('gradio')} requires pillow{spec}, not pillow<{cap}: change README.md's sentence (nbs/index.ipynb) and pyproject.toml's note"
