"""MegaLoc (Berton & Masone, CVPRW 2025): DINOv2 ViT-B/14 + SALAD aggregation projected to 8448-d.

Built from the released single-file model (``megaloc_model.py``, facts only): DINOv2 ViT-B/14
(hub names, final LayerNorm applied, returns the patch map and the CLS token), a SALAD aggregator
with 64 clusters x 256 dims + a 256-d token (hidden MLP width 512, dropout 0.3, Sinkhorn 3
iterations, dustbin init 1) -> 16640 values, L2-normalised inside SALAD, then ``Linear(16640 ->
8448)`` and a final L2. ``weights: PATH`` loads either official release strictly (docs/encoders.md):

* ``megaloc.torch`` (GitHub release v1.0, a plain torch state dict, 190 keys): ``backbone.model.*``
  (the DINOv2 hub model, with its unused ``mask_token``), ``aggregator.agg.{token_features,
  cluster_features,score}.*``, ``aggregator.agg.dust_bin``, ``aggregator.linear.{weight,bias}``
  - the names of this module;
* ``model.safetensors`` (Hugging Face ``gberton/MegaLoc``, the release since 2026-01, 189 keys):
  the same tensors, the backbone being the release's own DINOv2 copy, ``backbone.*`` directly
  (``backbone.blocks.<i>...``) and without ``mask_token``. ``hf_to_model`` renames it explicitly.

Preprocessing as released: ImageNet mean/std; the image is used at its own size with height and
width rounded to the nearest multiple of 14 (the release resizes the float tensor inside
``forward`` with an anti-aliased resize; here the same target size is reached with area
interpolation, in float, set ``interpolation: bilinear`` to change it). Each image keeps its own
size in a batch (images are grouped by size). ``image_size: [H, W]`` (multiples of 14) fixes the
size instead - advisable on a CPU for large camera images (a 1920x1080 frame is 10k patches).
``backbone: efficientnet_lite0`` (a training backbone, see _zoo.py): as for ``salad``, at 240x320.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vpr_ros.encoders._zoo import EFFICIENTNET_SIZE, FLOAT_RESIZE, LEGACY_RESIZE, ZOO_DEFAULTS, ZooEncoder
from vpr_ros.encoders.aggregators.salad import SALAD
from vpr_ros.errors import WeightsError

NUM_CLUSTERS, CLUSTER_DIM, TOKEN_DIM, FEAT_DIM = 64, 256, 256, 8448
V1_BACKBONE, HF_BACKBONE = 'backbone.model.', 'backbone.'


def hf_to_model(state: dict[str, Any], source: str) -> dict[str, Any]:
    """The Hugging Face ``model.safetensors`` layout renamed to this module's (the v1.0 one).

    Backbone keys ``backbone.<name>`` become ``backbone.model.<name>``; aggregator keys are the same
    in both releases. The HF backbone has no ``mask_token`` (DINOv2's masked-image-modelling token,
    never used at inference): it is added as zeros, its hub initial value. Any other key is left
    for the strict load to report.
    """
    if f'{HF_BACKBONE}mask_token' in state or f'{V1_BACKBONE}mask_token' in state:
        raise WeightsError(f'{source}: mixes the HF layout (backbone.blocks.*) with a mask_token; '
                           'not an official MegaLoc file')
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(HF_BACKBONE):
            out[V1_BACKBONE + key[len(HF_BACKBONE):]] = value
        else:
            out[key] = value
    cls = state[f'{HF_BACKBONE}cls_token']
    out[f'{V1_BACKBONE}mask_token'] = cls.new_zeros((1, cls.shape[-1]))
    return out


class MegaLocAggregator(nn.Module):
    """SALAD (``agg``) followed by the released linear projection (``linear``)."""

    def __init__(self, num_channels: int, feat_dim: int = FEAT_DIM, num_clusters: int = NUM_CLUSTERS,
                 cluster_dim: int = CLUSTER_DIM, token_dim: int = TOKEN_DIM) -> None:
        super().__init__()
        self.agg = SALAD(num_channels, num_clusters, cluster_dim, token_dim)
        self.linear = nn.Linear(self.agg.output_dim, feat_dim)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.linear(self.agg(inputs))


class MegaLocModel(nn.Module):
    """backbone -> aggregator -> L2: the release's ``MegaLocModel`` layout."""

    def __init__(self, backbone: nn.Module, aggregator: MegaLocAggregator) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    def head(self, features: Any) -> torch.Tensor:
        return F.normalize(self.aggregator(features), p=2, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def round_to_patch(side: int, patch: int = 14) -> int:
    """The release's rounding: nearest multiple of the patch size (Python round: halves to even)."""
    return max(patch, round(side / patch) * patch)


class MegaLocEncoder(ZooEncoder):
    name = 'megaloc'
    description = 'MegaLoc (CVPRW 2025): DINOv2 ViT-B/14 + SALAD 64x256+256 -> linear 8448-d, any size (x14)'
    default_config: ClassVar[dict[str, Any]] = {**ZOO_DEFAULTS, **FLOAT_RESIZE, 'backbone': 'dinov2_vitb14'}
    legacy_config: ClassVar[dict[str, Any]] = LEGACY_RESIZE
    size_multiple = 14
    backbones = ('dinov2_vitb14',)

    def native_size(self) -> tuple[int, int]:
        return (322, 322)  # only used where one size must be assumed (catalogue, export)

    @property
    def input_size(self) -> tuple[int, int] | None:  # type: ignore[override]
        size = self.config.get('image_size')
        if size is not None:
            return (int(size[0]), int(size[1]))
        return EFFICIENTNET_SIZE if self.efficientnet else None

    def target_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return self.input_size or (round_to_patch(int(shape[0])), round_to_patch(int(shape[1])))

    def adapt_release(self, state: dict[str, Any]) -> dict[str, Any]:
        state = super().adapt_release(state)
        if f'{HF_BACKBONE}cls_token' in state:  # the Hugging Face model.safetensors layout
            return hf_to_model(state, str(self.config['weights']))
        return state

    def build_architecture(self, backbone_weights: str | None) -> nn.Module:
        trunk, channels = self.backbone_trunk(16, backbone_weights, token=True)
        return MegaLocModel(trunk, MegaLocAggregator(channels))

    @property
    def raw_dim(self) -> int:
        return FEAT_DIM
