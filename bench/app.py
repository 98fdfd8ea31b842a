#!/usr/bin/env python3
"""The Gradio app (issues 17 and 27): how long `serve` takes to a served page, how long one 8x8 grid takes, a
screenshot of each tab, and the served app under load.

    python bench/app.py [--run DEMO/train] [--repeat 5] [--shots bench/app]
    python bench/app.py --load [--clients 32] [--seconds 60] [--size 64] [--server-path CHECKOUT]

1. **Launch to page**: `python -c "from ganlab.app import serve; serve(RUN, port=P)"` (what `ganlab app RUN` runs)
   is started, and `GET /` is polled every 50 ms until it answers 200; the process is then stopped. `--repeat` times.
2. **One 8x8 grid** at 32 and 64 pixels from DCGAN generators of the default width (latent 100, g_width 64; random
   weights: the time does not depend on them): `ganlab.app.sample_grid(g, 64, seed)` in this process, and the same
   grid through a served app with `gradio_client` (`/sample`: the request, the forward pass, the PNG written and
   fetched). The four are interleaved, `--repeat` rounds after one warm-up round; medians are printed.
3. **Screenshots** (`--shots`) in headless Debian Chromium through selenium: the Sample tab after Sample and
   Interpolate are pressed, the Run tab of `--run`, and the Translate tab of a small CycleGAN (trained here for one
   epoch on the shared Monet shard and drawn digits, so its output is far from Monet) after a photo is translated.

4. **Under load** (`--load`, only this): `serve` of a default-width DCGAN at `--size` pixels in its own process,
   with its own `GRADIO_TEMP_DIR`; `--clients` threads, each with its own `gradio_client.Client`, ask `/sample` for
   8x8 grids of random seeds and fetch each grid's PNG (what a browser does) for `--seconds`. Printed: grids served,
   errors, requests/s, p50/p99 latency (request to PNG fetched), the server's peak memory (`VmHWM`), the size and
   file count of the Gradio temp folder at the end of the load and again after the server is stopped (SIGTERM), and
   whether the same seed still gives the same bytes afterwards. `--server-path` serves an older checkout's `ganlab`
   (a folder holding `ganlab/`, e.g. `git worktree add ../before HEAD~1`) to measure before and after a change.

`--run` is a run folder to show (default: a 16-pixel DCGAN trained here for 2 epochs); `ganlab demo --out DEMO`
makes a better one in DEMO/train (60 epochs of digits, about two minutes on two cores).
"""
import argparse, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
from ganlab import app
from ganlab.data import ImageArrayDataset, draw_digits
from ganlab.train import train


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start(source, port:int, root:Path=ROOT, stderr=subprocess.PIPE, **env) -> subprocess.Popen:
    "`serve(source)` in its own process, as `ganlab app SOURCE --port PORT` runs it (`root`'s ganlab; `env` added)"
    code = f'from ganlab.app import serve; serve({str(source)!r}, port={port}, device="cpu", quiet=True)'
    return subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.DEVNULL, stderr=stderr, cwd=str(root),  # `python -c` puts its folder first
                            env=dict(os.environ, PYTHONPATH=str(root), **env))


