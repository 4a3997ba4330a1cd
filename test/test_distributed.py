"""Map building on a local Ray cluster (issue 14): same map as a single-process build, even when a
worker dies mid-build."""
import os
import sys

import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.mapdb.store import VprMap
from vpr_ros.matching.keyframes import KeyframePolicy
from vpr_ros.pipeline import build_map
from vpr_ros.sources import open_source
from vpr_ros.sources.bag import write_bag

ray = pytest.importorskip('ray')

CONFIG = {'image_size': [64, 96], 'batch_size': 2}


@pytest.fixture(scope='module')
def cluster():
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the hooks below are defined in this test module, which Ray workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ray') / 'map')
    write_bag(path, textured_frames(11, size=(48, 64)))
    return path


def build(bag, out, describer=None):
    encoder = create_encoder('effnet_gem', CONFIG)
    vmap, stats = build_map(open_source(bag), encoder, out, KeyframePolicy(), progress=False,
                            local_features=None, describer=describer)
    return VprMap.load(out)


class DieOnce:
    """Kills the worker process running batch ``batch_no`` the first time (a marker file remembers)."""

    def __init__(self, marker: str, batch_no: int) -> None:
        self.marker, self.batch_no = marker, batch_no

    def __call__(self, batch_no: int) -> None:
        if batch_no == self.batch_no and not os.path.exists(self.marker):
            with open(self.marker, 'w') as fh:
                fh.write(str(os.getpid()))
            os._exit(1)


def test_ray_build_equals_local_build_even_when_a_worker_dies(cluster, bag, tmp_path):
    from vpr_ros.distributed import RayDescriber

    local = build(bag, str(tmp_path / 'local'))
    marker = str(tmp_path / 'killed')
    distributed = build(bag, str(tmp_path / 'ray'), RayDescriber('auto', 2, hook=DieOnce(marker, 2)))
    assert os.path.exists(marker)  # a worker really died on batch 2 and its task was re-run
    assert len(distributed) == len(local) == 11
    assert [p.stamp for p in distributed.places] == [p.stamp for p in local.places]
    assert [p.pose.position for p in distributed.places] == [p.pose.position for p in local.places]
    # one CPU per task vs the local thread count: same descriptors within float tolerance
    assert np.allclose(distributed.descriptors, local.descriptors, atol=1e-4)
    assert distributed.meta.encoder == local.meta.encoder


def test_cli_ray_flag(cluster, bag, tmp_path, capsys):
    from vpr_ros.cli import main

    out = str(tmp_path / 'cli')
    assert main(['build-map', '--source', bag, '--out', out, '--encoder', 'effnet_gem', '--set',
                 'image_size=[64, 96]', '--ray', 'auto', '--workers', '2', '--local-features', 'none']) == 0
    assert 'Ray: 2 encoding tasks' in capsys.readouterr().out
    assert len(VprMap.load(out)) == 11
    assert main(['build-map', '--source', bag, '--out', out, '--workers', '2']) == 2
