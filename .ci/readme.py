#!/usr/bin/env python3
"""Render README.md from nbs/index.ipynb (what `nbdev-readme` does, without Quarto, which needs a download).

Usage: python .ci/readme.py           write README.md
       python .ci/readme.py --check   exit 1 (with a diff) when README.md is not what the notebook renders to
Cells with `#| hide` are left out, `#| echo: false` shows only a cell's output, `#| output: false` only its code.
Text outputs are kept; images are not (the README stays text)."""
import difflib, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB, README = ROOT/'nbs'/'index.ipynb', ROOT/'README.md'
HEADER = '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n'


def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def _directives(lines):
    "The `#|` directives at the top of a cell, as {name: value}"
    out = {}
    for l in lines:
        if not l.startswith('#|'): break
        k, _, v = l[2:].strip().partition(':')
        k = k.split()[0] if k.split() else ''
        out[k] = v.strip() or ' '.join(l[2:].split()[1:])
    return out


def _text(x): return ''.join(x) if isinstance(x, list) else x


def _outputs(cell):
    "Markdown for a code cell's text outputs"
    parts, stream = [], []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream': stream.append(_text(o['text'])); continue
        if stream: parts.append('```\n' + ''.join(stream).rstrip('\n') + '\n```'); stream = []
        data = o.get('data', {})
        if 'text/markdown' in data: parts.append(_text(data['text/markdown']).strip())
        elif 'text/plain' in data and 'image/png' not in data: parts.append('```\n' + _text(data['text/plain']).rstrip('\n') + '\n```')
    if stream: parts.append('```\n' + ''.join(stream).rstrip('\n') + '\n```')
    return parts


def render(nb_path=NB) -> str:
    "README text for notebook `nb_path`"
    nb, parts = json.loads(Path(nb_path).read_text()), []
    for cell in nb['cells']:
        lines = _src(cell).splitlines()
        d = _directives(lines)
        if 'hide' in d or 'default_exp' in d: continue
        body = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
        if cell['cell_type'] == 'markdown':
            if body: parts.append(body)
            continue
        if cell['cell_type'] != 'code': continue
        if d.get('echo') != 'false' and body: parts.append('```python\n' + body + '\n```')
        if d.get('output') != 'false': parts += _outputs(cell)
    return HEADER + '\n\n'.join(parts) + '\n'


def main(argv):
    text = render()
    if '--check' in argv:
        old = README.read_text() if README.exists() else ''
        if old == text: print('README.md matches nbs/index.ipynb'); return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), 'README.md', 'rendered from nbs/index.ipynb'))
        print('\nREADME.md is out of date: run `python .ci/readme.py` and commit it'); return 1
    README.write_text(text); print(f'wrote {README.relative_to(ROOT)}'); return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
