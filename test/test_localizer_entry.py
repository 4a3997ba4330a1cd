"""The node's entry point answers --help and a missing params file before anything starts, and
`vpr-ros node-params` writes a params file the node's table accepts."""
from __future__ import annotations

import yaml

from vpr_ros.cli import main as cli_main
from vpr_ros.localizer import main
from vpr_ros.ros.parameters import DEFAULTS, PARAMETERS, flatten_yaml_parameters


def test_help_prints_usage_without_starting_ros(capsys) -> None:
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    assert 'map_path' in out and 'image:=' in out and 'node-params' in out


def test_a_missing_params_file_is_one_line_naming_the_directory(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(['--ros-args', '--params-file', 'config/localize.yaml']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and 'vpr-ros node-params' in err


def test_node_params_is_every_parameter_at_its_default(capsys) -> None:
    assert cli_main(['node-params']) == 0
    text = capsys.readouterr().out
    params = yaml.safe_load(text)['/**']['ros__parameters']
    flat = flatten_yaml_parameters(params)
    assert flat == DEFAULTS
    for spec in PARAMETERS:  # strictly typed as rcl reads them: a float keeps its decimal point
        assert type(flat[spec.name]) is type(spec.default), spec.name
