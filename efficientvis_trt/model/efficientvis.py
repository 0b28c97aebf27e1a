"""EfficientVIS (CVPR 2022): tracklet queries + tracklet proposals, refined over M stages.

One definition serves eager PyTorch, training and ONNX export: `forward_clip` maps the
contract's inputs (frames uint8 T x H x W x 3 BGR, query_in N x C, boxes_in N x 4) to the
outputs of docs/contract.md, "I/O table"; preprocessing happens inside. Everything runs with an optional leading
batch dimension so training can batch clips; the exported graph is unbatched.

Boxes travel between stages as absolute xyxy in canvas pixels (what RoIAlign wants); the
graph's box I/O is normalised cxcywh.

Mask frame: a stage pools its RoI features once, at its *input* boxes (one RoIAlign node
per stage, docs/contract.md, "RoIAlign node"), so its mask head sees the object in that box's frame. The graph's
`mask_logits` are in the frame of its *output* `boxes` (what the runtime pastes through).
`warp_to_boxes` maps the one to the other with a fixed bilinear resampling (two small
MatMuls, no parameters), so the mask head never has to learn to shift its own output by
the box delta, and training cuts the mask targets with the output box.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from efficientvis_trt.config import Config, ModelConfig
from efficientvis_trt.model.backbone import Backbone
from efficientvis_trt.model.box_ops import cxcywh_to_xyxy, xyxy_to_cxcywh
from efficientvis_trt.model.roi_align import multi_level_roi_align_reference
from efficientvis_trt.plugins.spec import RoIAlignAttrs

MIN_CARRIED_BOX = 1.0 / 64  # a carried proposal never collapses below this (normalised) side


class MultiLevelRoIAlign(nn.Module):
    """RoIAlign on P2..P5 with per-box level selection; export swaps in the custom ONNX node."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attrs = RoIAlignAttrs.from_pooler(cfg.pooler)
        self.impl = cfg.pooler.impl

    def forward(self, features: list[Tensor], rois: Tensor) -> Tensor:
        a = self.attrs
        if self.impl == "triton" and rois.is_cuda:
            from efficientvis_trt.plugins.triton_roi_align import multi_level_roi_align_triton

            return multi_level_roi_align_triton(features, rois, a)
        if self.impl == "capturable":  # dense, no host sync: what a CUDA-graph capture needs (gpu_check)
            from efficientvis_trt.model.roi_align import multi_level_roi_align_dense

            return multi_level_roi_align_dense(features, rois, a, skip_empty_levels=False)
        return multi_level_roi_align_reference(features, rois, a)


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (not nn.MultiheadAttention) so export is plain MatMul/Softmax."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # [B, L, C]
        b, length, c = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads)), dim=-1)
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(b, length, c)
        return self.proj(out)


class TemporalDynamicConv(nn.Module):
    """Sparse R-CNN DynamicConv generalised over time.

    Query q_t generates two 1x1 filters (C -> D -> C) applied to the RoI features of frames
    t-w..t+w; each result is flattened and projected to C, and the results are mixed with
    softmax weights from their cosine similarity to the centre frame's result.
    """

    def __init__(self, dim: int, dim_dynamic: int, pooled: int, window: int, tau: float):
        super().__init__()
        self.dim, self.dim_dynamic, self.window, self.tau = dim, dim_dynamic, window, tau
        self.dynamic_layer = nn.Linear(dim, 2 * dim * dim_dynamic)
        self.norm1 = nn.LayerNorm(dim_dynamic)
        self.norm2 = nn.LayerNorm(dim)
        self.out_layer = nn.Linear(dim * pooled * pooled, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, query: Tensor, roi: Tensor) -> Tensor:
        """query [B, N, T, C], roi [B, N, T, S, C] -> [B, N, T, C]."""
        b, n, t, s, c = roi.shape
        k = 2 * self.window + 1
        params = self.dynamic_layer(query)
        p1 = params[..., : c * self.dim_dynamic].reshape(b, n, t, c, self.dim_dynamic)
        p2 = params[..., c * self.dim_dynamic :].reshape(b, n, t, self.dim_dynamic, c)
        neighbours = [
            roi[:, :, [min(max(i + o, 0), t - 1) for i in range(t)]] for o in range(-self.window, self.window + 1)
        ]
        x = torch.stack(neighbours, dim=3).reshape(b, n, t, k * s, c)
        x = F.relu(self.norm1(x @ p1))
        x = F.relu(self.norm2(x @ p2))
        x = F.relu(self.norm3(self.out_layer(x.reshape(b, n, t, k, s * c))))  # [B, N, T, K, C]
        unit = x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-12)
        sim = (unit * unit[:, :, :, self.window : self.window + 1]).sum(-1)  # [B, N, T, K]
        weights = torch.softmax(sim / self.tau, dim=-1)
        return (weights[..., None] * x).sum(3)


