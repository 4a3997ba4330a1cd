import cv2
import numpy as np
import pytest

from test.helpers import FLOAT32_ATOL, assert_same_ranking
from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.aggregators.vlad import vlad, vlad_of_sets
from vpr_ros.encoders.models.segvlad import pca_sample_rows
from vpr_ros.encoders.segments import SamOnnxSegmenter, create_segmenter, sam_point_grid
from vpr_ros.errors import ConfigError, VprError, WeightsError
from vpr_ros.frames import Pose
from vpr_ros.localization import encoder_for_map
from vpr_ros.mapdb.store import VprMap

# A fixed thread count: 0 would adapt it to the free cores and the strict determinism checks need one count.
SMALL = {'image_size': [96, 128], 'segments': 16, 'pca_dim': 48, 'batch_size': 4, 'threads': 2}


def scene(seed, shift=0):
    """A 120x160 image of coloured rectangles; ``shift`` pans the same scene sideways."""
    rng = np.random.default_rng(seed)
    canvas = np.full((120, 200, 3), 90, np.uint8)
    for _ in range(14):
        x, y = rng.integers(0, 200), rng.integers(0, 120)
        w, h = rng.integers(15, 60), rng.integers(10, 50)
        cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)),
                      tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return np.ascontiguousarray(canvas[:, 20 + shift:180 + shift])


