#!/usr/bin/env python3
"""Start-up time of the `ganlab` command: how long a user waits before a command does anything.

    python bench/startup.py [--repeat 5] [--before PATH]

Each figure is the wall time of a fresh process, the median of `--repeat` runs:
- `ganlab --version` and `ganlab --help`;
- `ganlab train dcgan --help` and every other subcommand's `--help`;
- `ganlab doctor` on a one-line shard, in all (decoding, decoded.npz, the report and the plots);
- and whether `import ganlab.config` loads torch (it must not).

With `--before PATH` (a checkout of an earlier ganlab, e.g. `git worktree add /tmp/before <commit>`), the same commands
run from that source too, interleaved with the current ones so that both see the same machine, and the table shows
both. Both are run as `python -c 'from ganlab.cli import main; ...' ARGS` with `PYTHONPATH` set to their source tree,
which is what the `ganlab` console script does; the current tree is also timed through the installed `ganlab` script.
"""
import argparse, base64, io, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = 'import sys; from ganlab.cli import main; sys.exit(main(sys.argv[1:]))'


def one_line_shard(folder:Path) -> Path:
    "A shard of one valid record (a 32x32 PNG)"
    from PIL import Image
    buf = io.BytesIO(); Image.new('RGB', (32, 32), (200, 30, 30)).save(buf, 'PNG')
    p = folder/'one.jsonl'
    p.write_text(json.dumps({'id': 'r0', 'img_b64': base64.b64encode(buf.getvalue()).decode()}) + '\n')
    return p


def timed(cmd:list, env:dict) -> float:
    "Seconds of one fresh process (it must succeed), run outside any source tree so that PYTHONPATH decides which ganlab it is"
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    dt = time.perf_counter() - t0
    if r.returncode != 0: sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt


def loads_torch(src:Path) -> bool:
    r = subprocess.run([sys.executable, '-c', "import sys, ganlab.config; print('torch' in sys.modules)"],
                       env={**os.environ, 'PYTHONPATH': str(src)}, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return r.stdout.strip() == 'True' if r.returncode == 0 else 'no ganlab.config there'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeat', type=int, default=5, help='fresh processes per figure (the median is shown)')
    ap.add_argument('--before', type=Path, default=None, help='a checkout of an earlier ganlab to compare with')
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='bench-startup-'))
    shard = one_line_shard(tmp)
    sys.path.insert(0, str(ROOT))
    from ganlab.cli import COMMANDS, Group  # every subcommand the current tree has (importing the CLI loads no torch)
    subs = [n for n in COMMANDS if n != 'train'] + [f'{n} {x}' for n, c in COMMANDS.items() if isinstance(c, Group) for x in c.actions]
    cases = [('--version', ['--version']), ('--help', ['--help']), ('train dcgan --help', ['train', 'dcgan', '--help']),
             ('train cyclegan --help', ['train', 'cyclegan', '--help'])]
    cases += [(f'{s} --help', s.split() + ['--help']) for s in subs]
    cases += [('doctor, one-line shard', ['doctor', str(shard), '--out', '{out}'])]
    trees = {'now': ROOT} | ({'before': a.before.resolve()} if a.before else {})
    env = {k: {**os.environ, 'PYTHONPATH': str(src), 'PYTHONWARNINGS': 'ignore'} for k, src in trees.items()}
    exe = shutil.which('ganlab')
    times = {}
    for rep in range(a.repeat):
        for name, args in cases:
            for tree in trees:
                argv = [x.replace('{out}', str(tmp/f'out-{tree}-{rep}')) for x in args]
                # a subcommand the earlier tree does not have is skipped there
                if (name, tree) in times and times[(name, tree)] is None: continue
                try: times.setdefault((name, tree), []).append(timed([sys.executable, '-c', RUN, *argv], env[tree]))
                except SystemExit:
                    if tree == 'now': raise
                    times[(name, tree)] = None
            if exe: times.setdefault((name, 'script'), []).append(timed([exe, *[x.replace('{out}', str(tmp/f'out-script-{rep}')) for x in args]], env['now']))
    med = lambda k: None if times.get(k) is None else statistics.median(times[k])
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; median of {a.repeat} fresh processes, seconds")
    head = f"{'command':<28}" + ''.join(f'{t:>15}' for t in (*trees, *(['ganlab script'] if exe else [])))
    print(head); print('-' * len(head))
    for name, _ in cases:
        cells = [med((name, t)) for t in trees] + ([med((name, 'script'))] if exe else [])
        print(f'{name:<28}' + ''.join(f'{"-" if v is None else f"{v:.3f}":>15}' for v in cells))
    for tree, src in trees.items(): print(f'import ganlab.config loads torch ({tree}): {loads_torch(src)}')
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