class MaskHead(nn.Module):
    """QueryInst-style dynamic mask head: query-conditioned 1x1 filters, convs, 2x deconv -> 28x28 logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, d = cfg.hidden_dim, cfg.dim_dynamic
        self.dim, self.dim_dynamic = c, d
        self.dynamic_layer = nn.Linear(c, 2 * c * d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(c)
        convs, ch = [], c
        for _ in range(cfg.mask_convs):
            convs += [nn.Conv2d(ch, cfg.mask_dim, 3, padding=1), nn.ReLU(inplace=True)]
            ch = cfg.mask_dim
        self.convs = nn.Sequential(*convs)
        self.deconv = nn.ConvTranspose2d(ch, cfg.mask_dim, 2, stride=2)
        self.predictor = nn.Conv2d(cfg.mask_dim, 1, 1)

    def forward(self, query: Tensor, pooled: Tensor) -> Tensor:
        """query [B, N, T, C], pooled [B, N, T, C, P, P] -> [B, N, T, 2P, 2P]."""
        b, n, t, c, p, _ = pooled.shape
        params = self.dynamic_layer(query)
        p1 = params[..., : c * self.dim_dynamic].reshape(b, n, t, c, self.dim_dynamic)
        p2 = params[..., c * self.dim_dynamic :].reshape(b, n, t, self.dim_dynamic, c)
        x = pooled.reshape(b, n, t, c, p * p).transpose(-1, -2)
        x = F.relu(self.norm1(x @ p1))
        x = F.relu(self.norm2(x @ p2))
        x = x.transpose(-1, -2).reshape(b * n * t, c, p, p)
        x = F.relu(self.deconv(self.convs(x)))
        return self.predictor(x).reshape(b, n, t, 2 * p, 2 * p)


def _mlp_tower(dim: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods)


class TrackletStage(nn.Module):
    """One refinement stage: temporal then spatial self-attention, RoIAlign, temporal dynamic conv, heads."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.hidden_dim
        self.cfg = cfg
        self.temporal_attn = SelfAttention(c, cfg.num_heads, cfg.dropout)
        self.norm_temporal = nn.LayerNorm(c)
        self.spatial_attn = SelfAttention(c, cfg.num_heads, cfg.dropout)
        self.norm_spatial = nn.LayerNorm(c)
        self.roi_align = MultiLevelRoIAlign(cfg)
        box_res = cfg.pooler.resolution // cfg.pooler.box_pool_stride
        self.dynamic_conv = TemporalDynamicConv(c, cfg.dim_dynamic, box_res, cfg.temporal_window, cfg.temporal_tau)
        self.norm_dynamic = nn.LayerNorm(c)
        self.ffn = nn.Sequential(
            nn.Linear(c, cfg.ffn_dim), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn_dim, c)
        )
        self.norm_ffn = nn.LayerNorm(c)
        self.drop = nn.Dropout(cfg.dropout)
        self.cls_tower = _mlp_tower(c, cfg.num_cls_layers)
        self.class_logits = nn.Linear(c, cfg.num_classes)
        self.reg_tower = _mlp_tower(c, cfg.num_reg_layers)
        self.bbox_delta = nn.Linear(c, 4)
        self.mask_head = MaskHead(cfg)
        nn.init.constant_(self.class_logits.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))
        nn.init.zeros_(self.bbox_delta.weight)
        nn.init.zeros_(self.bbox_delta.bias)

    def forward(self, features: list[Tensor], query: Tensor, boxes: Tensor, want_mask: bool):
        """query [B, N, T, C], boxes [B, N, T, 4] xyxy pixels -> (query, logits, new boxes, mask logits | None)."""
        b, n, t, c = query.shape
        x = query.reshape(b * n, t, c)  # attention over time, per instance
        x = self.norm_temporal(x + self.drop(self.temporal_attn(x)))
        x = x.reshape(b, n, t, c).transpose(1, 2).reshape(b * t, n, c)  # attention over instances, per frame
        x = self.norm_spatial(x + self.drop(self.spatial_attn(x)))
        query = x.reshape(b, t, n, c).transpose(1, 2)

        rois = boxes.transpose(1, 2).reshape(b * t, n, 4)
        pooled = self.roi_align(features, rois)  # [B*T, N, C, P, P]
        p = pooled.shape[-1]
        pooled = pooled.reshape(b, t, n, c, p, p).transpose(1, 2)  # [B, N, T, C, P, P]
        stride = self.cfg.pooler.box_pool_stride
        box_feats = F.avg_pool2d(pooled.reshape(b * n * t, c, p, p), stride) if stride > 1 else pooled
        q = p // stride
        box_feats = box_feats.reshape(b, n, t, c, q * q).transpose(-1, -2)

        query = self.norm_dynamic(query + self.drop(self.dynamic_conv(query, box_feats)))
        query = self.norm_ffn(query + self.drop(self.ffn(query)))
        logits = self.class_logits(self.cls_tower(query))
        deltas = self.bbox_delta(self.reg_tower(query))
        new_boxes = apply_deltas(deltas, boxes, self.cfg.bbox_weights)
        mask = warp_to_boxes(self.mask_head(query, pooled), boxes.detach(), new_boxes.detach()) if want_mask else None
        return query, logits, new_boxes, mask