def test_vlad_of_sets_known_answer():
    centers = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    x = np.array([[0.8, 0.6], [0.6, 0.8], [1.0, 0.0]], np.float32)  # words 0, 1, 0
    member = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0]], bool)
    v = vlad_of_sets(member, x, centers)
    a = np.array([-0.2, 0.6]) / np.hypot(0.2, 0.6)
    b = np.array([0.6, -0.2]) / np.hypot(0.2, 0.6)
    np.testing.assert_allclose(v[0], np.concatenate([a, b]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(v[1], np.concatenate([a, [0, 0]]), atol=1e-6)  # (1,0) adds a zero residual
    np.testing.assert_array_equal(v[2], 0)
    np.testing.assert_allclose(vlad(x, centers), v[0], atol=1e-6)
    with pytest.raises(VprError):
        vlad_of_sets(member[:, :2], x, centers)


def test_vlad_of_sets_equals_one_vlad_per_set():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centers = rng.normal(size=(5, 6)).astype(np.float32)
    member = rng.random((7, 40)) < 0.3
    v = vlad_of_sets(member, x, centers)
    for row, m in zip(v, member):
        np.testing.assert_allclose(row, vlad(x[m], centers), atol=1e-5)
    assert v.dtype == np.float32 and v.shape == (7, 30)


def test_pca_sample_rows():
    rows = pca_sample_rows([10, 30, 60], limit=50, seed=0)
    assert [len(r) for r in rows] == [5, 15, 30]
    assert all(len(np.unique(r)) == len(r) and r.max() < n for r, n in zip(rows, [10, 30, 60]))
    assert [len(r) for r in pca_sample_rows([3, 0, 4], limit=100, seed=0)] == [3, 0, 4]
    assert sum(len(r) for r in pca_sample_rows([1] * 10, limit=4, seed=0)) == 4


@pytest.fixture(scope='module')
def fitted():
    encoder = create_encoder('segvlad', SMALL)
    encoder.fit([scene(i) for i in range(4)])
    return encoder


def test_fit_and_describe(fitted):
    assert fitted.dim == 48 and fitted.raw_dim == 32 * 112
    sets = fitted.describe([scene(0), scene(1, 5)])
    for s in sets:
        assert s.dtype == np.float32 and s.shape[1] == 48 and 4 <= len(s) <= 40
        np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)
    # Same input, same call: bit-identical output (determinism).
    np.testing.assert_array_equal(fitted.describe([scene(0), scene(1, 5)])[0], sets[0])
    alone = fitted.describe([scene(0)])[0]
    np.testing.assert_array_equal(fitted.describe([scene(0)])[0], alone)
    # A batch of one vs a batch of two takes other BLAS/oneDNN paths: equal to float32 rounding only.
    assert alone.shape == sets[0].shape
    np.testing.assert_allclose(alone, sets[0], atol=FLOAT32_ATOL)
    with pytest.raises(VprError):
        fitted.encode([scene(0)])


def test_state_round_trip(fitted):
    state = fitted.get_state()
    assert {'centers', 'pca.mean', 'pca.proj'} <= set(state)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    clone = create_encoder('segvlad', SMALL, state)
    assert clone.is_fitted and clone.identity() == fitted.identity()
    np.testing.assert_allclose(clone.describe([scene(2)])[0], fitted.describe([scene(2)])[0], atol=1e-6)
    with pytest.raises(VprError):
        create_encoder('segvlad', SMALL).describe([scene(0)])


def test_a_supersegment_covering_the_image_is_the_global_vlad():
    images = [scene(i) for i in range(3)]
    seg = create_encoder('segvlad', {**SMALL, 'pca_dim': 0, 'order': 50})
    seg.fit(images)
    glob = create_encoder('anyloc_vlad', {'image_size': SMALL['image_size']},
                          {'centers': seg.get_state()['centers']})
    rows = seg.describe([scene(1)])[0]
    np.testing.assert_allclose(rows, np.repeat(glob.encode([scene(1)]), len(rows), axis=0), atol=1e-5)


def test_small_map_pads_the_pca():
    encoder = create_encoder('segvlad', {**SMALL, 'pca_dim': 1024, 'segments': 8})
    encoder.fit([scene(0), scene(1)])
    assert encoder.dim == 1024
    s = encoder.describe([scene(0)])[0]
    assert s.shape[1] == 1024
    fitted_rows = encoder.get_state()['pca.proj']
    kept = int((np.abs(fitted_rows).sum(0) > 0).sum())
    assert kept < 1024 and np.all(s[:, kept:] == 0)


def test_multi_vector_map_round_trip(fitted, tmp_path):
    places = [scene(i) for i in range(4)]
    vmap = VprMap.empty(fitted.identity(), dtype='float16', encoder_state=fitted.get_state())
    for i, vectors in enumerate(fitted.describe(places)):
        vmap.add(float(i), Pose.from_xy_yaw(i, 0, 0), vectors)
    assert vmap.meta.vectors == len(vmap.owners) > len(places)
    query = fitted.describe([scene(2, 6)])[0]
    assert vmap.search(query, 2)[0].place_id == 2
    vmap.save(str(tmp_path / 'm'))
    loaded = VprMap.load(str(tmp_path / 'm'), fitted.identity())
    encoder = encoder_for_map(loaded)
    np.testing.assert_allclose(encoder.describe([scene(2, 6)])[0], query, atol=1e-6)
    before = [(m.place_id, m.score) for m in vmap.search(query, 3)]
    after = [(m.place_id, m.score) for m in loaded.search(query, 3)]
    assert_same_ranking(after, before)  # the same answer after the round trip
    assert loaded.search(query, 3, exclude={2})[0].place_id != 2


def test_config_errors():
    with pytest.raises(ConfigError):
        create_encoder('segvlad', {'segmenter': 'watershed'})
    with pytest.raises(ConfigError):
        create_encoder('segvlad', {'order': -1})
    with pytest.raises(ConfigError):
        create_encoder('segvlad', {'sam_encoder': 'x.onnx'})


def test_sam_onnx_names_the_missing_files(tmp_path):
    enc = tmp_path / 'enc.onnx'
    enc.write_bytes(b'')
    with pytest.raises(WeightsError, match=r'sam_encoder.*sam_decoder'):
        create_encoder('segvlad', {'segmenter': 'sam_onnx'})
    with pytest.raises(WeightsError, match=r'missing: sam_decoder \(.*nope.onnx'):
        create_segmenter('sam_onnx',
                         options={'encoder_path': str(enc), 'decoder_path': str(tmp_path / 'nope.onnx')})


class _FakeSession:
    def __init__(self, fn):
        self.fn = fn

    def run(self, _outputs, feed):
        return self.fn(feed)


def _fake_decoder(radius, ious):
    """SamOnnxModel stand-in: token t's mask is a disc of radius[t] px around the prompt point."""
    def run(feed):
        h, w = (int(v) for v in feed['orig_im_size'])
        scale = 1024 / max(h, w)
        pts = feed['point_coords'][:, 0] / scale  # back to image pixels
        assert feed['point_labels'][0].tolist() == [1.0, -1.0]
        yy, xx = np.mgrid[0:h, 0:w]
        dist = np.hypot(xx[None] - pts[:, 0, None, None], yy[None] - pts[:, 1, None, None])
        masks = np.stack([10.0 * (r - dist) for r in radius], axis=1).astype(np.float32)
        return [masks, np.tile(np.asarray(ious, np.float32), (len(pts), 1)), None]
    return run


@pytest.mark.parametrize('third_iou, expected', [(0.9, 32), (0.85, 16)])
def test_sam_automatic_mask_generation_call_path(third_iou, expected):
    seg = SamOnnxSegmenter.__new__(SamOnnxSegmenter)
    seg.encoder = _FakeSession(lambda feed: [np.zeros((1, 8, 64, 64), np.float32)])
    seg.decoder = _FakeSession(_fake_decoder([5, 20, 20, 40], [0.99, 0.95, 0.5, third_iou]))
    seg._enc_name, seg._enc_rank, seg.input_side, seg._batched = 'x', 4, 1024, True
    seg.points_per_side, seg.points_per_batch = 4, 5
    seg.pred_iou_thresh, seg.stability_score_thresh = 0.88, 0.95
    seg.stability_score_offset, seg.box_nms_thresh = 1.0, 0.7
    masks = seg.segment(np.zeros((240, 320, 3), np.uint8))
    assert masks.shape == (expected, 240, 320) and masks.dtype == bool
    ys, xs = np.nonzero(masks[0])
    grid = sam_point_grid(4) * [320, 240]
    assert np.min(np.hypot(grid[:, 0] - xs.mean(), grid[:, 1] - ys.mean())) < 1.0


def _identity_onnx(path, name, shape):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node('Identity', [name], ['out'])], 'g',
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info('out', TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_sam_onnx_rejects_a_decoder_of_another_interface(tmp_path):
    pytest.importorskip('onnx')
    enc = _identity_onnx(tmp_path / 'enc.onnx', 'image', [1, 3, 1024, 1024])
    dec = _identity_onnx(tmp_path / 'dec.onnx', 'image_embeddings', [1, 256, 64, 64])
    with pytest.raises(WeightsError, match='not a SAM prompt decoder.*point_coords'):
        SamOnnxSegmenter(enc, dec)
    junk = tmp_path / 'junk.onnx'
    junk.write_bytes(b'not a model')
    with pytest.raises(WeightsError, match='cannot load'):
        SamOnnxSegmenter(enc, str(junk))