def wait_for_page(p:subprocess.Popen, url:str, limit:float=300) -> float:
    "Seconds until `url` answers 200 (polled every 50 ms)"
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if p.poll() is not None: raise SystemExit(f'the app exited: {p.stderr.read().decode()[-2000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return time.perf_counter() - t0
        except OSError: pass
        time.sleep(0.05)
    raise SystemExit(f'{url} did not answer in {limit} s')


def stop(p:subprocess.Popen):
    p.terminate()
    try: p.wait(20)
    except subprocess.TimeoutExpired: p.kill(); p.wait()


def tiny_run(out:Path) -> Path:
    train('dcgan', dataset=ImageArrayDataset(draw_digits(256, seed=1, size=16)[0]), out=out, quiet=True, size=16, epochs=2,
          batch=32, g_width=8, d_width=8, latent=16, ema=0.9, samples=16, log_every=2, tensorboard=False, device='cpu')
    return out


def default_width_checkpoint(tmp:Path, size:int) -> Path:
    "A checkpoint of a default-width DCGAN at `size` pixels (one training step on a few digits)"
    train('dcgan', dataset=ImageArrayDataset(draw_digits(16, seed=0, size=size)[0]), out=tmp/f'dcgan{size}', quiet=True, size=size,
          batch=16, epochs=1, samples=4, tensorboard=False, device='cpu')
    return tmp/f'dcgan{size}'/'checkpoints'/'last.pt'


def import_time(module:str) -> float:
    "Seconds a fresh Python takes to import `module` (its start-up subtracted)"
    def run(code):
        t = time.perf_counter(); subprocess.run([sys.executable, '-c', code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT))); return time.perf_counter() - t
    return run(f'import {module}') - run('pass')


def launch_times(source, repeat:int) -> dict:
    "Launch → served page, interleaved with the import times of gradio and torch in fresh processes"
    out = {'launch -> served page': [], 'import gradio': [], 'import torch': []}
    for _ in range(repeat):
        port = free_port()
        p = start(source, port)
        try: out['launch -> served page'].append(wait_for_page(p, f'http://127.0.0.1:{port}/'))
        finally: stop(p)
        out['import gradio'].append(import_time('gradio')); out['import torch'].append(import_time('torch'))
    return out


def grid_times(ckpts:dict, repeat:int) -> dict:
    "Medians of one 8x8 grid in process and through gradio_client, per size, interleaved"
    from gradio_client import Client
    gens = {s: app.open_source(c, device='cpu').g for s, c in ckpts.items()}
    procs, clients = {}, {}
    try:
        for s, c in ckpts.items():
            port = free_port(); procs[s] = start(c, port)
            wait_for_page(procs[s], f'http://127.0.0.1:{port}/')
            clients[s] = Client(f'http://127.0.0.1:{port}/', verbose=False)
        times = {(s, k): [] for s in ckpts for k in ('in process', 'gradio_client')}
        for r in range(repeat + 1):  # round 0 warms up
            for s in ckpts:
                t = time.perf_counter(); grid = app.sample_grid(gens[s], 64, seed=r); a = time.perf_counter() - t
                t = time.perf_counter(); f = clients[s].predict(seed=r, n=64, truncation=0, api_name='/sample'); b = time.perf_counter() - t
                assert grid.shape == (8 * (s + 2) + 2,) * 2 + (3,) and Path(f).stat().st_size > 0
                if r: times[(s, 'in process')].append(a); times[(s, 'gradio_client')].append(b)
        return times
    finally:
        for p in procs.values(): stop(p)


def folder_size(d:Path) -> tuple:
    "`(bytes on disk, files)` under `d` (folders counted as `du` counts them)"
    size = files = 0
    for q in [d, *d.rglob('*')]:
        try: st = q.lstat()
        except FileNotFoundError: continue
        size += st.st_blocks * 512; files += q.is_file()
    return size, files


def peak_rss(pid:int) -> int:
    "Bytes of the process's peak resident memory (`VmHWM`)"
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmHWM:'): return int(line.split()[1]) * 1024
    return 0


