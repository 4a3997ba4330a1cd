"""`vpr-ros train` on the sample world: trained heads against the training-free encoders on a
stretch of the route that training never saw. Prints a table (and --json); no pass/fail.

Data: the sample world's ``mapping`` drive (sunny) and ``query`` drive (overcast autumn evening,
other lane) as two sessions. The test stretch is the first ``--test`` fraction of the mapping
drive's path; every frame of either session within 5 m of it is test data, and training (places
and validation) only uses frames more than 25 m (neg_dist) from it: ``exclude_segment``.
Validation picks the best epoch on another stretch (``val_segment``). Test: the mapping frames of
the stretch are the database, the query drive's frames there the queries, Recall@1/5 at ``--dist`` (25 m).
Training-free encoders see exactly the same database and queries (map-fitted vocabularies are fitted
on the test database, as build-map would). ``--sessions mapping`` trains on the sunny drive only:
then the test condition (evening) is unseen too; ``--sessions mapping query viewpoint`` adds the
offset, yawed drive as a third session (rendered on first use).

Heads: BoQ, MixVPR, NetVLAD on the frozen EfficientNet-Lite0 (ImageNet), default training
settings except epochs (``--train-blocks N``: its last N blocks trained too). Run it with nothing
else on the CPU (``flock -x /tmp/vpr-cpu.lock``); reports seconds per epoch.

    .venv/bin/python benchmarks/bench_train.py [--scale 0.4] [--epochs 8] [--heads boq mixvpr netvlad]
        [--dist 25] [--train-blocks 3] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.sample import generate_sample  # noqa: E402
from vpr_ros.sources import open_source  # noqa: E402
from vpr_ros.training.places import FrameTable, path_stretch, recall_at, region_masks  # noqa: E402
from vpr_ros.training.trainer import train  # noqa: E402

TRAINING_FREE = ['effnet_gem', 'anyloc_vlad', 'sift_vlad', 'orb_bovw', 'raw_pixels']


def load(path: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    frames = list(open_source(path).frames())
    return ([f.rgb for f in frames], np.array([f.pose.position for f in frames]),
            np.array([f.stamp for f in frames]))


def test_split(bags: dict[str, str], test: tuple[float, float]) -> dict[str, tuple[list, np.ndarray]]:
    m_rgb, m_xyz, m_t = load(bags['mapping'])
    q_rgb, q_xyz, q_t = load(bags['query'])
    table = FrameTable(np.concatenate([m_xyz, q_xyz]), np.zeros(len(m_xyz) + len(q_xyz)),
                       np.concatenate([m_t, q_t]), np.r_[np.zeros(len(m_xyz), int), np.ones(len(q_xyz), int)])
    inside, _ = region_masks(table, path_stretch(table, test), 10.0, 25.0)
    db, q = inside[:len(m_xyz)], inside[len(m_xyz):]
    return {'db': ([m_rgb[i] for i in np.flatnonzero(db)], m_xyz[db]),
            'q': ([q_rgb[i] for i in np.flatnonzero(q)], q_xyz[q])}


def score(encoder, split, dist_m: float) -> dict[str, float]:
    db_img, db_xyz = split['db']
    q_img, q_xyz = split['q']
    if encoder.requires_fit:
        encoder.fit(db_img)
    return recall_at(encoder.encode(db_img), encoder.encode(q_img), db_xyz, q_xyz, dist_m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--scale', type=float, default=0.4)
    ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--heads', nargs='+', default=['boq', 'mixvpr', 'netvlad'])
    ap.add_argument('--sessions', nargs='+', default=['mapping', 'query'],
                    choices=['mapping', 'query', 'viewpoint'],
                    help='training sessions; viewpoint is the 5-6 m offset, yawed drive')
    ap.add_argument('--test', type=float, nargs=2, default=[0.0, 0.3],
                    help='test stretch of the mapping path')
    ap.add_argument('--val', type=float, nargs=2, default=[0.45, 0.6], help='validation stretch')
    ap.add_argument('--train-blocks', type=int, default=0,
                    help='train setting train_blocks: last backbone blocks trained too (0 = frozen)')
    ap.add_argument('--seed', type=int, default=0,
                    help='train setting seed (augmented copies, batches, head init): repeat with others '
                         'to see how much of a difference is the draw')
    ap.add_argument('--dist', type=float, default=25.0,
                    help='test and validation Recall@N threshold [m] (25 saturates on small worlds)')
    ap.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'vpr_bench_train'))
    ap.add_argument('--json')
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = os.path.join(args.work, f'sample_{args.scale:g}')
    needed = sorted({'mapping', 'query', *args.sessions})
    missing = tuple(n for n in needed if not os.path.isdir(os.path.join(data, n)))
    if missing:
        generate_sample(data, scale=args.scale, traversals=missing, progress=False)
    bags = {n: os.path.join(data, n) for n in needed}
    split = test_split(bags, tuple(args.test))
    print(f'test stretch {args.test} of the mapping path: {len(split["db"][0])} database / '
          f'{len(split["q"][0])} query frames; training sessions {args.sessions}')
    rows = []
    for name in TRAINING_FREE:
        t0 = time.perf_counter()
        r = score(create_encoder(name), split, args.dist)
        rows.append({'encoder': name, 'kind': 'training-free', **r, 's': time.perf_counter() - t0})
        print(rows[-1], flush=True)
    for head in args.heads:
        run = os.path.join(args.work, f'run_{head}_{"+".join(args.sessions)}_{args.scale:g}_{args.epochs}'
                           f'_tb{args.train_blocks}' + (f'_s{args.seed}' if args.seed else ''))
        if os.path.isdir(run):
            import shutil
            shutil.rmtree(run)
        t0 = time.perf_counter()
        settings = {'epochs': args.epochs, 'exclude_segment': list(args.test), 'val_segment': list(args.val),
                    'val_dist': args.dist, 'train_blocks': args.train_blocks, 'seed': args.seed}
        report = train([bags[s] for s in args.sessions], head, run, settings, progress=False)
        total = time.perf_counter() - t0
        untrained = create_encoder(head, report['encoder']['trained_from'])
        if untrained.requires_fit:  # NetVLAD untrained: k-means on the test database, as build-map does
            untrained.fit(split['db'][0])
        rows.append({'encoder': head, 'kind': 'untrained head', **score(untrained, split, args.dist)})
        trained = create_encoder(head, report['encoder']['config'])
        rows.append({'encoder': head, 'kind': 'trained', **score(trained, split, args.dist),
                     'best_epoch': report['best']['epoch'], 'val_R@1': report['best']['R@1'],
                     's_per_epoch': report['seconds_per_epoch'],
                     'cache_s': report['data']['cache']['seconds'],
                     'train_s': total, 'places': report['data']['places'],
                     'train_frames': report['data']['training_frames']})
        print(rows[-2], '\n', rows[-1], flush=True)
    print(f'\n{"encoder":12s} {"kind":15s} {"R@1":>6s} {"R@5":>6s}  notes')
    for r in rows:
        note = (f"best epoch {r['best_epoch']}, {r['s_per_epoch']:.1f} s/epoch, cache {r['cache_s']:.0f} s, "
                f"{r['places']} places / {r['train_frames']} frames") if r['kind'] == 'trained' else ''
        print(f"{r['encoder']:12s} {r['kind']:15s} {100 * r['R@1']:6.1f} {100 * r['R@5']:6.1f}  {note}")
    print(f'load: {os.getloadavg()}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as fh:
            json.dump({'args': vars(args), 'rows': rows, 'load': os.getloadavg()}, fh, indent=1)


if __name__ == '__main__':
    main()
