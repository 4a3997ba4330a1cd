"""City-scale maps on one box (issue 14). Prints a table; no pass/fail.

Real descriptors: effnet_gem (the default encoder) on the sample world, seed 0: the ``mapping``
traversal is the map's true places, the ``query`` traversal (other season/lane) gives the queries
with ground truth (a query is answered correctly if the top-1 place lies within 25 m).

Distractors pad the map to ``--places``. They are built from *other* sample worlds (seeds 1..K;
different streets, so never a true match; their descriptors captured in the map's conditions,
see map_condition) so they carry real image statistics rather than uniform noise: each
distractor is a convex mixture of two neighbouring pool descriptors (Beta(4, 1) weight, one
dominates) plus a perturbation along a random pool-difference direction, re-normalised to unit
length. The printed check compares the
distribution of "similarity of a query to its nearest distractor" with "similarity of a query to
its nearest true place", and the pairwise similarity of distractors with that of real places.

For each index spec (vpr_ros/mapdb/index.py grammar): build time (train on a sample + add),
bytes per place of the index (in RAM, and on disk as index.faiss), query ms p50/p95 with two
threads, Recall@1 of the true places relative to exact search (flat), and top-1 agreement with
exact search. Then a whole map directory of ``--places`` places is written and re-opened
memory-mapped (descriptors via np.load(mmap_mode), the index via faiss IO_FLAG_MMAP where the
kind supports it), timing the open and the resident memory it costs.

    .venv/bin/python benchmarks/bench_scale.py --places 1000000 [--specs flat ivf1024 ...]

Descriptors are cached in --cache (default ~/.cache/vpr_ros/bench_scale); time-critical parts
should run under ``flock -x /tmp/vpr-cpu.lock``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.mapdb import index as faiss_index  # noqa: E402

DIST_M = 25.0
# Raw-dimension HNSW (hnsw32) and flat fp16 work too but take long to build/search at 1M on 2 cores.
# Ordered so that the rows the targets hinge on come first (a long run prints rows as they finish).
# pca256,flat is exact search after the PCA: the ceiling of every pca256 kind.
DEFAULT_SPECS = ['pca256,hnsw32', 'pca256,ivf1024,pq32@32', 'opq32_256,ivf1024,pq32@32', 'flat',
                 'pca256,flat', 'pca256,ivf1024@32', 'ivf1024@32', 'ivf1024,fp16@32',
                 'opq56_224,ivf1024,pq56@32', 'ivf1024,pq40@32']


# ----- real descriptors (cached) --------------------------------------------------------------
def _encode_traversal(encoder, name: str, seed: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    from vpr_ros.sample import render_traversal

    frames, _ = render_traversal(name, seed=seed, scale=scale)
    batch = int(encoder.config['batch_size'])
    vecs = [v for i in range(0, len(frames), batch)
            for v in encoder.describe([f.rgb for f in frames[i:i + batch]])]
    xy = np.array([f.pose.position[:2] for f in frames], np.float64)
    return np.concatenate(vecs).astype(np.float32), xy


def real_descriptors(cache: str, pool_seeds: int) -> dict[str, np.ndarray]:
    """Map/query descriptors + poses of seed 0 and the distractor pool of seeds 1..pool_seeds."""
    from vpr_ros.encoders import create_encoder

    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f'effnet_gem_pool{pool_seeds}.npz')
    if os.path.isfile(path):
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    from tqdm import tqdm

    encoder = create_encoder('effnet_gem')
    out: dict[str, np.ndarray] = {}
    out['map'], out['map_xy'] = _encode_traversal(encoder, 'mapping', 0, 1.0)
    out['query'], out['query_xy'] = _encode_traversal(encoder, 'query', 0, 1.0)
    pool = [_encode_traversal(encoder, name, seed, 1.0)[0]
            for seed in tqdm(range(1, pool_seeds + 1), desc='distractor pool worlds')
            for name in ('mapping', 'query', 'viewpoint')]
    out['pool'] = np.concatenate(pool)
    np.savez(path + '.tmp.npz', **out)
    os.replace(path + '.tmp.npz', path)
    return out


def map_condition(real: dict[str, np.ndarray]) -> np.ndarray:
    """The pool descriptors captured in the map's conditions (sunny mapping/viewpoint drives).

    A map is recorded in its own conditions; the other worlds' evening traversals would put the
    query's season into the map, so every evening query matches another world's evening frame
    (exact Recall@1 fell from 64 % to 2.8 % at 20k places), which measures the season gap, not the
    index. The condition axis is the mean query minus the mean map descriptor of seed 0; it
    separates seed 0's two traversals perfectly.
    """
    axis = real['query'].mean(0) - real['map'].mean(0)
    centre = (real['query'].mean(0) + real['map'].mean(0)) / 2
    return real['pool'][(real['pool'] - centre) @ axis < 0]


# ----- distractors --------------------------------------------------------------------------
def make_distractors(pool: np.ndarray, n: int, path: str, seed: int = 0, chunk: int = 65536) -> np.ndarray:
    """``n`` unit float16 distractors (cached .npy, memory-mapped): see the module docstring.

    x = w p_i + (1 - w) p_j + s (p_k - p_l), w ~ Beta(4, 1) (one pool descriptor dominates),
    j a neighbour of i in the pool (the next frames of the same traversal: an in-between view),
    s ~ U(0, 0.5) along the difference of two random pool descriptors (a realistic direction of
    appearance variation), then L2-normalised.
    """
    if os.path.isfile(path):
        cached = np.load(path, mmap_mode='r')
        if cached.shape == (n, pool.shape[1]):
            return cached
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path + '.tmp.npy', mode='w+', dtype=np.float16,
                                    shape=(n, pool.shape[1]))
    m = len(pool)
    for start in tqdm(range(0, n, chunk), desc='distractors', unit='chunk'):
        c = min(chunk, n - start)
        i = rng.integers(0, m, c)
        j = np.clip(i + rng.integers(1, 4, c), 0, m - 1)
        k, l_ = rng.integers(0, m, c), rng.integers(0, m, c)
        w = rng.beta(4.0, 1.0, c)[:, None].astype(np.float32)
        s = rng.uniform(0.0, 0.5, c)[:, None].astype(np.float32)
        x = w * pool[i] + (1 - w) * pool[j] + s * (pool[k] - pool[l_])
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + c] = x.astype(np.float16)
    out.flush()
    del out
    os.replace(path + '.tmp.npy', path)
    return np.load(path, mmap_mode='r')


def realism_check(real: dict[str, np.ndarray], distractors: np.ndarray,
                  sample: int = 20000) -> dict[str, float]:
    """Similarity statistics of distractors next to those of real places (medians)."""
    rng = np.random.default_rng(1)
    d = np.asarray(distractors[np.sort(rng.choice(len(distractors), min(sample, len(distractors)),
                                                  replace=False))], np.float32)
    q, m, pool = real['query'], real['map'], real['pool']
    nn_true = (q @ m.T).max(1)
    nn_dist = (q @ d.T).max(1)
    dd = d[:2000] @ d[2000:4000].T
    pp = pool[:2000] @ pool[-2000:].T
    return {'query_to_nearest_true_place': float(np.median(nn_true)),
            'query_to_nearest_of_%d_raw_pool' % len(pool): float(np.median((q @ pool.T).max(1))),
            'query_to_nearest_of_%d_distractors' % len(d): float(np.median(nn_dist)),
            'distractor_pair_similarity': float(np.median(dd)),
            'real_other_world_pair_similarity': float(np.median(pp)),
            'distractor_norm_max_error': float(np.abs(np.linalg.norm(d, axis=1) - 1).max())}


# ----- measuring --------------------------------------------------------------------------------
def exact_top1(queries: np.ndarray, real_map: np.ndarray, distractors: np.ndarray,
               chunk: int = 131072) -> tuple[np.ndarray, np.ndarray]:
    """Row and score of every query's exact nearest map row (map = real places then distractors)."""
    best_s = (queries @ real_map.T).max(1)
    best_r = (queries @ real_map.T).argmax(1)
    for start in range(0, len(distractors), chunk):
        sims = queries @ np.asarray(distractors[start:start + chunk], np.float32).T
        r, s = sims.argmax(1), sims.max(1)
        better = s > best_s
        best_s, best_r = np.where(better, s, best_s), np.where(better, len(real_map) + start + r, best_r)
    return best_r, best_s