def warp_to_boxes(grid: Tensor, src_xyxy: Tensor, dst_xyxy: Tensor) -> Tensor:
    """Resample S x S maps laid over `src` boxes onto the same-size grid over `dst` boxes.

    grid [..., S, S], boxes [..., 4] xyxy in one coordinate system. Bilinear between cell
    centres, clamped at the border (a dst cell outside the src box repeats its edge).
    Separable, so it is `Wy @ grid @ Wx^T` with [S, S] weight matrices built from the boxes:
    plain ONNX ops (no GridSample) that every backend runs.
    """
    s = grid.shape[-1]
    cells = torch.arange(s, dtype=grid.dtype, device=grid.device)

    def weights(src_lo: Tensor, src_hi: Tensor, dst_lo: Tensor, dst_hi: Tensor) -> Tensor:  # [..., S, S]
        centres = dst_lo[..., None] + (cells + 0.5) * ((dst_hi - dst_lo)[..., None] / s)  # dst cell centres
        u = (centres - src_lo[..., None]) * (s / (src_hi - src_lo).clamp(min=1e-6)[..., None]) - 0.5
        u = u.clamp(0.0, s - 1.0)
        low = torch.floor(u).clamp(max=s - 2.0)
        frac = (u - low)[..., None]
        low = low[..., None]
        return (cells == low).to(grid.dtype) * (1.0 - frac) + (cells == low + 1.0).to(grid.dtype) * frac

    wy = weights(src_xyxy[..., 1], src_xyxy[..., 3], dst_xyxy[..., 1], dst_xyxy[..., 3])
    wx = weights(src_xyxy[..., 0], src_xyxy[..., 2], dst_xyxy[..., 0], dst_xyxy[..., 2])
    return wy @ grid @ wx.transpose(-1, -2)


