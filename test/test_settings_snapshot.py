"""What users see of the settings stays as it was: the node's parameters (name, default, range, restart,
description) and every CLI option (flags, default, range, choices) of every subcommand, against snapshots
taken before the settings were generated from the config dataclasses (test/snapshots/).

Refresh a snapshot only for a deliberate, reported change: ``python test/test_settings_snapshot.py``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SNAPSHOTS = Path(__file__).resolve().parent / 'snapshots'


def parameter_table() -> dict[str, dict[str, Any]]:
    from vpr_ros.ros.parameters import PARAMETERS

    return {p.name: {'default': p.default, 'type': type(p.default).__name__, 'low': p.low, 'high': p.high,
                     'read_only': p.read_only, 'description': p.description} for p in PARAMETERS}


def _option(action: argparse.Action) -> dict[str, Any]:
    kind = action.type
    number = ({'kind': kind.kind.__name__, 'low': kind.low, 'high': kind.high, 'low_open': kind.low_open}
              if hasattr(kind, 'kind') else getattr(kind, '__name__', None))
    default = action.default if action.default is not argparse.SUPPRESS else 'SUPPRESS'
    return {'dest': action.dest, 'default': list(default) if isinstance(default, tuple) else default,
            'type': number, 'choices': list(action.choices) if action.choices is not None else None,
            'nargs': action.nargs, 'required': action.required, 'action': type(action).__name__}


def cli_options() -> dict[str, dict[str, Any]]:
    from vpr_ros.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, dict[str, Any]] = {}
    for command, p in sorted(sub.choices.items()):
        out[command] = {' '.join(a.option_strings) or a.dest: _option(a) for a in p._actions
                        if not isinstance(a, argparse._HelpAction)}
    return out


def _load(name: str) -> Any:
    return json.loads((SNAPSHOTS / name).read_text(encoding='utf-8'))


def _roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_node_parameters_are_the_snapshots() -> None:
    assert _roundtrip(parameter_table()) == _load('parameters.json')


# Options added since the snapshot, deliberately: sequence.velocity_step was the one sequence setting
# without an option; posegraph's evaluate --direction-only-closures (every pose-graph closure
# direction-only, for the comparison with metric closures) merged after the snapshot was taken.
ADDED = {'evaluate': {'--sequence-velocity-step', '--direction-only-closures'},
         'replay': {'--sequence-velocity-step'}}


def _seen(options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a user sees of each option: everything but ``dest``, the attribute name the code reads."""
    return {flag: {k: v for k, v in option.items() if k != 'dest'} for flag, option in options.items()}


def test_cli_options_are_the_snapshots() -> None:
    current, expected = _roundtrip(cli_options()), _load('cli_options.json')
    assert sorted(current) == sorted(expected)
    for command in expected:
        added = ADDED.get(command, set())
        assert added <= set(current[command]), command
        shown = {flag: option for flag, option in current[command].items() if flag not in added}
        assert _seen(shown) == _seen(expected[command]), command


if __name__ == '__main__':
    for name, table in (('parameters.json', parameter_table()), ('cli_options.json', cli_options())):
        (SNAPSHOTS / name).write_text(json.dumps(table, indent=1, sort_keys=True) + '\n', encoding='utf-8')
        print(f'wrote {SNAPSHOTS / name}', file=sys.stderr)