def correct(rows: np.ndarray, query_xy: np.ndarray, map_xy: np.ndarray) -> np.ndarray:
    ok = rows < len(map_xy)
    d = np.linalg.norm(map_xy[np.minimum(rows, len(map_xy) - 1)] - query_xy, axis=1)
    return ok & (d <= DIST_M)


class _Rows:
    """Real places then distractors as one row-sliceable array (for build_index)."""

    def __init__(self, real: np.ndarray, distractors: np.ndarray) -> None:
        self.real, self.dis = real, distractors
        self.shape = (len(real) + len(distractors), real.shape[1])

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.shape[0])
            parts = []
            if start < len(self.real):
                parts.append(self.real[start:min(stop, len(self.real))])
            if stop > len(self.real):
                parts.append(np.asarray(self.dis[max(0, start - len(self.real)):stop - len(self.real)],
                                        np.float32))
            return np.concatenate(parts) if parts else np.zeros((0, self.shape[1]), np.float32)
        rows = np.asarray(key)
        out = np.empty((len(rows), self.shape[1]), np.float32)
        real = rows < len(self.real)
        out[real] = self.real[rows[real]]
        out[~real] = self.dis[rows[~real] - len(self.real)]
        return out


def bench_spec(spec: str, rows: _Rows, queries: np.ndarray, ok_exact: np.ndarray, top_exact: np.ndarray,
               real: dict[str, np.ndarray], tmp: str, timed_queries: int) -> dict[str, float]:
    import faiss

    t0 = time.perf_counter()
    index = faiss_index.build_index(rows, spec)
    build_s = time.perf_counter() - t0
    n = rows.shape[0]
    path = os.path.join(tmp, 'index.faiss')
    faiss_index.write_index(index, path)
    disk = os.path.getsize(path)
    ram = int(faiss.serialize_index(index).size) if n <= 2_000_000 else disk
    times = []
    for q in queries[:timed_queries]:
        t = time.perf_counter()
        faiss_index.search(index, q[None], 1)
        times.append((time.perf_counter() - t) * 1e3)
    _, top = faiss_index.search(index, queries, 1)
    top = top[:, 0]
    ok = correct(top, real['query_xy'], real['map_xy'])
    os.remove(path)
    return {'spec': spec, 'build_s': build_s, 'ram_B_per_place': ram / n, 'disk_B_per_place': disk / n,
            'query_ms_p50': float(np.percentile(times, 50)), 'query_ms_p95': float(np.percentile(times, 95)),
            'recall1': float(ok.mean()), 'recall1_rel_exact': float(ok.mean() / max(ok_exact.mean(), 1e-9)),
            'top1_agrees_with_exact': float((top == top_exact).mean())}