def apply_deltas(
    deltas: Tensor, boxes: Tensor, weights: list[float], scale_clamp: float = math.log(100000.0 / 16)
) -> Tensor:
    """Refine xyxy boxes by (dx, dy, dw, dh) deltas, Sparse R-CNN / detectron2 parametrisation."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    cx = boxes[..., 0] + 0.5 * w
    cy = boxes[..., 1] + 0.5 * h
    dx, dy = deltas[..., 0] / weights[0], deltas[..., 1] / weights[1]
    dw = (deltas[..., 2] / weights[2]).clamp(max=scale_clamp)
    dh = (deltas[..., 3] / weights[3]).clamp(max=scale_clamp)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=-1)


class EfficientVIS(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        cfg.validate()
        self.config = cfg
        m = cfg.model
        self.backbone = Backbone(m.backbone, m.hidden_dim)
        self.init_query = nn.Embedding(m.num_queries, m.hidden_dim)
        self.init_boxes = nn.Embedding(m.num_queries, 4)
        nn.init.constant_(self.init_boxes.weight[:, :2], 0.5)  # whole image, normalised cxcywh
        nn.init.constant_(self.init_boxes.weight[:, 2:], 1.0)
        self.time_embed = nn.Embedding(m.clip_len, m.hidden_dim) if m.temporal_pos_embed else None
        self.stages = nn.ModuleList(TrackletStage(m) for _ in range(m.num_stages))
        self.register_buffer("pixel_mean", torch.tensor(m.pixel_mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(m.pixel_std).reshape(1, 3, 1, 1), persistent=False)

    # ---- state ----------------------------------------------------------------------
    def initial_state(self) -> tuple[Tensor, Tensor]:
        """The learned clip-0 state: (query [N, C], boxes [N, 4] normalised cxcywh)."""
        return self.init_query.weight.detach().clone(), self.init_boxes.weight.detach().clone()

    # ---- forward --------------------------------------------------------------------
    def preprocess(self, frames: Tensor) -> Tensor:
        """uint8 BGR [..., H, W, 3] -> normalised RGB float [B*T, 3, H, W].

        Cast first (exact for 0..255): TensorRT's ONNX parser accepts uint8 only as a network input or
        output, so the uint8 `frames` input must feed the Cast directly, never a Reshape/Transpose
        (docs/tensorrt.md, "Parser rules").
        """
        x = frames.float()
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
        x = x[:, [2, 1, 0]]
        return (x - self.pixel_mean) / self.pixel_std

    def forward_stages(
        self,
        frames: Tensor,
        query_in: Tensor,
        boxes_in: Tensor,
        all_masks: bool = False,
        features: list[Tensor] | None = None,
    ):
        """Batched core: frames [B, T, H, W, 3] uint8, query_in [B, N, C], boxes_in [B, N, 4].

        Returns (per-stage list of dicts with logits [B,N,T,K], boxes_xyxy [B,N,T,4] pixels,
        mask_logits [B,N,T,28,28] or None, query [B,N,T,C]); masks only for the last stage
        unless `all_masks` (deep supervision in training). Training may pass per-frame
        proposals (boxes_in [B, N, T, 4]) and the clip's backbone `features` to reuse them.
        """
        b, t, h, w, _ = frames.shape
        if features is None:
            features = self.backbone(self.preprocess(frames))
        n, c = query_in.shape[1:]
        query = query_in[:, :, None, :].expand(b, n, t, c)
        if self.time_embed is not None:
            query = query + self.time_embed.weight[:t]
        scale = torch.tensor([w, h, w, h], dtype=boxes_in.dtype, device=boxes_in.device)
        boxes = cxcywh_to_xyxy(boxes_in) * scale
        boxes = boxes if boxes.dim() == 4 else boxes[:, :, None, :].expand(b, n, t, 4)
        outputs = []
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            query, logits, new_boxes, mask = stage(features, query, boxes, all_masks or i == last)
            outputs.append({"logits": logits, "boxes_xyxy": new_boxes, "mask_logits": mask, "query": query})
            boxes = new_boxes.detach()
        return outputs

    def outputs_from_last_stage(self, last: dict, boxes_in: Tensor, image_hw: tuple[int, int]) -> dict[str, Tensor]:
        h, w = image_hw
        scale = torch.tensor([w, h, w, h], dtype=last["boxes_xyxy"].dtype, device=last["boxes_xyxy"].device)
        boxes = xyxy_to_cxcywh(last["boxes_xyxy"] / scale)
        carry = self.config.model.carry_boxes
        if carry == "last":
            boxes_out = self._carried_boxes(last["boxes_xyxy"][:, :, -1] / scale, self.config.model.carry_box_scale)
        elif carry == "velocity":
            boxes_out = self._carried_boxes(
                self._extrapolated(last["boxes_xyxy"] / scale), self.config.model.carry_box_scale
            )
        else:
            boxes_out = self.init_boxes.weight[None].expand_as(boxes_in)
        query_out = last["query"][:, :, -1] if self.config.model.carry_query == "last" else last["query"].mean(dim=2)
        return {
            "logits": last["logits"],
            "boxes": boxes,
            "mask_logits": last["mask_logits"],
            "query_out": query_out,
            "boxes_out": boxes_out,
        }

    @staticmethod
    def _extrapolated(xyxy: Tensor) -> Tensor:
        """[B, N, T, 4] -> [B, N, 4]: the last box moved on by the clip's mean per-frame motion to the
        next clip's centre frame, (T + 1) / 2 frames ahead (one proposal serves that clip's T frames)."""
        t = xyxy.shape[2]
        velocity = (xyxy[:, :, -1] - xyxy[:, :, 0]) / (t - 1)
        return xyxy[:, :, -1] + velocity * ((t + 1) / 2)

    @staticmethod
    def _carried_boxes(xyxy: Tensor, size_scale: float = 1.0) -> Tensor:
        """Last-frame boxes clipped to the canvas, never thinner than MIN_CARRIED_BOX (a dead box cannot regrow),
        their sides times `size_scale` (model.carry_box_scale; never wider than the canvas)."""
        xyxy = xyxy.clamp(0.0, 1.0)
        cxcywh = xyxy_to_cxcywh(xyxy)
        wh = cxcywh[..., 2:].clamp(min=MIN_CARRIED_BOX)
        if size_scale != 1.0:
            wh = (wh * size_scale).clamp(max=1.0)
        return torch.cat([cxcywh[..., :2], wh], dim=-1)

    def forward_clip(self, frames: Tensor, query_in: Tensor, boxes_in: Tensor) -> dict[str, Tensor]:
        """The per-clip contract (docs/contract.md). Unbatched: frames [T, H, W, 3] uint8; batched: [B, T, H, W, 3]."""
        batched = frames.dim() == 5
        if not batched:
            frames, query_in, boxes_in = frames[None], query_in[None], boxes_in[None]
        self._check_inputs(frames, query_in, boxes_in)
        stages = self.forward_stages(frames, query_in, boxes_in)
        out = self.outputs_from_last_stage(stages[-1], boxes_in, tuple(frames.shape[2:4]))
        return out if batched else {k: v[0] for k, v in out.items()}

    forward = forward_clip

    def _check_inputs(self, frames: Tensor, query_in: Tensor, boxes_in: Tensor) -> None:
        from efficientvis_trt.errors import EvisError

        m = self.config.model
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if frames.dtype != torch.uint8 or frames.shape[-1] != 3:
            raise EvisError(f"frames must be uint8 [T, H, W, 3] BGR, got {tuple(frames.shape)} {frames.dtype}")
        if frames.shape[-3] % 32 or frames.shape[-2] % 32:
            raise EvisError(
                f"frame size {frames.shape[-3]}x{frames.shape[-2]} must be multiples of 32 (letterbox first)"
            )
        if frames.shape[1] < 2:
            raise EvisError(f"a clip needs at least 2 frames, got {frames.shape[1]}")
        if self.time_embed is not None and frames.shape[1] > m.clip_len:
            raise EvisError(f"clip of {frames.shape[1]} frames is longer than the model's clip_len {m.clip_len}")
        if tuple(query_in.shape[1:]) != (m.num_queries, m.hidden_dim):
            raise EvisError(f"query_in must be [{m.num_queries}, {m.hidden_dim}], got {tuple(query_in.shape[1:])}")
        if tuple(boxes_in.shape[1:]) != (m.num_queries, 4):
            raise EvisError(f"boxes_in must be [{m.num_queries}, 4], got {tuple(boxes_in.shape[1:])}")