def load_test(ckpt:Path, clients:int, seconds:float, root:Path=ROOT) -> dict:
    "Serve `ckpt` and ask for 8x8 grids from `clients` threads for `seconds`; the figures of `bench/app.py --load`"
    import threading, httpx
    from gradio_client import Client
    tmp = Path(tempfile.mkdtemp(prefix='ganlab-bench-load-'))
    gtemp, log = tmp/'gradio', tmp/'server.log'
    gtemp.mkdir()
    port = free_port()
    with open(log, 'wb') as err:
        p = start(ckpt, port, root, stderr=err, GRADIO_TEMP_DIR=str(gtemp))
    url = f'http://127.0.0.1:{port}/'
    lat, errors, lock = [], [], threading.Lock()
    try:
        wait_for_page(p, url)
        Client(url, verbose=False, download_files=False).predict(seed=0, n=64, truncation=0, api_name='/sample')  # warm-up
        ready, go = threading.Barrier(clients + 1), threading.Event()
        def client(i):
            c, http = Client(url, verbose=False, download_files=False), httpx.Client(timeout=120)
            rng = np.random.default_rng(i)
            ready.wait(); go.wait()
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    f = c.predict(seed=int(rng.integers(2**31)), n=64, truncation=0, api_name='/sample')
                    r = http.get(f['url'] if isinstance(f, dict) else f.url); r.raise_for_status()
                    with lock: lat.append(time.perf_counter() - t)
                except Exception as e:
                    with lock: errors.append(f'{type(e).__name__}: {str(e)[:200]}')
        ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in ts: t.start()
        ready.wait()
        t0 = time.perf_counter(); stop_at = t0 + seconds; go.set()
        for t in ts: t.join()
        wall = time.perf_counter() - t0
        loaded, peak = folder_size(gtemp), peak_rss(p.pid)
        c = Client(url, verbose=False, download_files=str(tmp/'client'))
        same = Path(c.predict(seed=3, n=64, truncation=0, api_name='/sample')).read_bytes() == Path(c.predict(seed=3, n=64, truncation=0, api_name='/sample')).read_bytes()
    finally: stop(p)
    lat = np.array(lat)
    return {'grids': len(lat), 'errors': len(errors), 'first errors': errors[:3], 'seconds': wall, 'requests/s': len(lat) / wall,
            'p50 s': float(np.percentile(lat, 50)) if len(lat) else None, 'p99 s': float(np.percentile(lat, 99)) if len(lat) else None,
            'peak server memory GB': peak / 1e9, 'temp folder at the end of the load (MB, files)': (loaded[0] / 1e6, loaded[1]),
            'temp folder after the server stopped (MB, files)': (folder_size(gtemp)[0] / 1e6, folder_size(gtemp)[1]),
            'same seed, same bytes afterwards': same, 'server exit code': p.returncode,
            'tracebacks on the server console': log.read_text(errors='replace').count('Traceback')}


def browser():
    import shutil
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = shutil.which('chromium')
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--window-size=1100,1000', '--hide-scrollbars',
              f'--user-data-dir={tempfile.mkdtemp(prefix="ganlab-chromium-")}'):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=o)


def shoot(b, path:Path, height:int):
    "A screenshot of the page's top `height` pixels, as a palette PNG (small enough to commit)"
    from PIL import Image
    b.set_window_size(1100, height)
    b.execute_script('window.scrollTo(0, 0)')
    time.sleep(0.5)
    b.save_screenshot(str(path))
    Image.open(path).convert('RGB').quantize(128, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f'  {path} ({path.stat().st_size // 1024} KiB)')


