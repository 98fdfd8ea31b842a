"""bench/gpu_check.py, the one-shot GPU acceptance script, is known to start: its whole plan runs on the CPU (`--dry-run`).

No GPU is lent to this project most of the time, and when one is, the script gets one try; this test runs every
check's code path on the CPU, tiny, as a subprocess, and reads the report. It takes about a minute on the 2-core
development machine: the script's own time limits stop the dry run at 115 s (a check over its limit is killed and
reported as failed), and the subprocess is killed at 170 s, so the test cannot hang CI.
"""
import json, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT/'bench'/'gpu_check.py'
CHECKS = ('launch', 'fp16', 'syncs', 'checkpoint', 'features', 'speed', 'cuda_cells')


def run(*args, timeout=170):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    "One dry run of the whole plan: (completed process, report, output folder, wall seconds)"
    out = tmp_path_factory.mktemp('gpu_check')
    t = time.perf_counter()
    r = run('--dry-run', '--out', out)
    wall = time.perf_counter() - t
    assert (out/'report.json').is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads((out/'report.json').read_text()), out, wall


@pytest.mark.slow
def test_every_check_ran_and_none_failed(dry):
    r, rep, out, wall = dry
    got = {c['name']: c for c in rep['checks']}
    assert tuple(got) == CHECKS, list(got)
    failed = {k: c['reason'] for k, c in got.items() if c['status'] != 'pass'}
    assert not failed, failed
    assert r.returncode == 0 and rep['exit_status'] == 0, r.stdout[-3000:]
    for c in rep['checks']:
        assert c['parts'] and all(p['status'] in ('pass', 'skipped') for p in c['parts'].values()), (c['name'], c['parts'])
        assert any('dry-run: cpu' in n for n in c['notes']), c['name']  # said in the report, check by check


@pytest.mark.slow
def test_the_report_says_what_ran_where(dry):
    r, rep, out, wall = dry
    assert rep['dry_run'] and rep['mode'] == 'dry-run: cpu' and 'bench/gpu_check.py --dry-run --out' in rep['command']
    env = rep['environment']
    assert env['torch'] and env['python'] and env['cuda_available'] in (True, False) and 'fastcore' in env['packages']
    assert rep['wall_s'] < 120 and wall < 150, (rep['wall_s'], wall)  # the dry run's promise: the whole plan in under 2 minutes
    assert rep['summary'] == {'pass': len(CHECKS), 'fail': 0, 'skipped': 0}
    c = {c['name']: c for c in rep['checks']}
    assert c['launch']['parts']['dcgan']['world'] == 2 and c['launch']['parts']['dcgan']['rank0']['backend'] == 'gloo'
    assert c['fp16']['parts']['dcgan-fp16']['scaler'] == 'on' and c['fp16']['parts']['cut-fp16']['losses_finite']
    assert c['syncs']['parts']['counter-self-test']['seen'] == 3
    dc = c['syncs']['parts']['dcgan-default']  # the dry run's one synthetic sync warning per step, counted and placed
    assert dc['syncs_per_step_in_task_step'] == dc['synthetic_per_step'] == 1 and dc['syncs_per_step_in_loop'] == 0
    assert dc['sources'][0]['ganlab'].startswith('ganlab/train.py') and dc['sources'][0]['per_step'] == 1
    assert c['checkpoint']['parts']['load-on-cpu']['tensor_devices'] == ['cpu']
    assert c['speed']['parts']['dcgan-batch8']['baseline_img_per_s'] > 0
    assert c['cuda_cells']['numbers']['notebooks']  # the notebooks with `#| cuda` cells, listed
    probe = c['cuda_cells']['parts']['nbdev-test-probe']  # the GPU run's nbdev-test invocation selects the cuda cells
    assert probe['with_flags_cuda']['cuda_cell_ran'] and not probe['without_flags']['cuda_cell_ran']
    for ch in rep['checks']: assert ch['seconds'] <= ch['budget_s'] + 6, (ch['name'], ch['seconds'], ch['budget_s'])


@pytest.mark.slow
def test_markdown_section_and_log(dry):
    r, rep, out, wall = dry
    md = (out/'RESULTS-section.md').read_text()
    assert md.startswith('## GPU acceptance check') and rep['command'] in md
    for name in CHECKS: assert f'### {name}: pass' in md
    log = (out/'gpu_check.log').read_text()
    assert '== launch: budget' in log and 'passed, 0 failed' in log  # progress lines and the summary table
    assert str(Path.home()) not in json.dumps(rep['checks'])  # no machine paths in the checks' numbers


def test_list_and_selection():
    r = run('--list', timeout=60)
    assert r.returncode == 0 and [l.split()[0] for l in r.stdout.splitlines()][:len(CHECKS)] == list(CHECKS)
    r = run('--only', 'launch,bogus', '--dry-run', timeout=60)
    assert r.returncode != 0 and 'bogus' in r.stderr
