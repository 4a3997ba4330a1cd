"""Map building on a Ray cluster (optional extra ``[ray]``): ``vpr-ros build-map ... --ray auto``.

The driver (the process running build-map) reads the source in order, selects keyframes, fits
what the encoder learns from the map (VLAD vocabulary / PCA, over a sample of keyframes, as in a
single-process build), and sends batches of keyframe images to Ray tasks; the tasks encode them
(and extract local features) on the cluster's workers, one CPU each. The driver receives the
results in submission order and writes the same map format, atomically, as a local build.

A task is a pure function of its batch, so when a worker dies Ray re-runs the task
(``max_retries``) and the driver still receives exactly one result per batch, in order: no frame
is lost or duplicated. At most ``2 x workers`` batches are in flight, which bounds the driver's
memory whatever the source's size.
"""
from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from vpr_ros.encoders.base import Encoder
from vpr_ros.errors import ConfigError
from vpr_ros.frames import Frame

TASK_RETRIES = 3
_ENCODERS: dict[str, Encoder] = {}  # per worker process: one encoder per identity


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError('--ray needs the ray package: pip install "vpr_ros[ray]"') from exc
    return ray


def connect(address: str, workers: int | None = None) -> int:
    """Join the Ray cluster at ``address``; 'auto' joins a running one or starts a local one.

    Returns the cluster's CPU count.
    """
    ray = _import_ray()
    if not ray.is_initialized():
        if address == 'auto':
            try:
                ray.init(address='auto', log_to_driver=False)
            except ConnectionError:
                ray.init(num_cpus=workers or None, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, ValueError) as exc:
                raise ConfigError(f'cannot join the Ray cluster at {address}: {exc}') from exc
    return int(ray.cluster_resources().get('CPU', 1))


def _encode_task(spec: str, state: dict[str, np.ndarray], images: list[np.ndarray], local_features: Any,
                 hook: Callable[[int], None] | None,
                 batch_no: int) -> tuple[list[np.ndarray], list[Any], float]:
    from vpr_ros.encoders.base import create_encoder
    from vpr_ros.pipeline import describe_batch

    if hook is not None:
        hook(batch_no)
    encoder = _ENCODERS.get(spec)
    if encoder is None:
        name, config = json.loads(spec)
        encoder = _ENCODERS[spec] = create_encoder(name, config, state or None)
    return describe_batch(encoder, images, local_features)


class RayDescriber:
    """Encodes batches of keyframes as Ray tasks (see the module docstring).

    ``hook(batch_no)`` runs inside the task before encoding (instrumentation and fault tests).
    """

    def __init__(self, address: str = 'auto', workers: int | None = None,
                 hook: Callable[[int], None] | None = None) -> None:
        self.cpus = connect(address, workers)
        self.workers = max(1, int(workers or self.cpus))
        self.hook = hook

    def __call__(self, batches: Iterable[list[Frame]], encoder: Encoder,
                 local_features: Any) -> Iterator[tuple[list[Frame], list[np.ndarray], list[Any], float]]:
        ray = _import_ray()
        config = {**encoder.config, 'threads': 1}  # one CPU per task
        spec = json.dumps([encoder.name, config], sort_keys=True, default=str)
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)(_encode_task)
        state_ref = ray.put(encoder.get_state())
        in_flight: deque = deque()
        for batch_no, batch in enumerate(batches):
            ref = task.remote(spec, state_ref, [f.rgb for f in batch], local_features, self.hook, batch_no)
            in_flight.append((batch, ref))
            if len(in_flight) >= 2 * self.workers:
                yield self._result(ray, *in_flight.popleft())
        while in_flight:
            yield self._result(ray, *in_flight.popleft())

    @staticmethod
    def _result(ray, batch: list[Frame], ref) -> tuple[list[Frame], list[np.ndarray], list[Any], float]:
        sets, feats, seconds = ray.get(ref)
        if len(sets) != len(batch):
            raise RuntimeError(f'a Ray task returned {len(sets)} descriptor sets for {len(batch)} images')
        return batch, sets, feats, seconds
