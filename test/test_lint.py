"""The package's one style configuration (ruff.toml) holds for the code, and is the one ruff applies."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ['vpr_ros', 'test', 'benchmarks', 'launch', 'setup.py']

pytestmark = pytest.mark.linter


def _ruff() -> str:
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return str(find_ruff_bin())


def _check(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([_ruff(), 'check', '--no-cache', '--config', str(ROOT / 'ruff.toml'), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_code_passes_ruff() -> None:
    res = _check(*CHECKED)
    assert res.returncode == 0, f'ruff findings (`ruff check --fix`, or by hand):\n{res.stdout}{res.stderr}'


def test_config_enforces_line_length_and_import_order(tmp_path: Path) -> None:
    ok = tmp_path / 'ok.py'
    ok.write_text('import os\nimport sys\n\nX = "' + 'a' * 104 + '"\nprint(os, sys, X)\n')
    assert len(ok.read_text().splitlines()[3]) == 110
    assert _check(str(ok), cwd=tmp_path).returncode == 0
    long = tmp_path / 'long.py'
    long.write_text('X = "' + 'a' * 105 + '"\n')
    res = _check(str(long), cwd=tmp_path)
    assert res.returncode == 1 and 'E501' in res.stdout
    unsorted = tmp_path / 'unsorted.py'
    unsorted.write_text('import sys\nimport os\n\nprint(os, sys)\n')
    res = _check(str(unsorted), cwd=tmp_path)
    assert res.returncode == 1 and 'I001' in res.stdout