def _rss() -> np.ndarray:
    """Resident bytes: anonymous (heap: what the map really costs) and file-backed (mapped pages)."""
    with open('/proc/self/status', encoding='ascii') as fh:
        kb = dict(line.split(':', 1) for line in fh if line.startswith(('RssAnon', 'RssFile')))
    return np.array([int(kb['RssAnon'].split()[0]), int(kb['RssFile'].split()[0])]) * 1024


def bench_open(rows: _Rows, spec: str, real: dict[str, np.ndarray], tmp: str) -> dict[str, float]:
    """Write a whole map of every row, then open it memory-mapped: seconds and resident MB it costs."""
    from vpr_ros.mapdb.meta import MapMeta
    from vpr_ros.mapdb.store import PlaceTable, VprMap

    n, dim = rows.shape
    identity = {'name': 'effnet_gem', 'config': {}, 'weights_fingerprint': 'bench', 'dim': dim,
                'multi_vector': False}
    meta = MapMeta(encoder=identity, count=n, vectors=n, dtype='float16', index=spec)
    far = np.random.default_rng(2).uniform(-5e3, 5e3, (n - len(real['map_xy']), 2))
    xy = np.concatenate([real['map_xy'], far])
    poses = np.zeros((n, 7))
    poses[:, :2], poses[:, 6] = xy, 1.0
    places = PlaceTable(np.arange(n, dtype=np.float64), poses, np.zeros(n, np.int32), ['bench'])
    descriptors = np.lib.format.open_memmap(os.path.join(tmp, 'desc.npy'), 'w+', np.float16, (n, dim))
    for start in range(0, n, 65536):
        descriptors[start:start + 65536] = rows[start:start + 65536].astype(np.float16)
    vmap = VprMap(meta, places, descriptors, np.arange(n, dtype=np.int64))
    t0 = time.perf_counter()
    _ = vmap.index
    vmap.save(os.path.join(tmp, 'map'))
    write_s = time.perf_counter() - t0
    del vmap, places, descriptors
    os.remove(os.path.join(tmp, 'desc.npy'))
    rss0 = _rss()
    t0 = time.perf_counter()
    loaded = VprMap.load(os.path.join(tmp, 'map'), mmap=True, verify='size')
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded.search(real['query'][0], 5)
    first_ms = (time.perf_counter() - t0) * 1e3
    rss1 = _rss()
    sizes = {f: os.path.getsize(os.path.join(tmp, 'map', f)) for f in os.listdir(os.path.join(tmp, 'map'))}
    return {'spec': spec, 'places': n, 'write_s': write_s, 'open_s': open_s, 'first_search_ms': first_ms,
            'rss_growth_MB': float((rss1 - rss0).sum()) / 1e6,
            'anon_growth_MB': float(rss1[0] - rss0[0]) / 1e6,
            'file_growth_MB': float(rss1[1] - rss0[1]) / 1e6,
            'disk_MB': {k: v / 1e6 for k, v in sizes.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--places', type=int, default=100_000)
    ap.add_argument('--specs', nargs='*', default=DEFAULT_SPECS,
                    help='index specs to compare (none: only the --open-spec map)')
    ap.add_argument('--open-spec', default='opq56_224,ivf1024,pq56',
                    help='index of the whole map written and re-opened memory-mapped ("" to skip)')
    ap.add_argument('--cache', default=os.path.expanduser('~/.cache/vpr_ros/bench_scale'))
    ap.add_argument('--pool-seeds', type=int, default=3)
    ap.add_argument('--timed-queries', type=int, default=200)
    ap.add_argument('--json')
    args = ap.parse_args()
    import faiss

    real = real_descriptors(args.cache, args.pool_seeds)
    n_all = len(real['pool'])
    real['pool'] = map_condition(real)
    n_dis = max(0, args.places - len(real['map']))
    dis = make_distractors(real['pool'], n_dis,
                           os.path.join(args.cache, f"distractors_{len(real['pool'])}_{n_dis}.npy"))
    print(f"map: {len(real['map'])} true places + {n_dis} distractors, {len(real['query'])} queries, "
          f"dim {real['map'].shape[1]}; pool {len(real['pool'])} of {n_all} descriptors of "
          f'{args.pool_seeds} other worlds (the map-condition ones)')
    check = realism_check(real, dis)
    print('distractor realism (medians): ' + ', '.join(f'{k} {v:.3f}' for k, v in check.items()))
    faiss.omp_set_num_threads(2)
    rows = _Rows(real['map'], dis)
    results: dict = {'places': args.places, 'realism': check, 'specs': []}
    if args.specs:
        compare_specs(args, real, dis, rows, results)
        _dump(args, results)
    if args.open_spec:
        with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
            o = bench_open(rows, args.open_spec, real, tmp)
        results['open'] = o
        print(f"map of {o['places']} places ({o['spec']}): written in {o['write_s']:.1f} s, opened "
              f"memory-mapped in {o['open_s']:.2f} s (+{o['rss_growth_MB']:.0f} MB resident: "
              f"{o['anon_growth_MB']:.0f} MB heap, {o['file_growth_MB']:.0f} MB mapped file pages), "
              f"first search {o['first_search_ms']:.1f} ms; files MB "
              + ', '.join(f'{k} {v:.1f}' for k, v in sorted(o['disk_MB'].items())))
    print(f'load: {_load()}')
    _dump(args, results)


def _load() -> str:
    return 'load average %.2f %.2f %.2f (1/5/15 min)' % os.getloadavg()


def _dump(args: argparse.Namespace, results: dict) -> None:
    """Write the results so far (a long run keeps its finished rows if stopped)."""
    if args.json:
        with open(args.json + '.tmp', 'w', encoding='utf-8') as fh:
            json.dump(results, fh, indent=1)
        os.replace(args.json + '.tmp', args.json)


def compare_specs(args: argparse.Namespace, real: dict[str, np.ndarray], dis: np.ndarray, rows: _Rows,
                  results: dict) -> None:
    queries = real['query']
    t0 = time.perf_counter()
    top_exact, _ = exact_top1(queries, real['map'], dis)
    ok_exact = correct(top_exact, real['query_xy'], real['map_xy'])
    ok_small = correct((queries @ real['map'].T).argmax(1), real['query_xy'], real['map_xy'])
    print(f'exact Recall@1 {ok_exact.mean() * 100:.1f}% with distractors, {ok_small.mean() * 100:.1f}% '
          f'without ({time.perf_counter() - t0:.1f} s brute force)')
    results['exact_recall1'] = float(ok_exact.mean())
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        print(f"{'index':28s} {'build s':>8s} {'RAM B/pl':>9s} {'disk B/pl':>9s} {'p50 ms':>7s} "
              f"{'p95 ms':>7s} {'R@1':>6s} {'rel':>6s} {'=exact':>6s}")
        for spec in args.specs:
            r = bench_spec(spec, rows, queries, ok_exact, top_exact, real, tmp, args.timed_queries)
            r['load'] = os.getloadavg()[0]
            results['specs'].append(r)
            _dump(args, results)
            print(f"{spec:28s} {r['build_s']:8.1f} {r['ram_B_per_place']:9.1f} "
                  f"{r['disk_B_per_place']:9.1f} {r['query_ms_p50']:7.2f} {r['query_ms_p95']:7.2f} "
                  f"{r['recall1'] * 100:5.1f}% {r['recall1_rel_exact'] * 100:5.1f}% "
                  f"{r['top1_agrees_with_exact'] * 100:5.1f}%  ({_load()})", flush=True)


if __name__ == '__main__':
    main()