def screenshots(run:Path, cyc:Path, photo:Path, out:Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    out.mkdir(parents=True, exist_ok=True)
    loaded = lambda sel: lambda b: [i for i in b.find_elements(By.CSS_SELECTOR, sel) if b.execute_script('return arguments[0].complete && arguments[0].naturalWidth', i)]
    b = browser()
    try:
        for source, tabs in ((run, ('sample', 'run')), (cyc, ('translate',))):
            port = free_port(); p = start(source, port)
            try:
                wait_for_page(p, f'http://127.0.0.1:{port}/')
                b.get(f'http://127.0.0.1:{port}/')
                wait = WebDriverWait(b, 120)
                wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'button[role="tab"]'))
                for tab in tabs:
                    b.find_element(By.XPATH, f'//button[@role="tab" and normalize-space()="{tab.title()}"]').click()
                    if tab == 'sample':
                        b.find_element(By.ID, 'sample-button').click(); wait.until(loaded('#sample-grid img'))
                        b.find_element(By.ID, 'interpolate-button').click(); wait.until(loaded('#interpolation img'))
                        shoot(b, out/'sample.png', 1250)
                    elif tab == 'run':
                        wait.until(loaded('#run-samples img')); wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '#run-plot img, #run-plot svg, #run-plot canvas'))
                        shoot(b, out/'run.png', 1500)
                    else:
                        b.find_element(By.CSS_SELECTOR, '#photo input[type=file]').send_keys(str(photo))
                        wait.until(loaded('#photo img'))
                        b.find_element(By.ID, 'translate-button').click(); wait.until(loaded('#monet img'))
                        shoot(b, out/'translate.png', 700)
            finally: stop(p)
    finally: b.quit()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--run', type=Path, help='a run folder to show (default: a tiny one trained here)')
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--shots', type=Path, default=ROOT/'bench'/'app', help='where the screenshots go (empty: none)')
    ap.add_argument('--load', action='store_true', help='only the load test')
    ap.add_argument('--clients', type=int, default=32, help='load test: clients asking at once')
    ap.add_argument('--seconds', type=float, default=60, help='load test: how long they ask')
    ap.add_argument('--size', type=int, default=64, help="load test: the generator's side in pixels")
    ap.add_argument('--server-path', type=Path, default=ROOT, help="load test: the folder whose ganlab/ serves (default: this checkout)")
    a = ap.parse_args()
    import torch, gradio
    print(f'python {sys.version.split()[0]}, torch {torch.__version__}, gradio {gradio.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}')
    tmp = Path(tempfile.mkdtemp(prefix='ganlab-bench-app-'))
    if a.load:
        r = load_test(default_width_checkpoint(tmp, a.size), a.clients, a.seconds, a.server_path.resolve())
        print(f'load: {a.clients} clients for {a.seconds:g} s, 8x8 grids at {a.size} px, served by {"this checkout" if a.server_path.resolve() == ROOT else "another checkout"}')
        for k, v in r.items(): print(f'  {k}: {v:.3f}' if isinstance(v, float) else f'  {k}: {v}')
        print(f'load average at the end: {os.getloadavg()[0]:.1f}')
        return
    run = a.run or tiny_run(tmp/'run')
    for k, t in launch_times(run, a.repeat).items():
        print(f'{k} ({run if k.startswith("launch") else "a fresh python"}, {a.repeat} times): median {statistics.median(t):.2f} s, min {min(t):.2f} s, max {max(t):.2f} s')
    times = grid_times({s: default_width_checkpoint(tmp, s) for s in (32, 64)}, a.repeat)
    for (s, k), v in times.items():
        print(f'one 8x8 grid at {s} px, {k}: median {statistics.median(v) * 1000:.0f} ms (min {min(v) * 1000:.0f}, max {max(v) * 1000:.0f}; {len(v)} rounds)')
    if str(a.shots):
        from ganlab.core import shared_data
        from PIL import Image
        d, rng = shared_data(), np.random.default_rng(0)
        monet = d/'monet'/'monet00-60.tfrec' if d is not None and (d/'monet'/'monet00-60.tfrec').is_file() else None
        monet = monet or (rng.random((8, 64, 64, 3)) * 255).astype(np.uint8)
        ds = {'monet': monet, 'photo': draw_digits(40, seed=1, size=64)[0]} if not isinstance(monet, Path) else None
        kw = dict(out=tmp/'cyc', quiet=True, size=64, ngf=16, ndf=16, g_arch='resnet6', epochs=1, batch=4, samples=2, tensorboard=False, device='cpu')
        if ds is None:
            photos = tmp/'photos'; photos.mkdir()
            for i, im in enumerate(draw_digits(40, seed=1, size=64)[0]): Image.fromarray(im).save(photos/f'd{i}.png')
            train('cyclegan', monet=str(monet), photo=str(photos), **kw)
        else: train('cyclegan', dataset=ds, **kw)
        photo = tmp/'photo.png'
        Image.fromarray(draw_digits(1, seed=11, size=256)[0][0]).save(photo)
        screenshots(run, tmp/'cyc', photo, a.shots)
    print(f'load average at the end: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()
