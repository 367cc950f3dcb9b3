"""The mouth interior: the photo's own teeth and tongue re-laid into each opening, or a shaded cavity with teeth.

Drawn after the mesh warp, inside the target inner-lip contour, in a mouth frame (along the inner-lip corners and
across them), so the upper teeth hang from the upper lip and the lower ones ride on the lower lip.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from generation.face import LANDMARKS
from generation.render.mouth_source import mouth_frame
from generation.render.rig import FaceRig

__all__ = ["draw_mouth_interior"]


def draw_mouth_interior(rig: FaceRig, pixels: torch.Tensor, frame: torch.Tensor, verts: np.ndarray) -> None:
    """Paint the mouth interior inside the target inner-lip contour, in place. frame: (H, W, 3) float."""
    cfg = rig.config
    upper = verts[list(LANDMARKS.INNER_UPPER)]
    lower = verts[list(LANDMARKS.INNER_LOWER)]
    gap_px = float(np.max(np.linalg.norm(lower - upper, axis=1)))
    if gap_px < 0.6:
        return
    center, axis, down, half = mouth_frame(upper)
    ua = (upper - center) @ axis
    ub = (upper - center) @ down
    la = (lower - center) @ axis
    lb = (lower - center) @ down
    lo = np.floor(np.minimum(upper.min(0), lower.min(0)) - 2).astype(int).clip(0, rig.size - 1)
    hi = np.ceil(np.maximum(upper.max(0), lower.max(0)) + 2).astype(int).clip(1, rig.size)
    patch_px = pixels[lo[1] : hi[1], lo[0] : hi[0]]  # (h, w, 2)
    dev = rig.device
    rel = patch_px - torch.as_tensor(center, dtype=torch.float32, device=dev)
    a = rel @ torch.as_tensor(axis, dtype=torch.float32, device=dev)  # (h, w)
    b = rel @ torch.as_tensor(down, dtype=torch.float32, device=dev)
    b_up = _interp(a, ua, ub, dev)
    b_lo = _interp(a, la, lb, dev)
    f = cfg.feather_px
    inside = torch.sigmoid((b - b_up) / f) * torch.sigmoid((b_lo - b) / f)
    inside = inside * torch.sigmoid((half - a.abs()) / f)
    gap = (b_lo - b_up).clamp(min=1e-3)
    depth = ((torch.minimum(b - b_up, b_lo - b)).clamp(min=0) / (0.5 * gap)).clamp(max=1.0) ** 0.7
    lateral = (a / half).clamp(-1, 1)
    lip = torch.as_tensor(rig.lip_color, dtype=torch.float32, device=dev)
    near, deep = lip * 0.5, lip * 0.13
    shade = (depth * (1.0 - 0.35 * lateral**2))[..., None]
    color = near * (1 - shade) + deep * shade  # (h, w, 3)
    if rig.mouth_source is not None:
        color = _own_interior(rig, a, b, b_up, b_lo, half, color)
    else:
        # Upper teeth: a band hanging from the upper lip, shortest at the sides, shadowed at the top.
        arch = (1 - (lateral / 0.9) ** 2).clamp(min=0).sqrt()
        teeth_h = torch.minimum(torch.full_like(gap, cfg.teeth_height * rig.iod), 0.62 * gap) * arch
        t_up = torch.sigmoid((b_up + teeth_h - b) / 0.6) * (teeth_h > 0.5)
        teeth = torch.as_tensor(rig.teeth_color, dtype=torch.float32, device=dev)
        tshade = (0.72 + 0.28 * ((b - b_up) / teeth_h.clamp(min=1.0)).clamp(0, 1)) * (1 - 0.45 * lateral**2)
        color = color * (1 - t_up[..., None]) + teeth * tshade[..., None] * t_up[..., None]
        # Lower teeth: a thin, half-hidden band just above the lower lip.
        low_h = torch.minimum(torch.full_like(gap, cfg.lower_teeth_height * rig.iod), 0.3 * gap) * arch
        t_lo = torch.sigmoid((b - (b_lo - low_h)) / 0.6) * (low_h > 0.5) * 0.55
        color = color * (1 - t_lo[..., None]) + teeth * 0.8 * tshade[..., None] * t_lo[..., None]
    region = frame[lo[1] : hi[1], lo[0] : hi[0]]
    region.mul_(1 - inside[..., None]).add_(color * inside[..., None])

def _own_interior(rig: FaceRig, a: torch.Tensor, b: torch.Tensor, b_up: torch.Tensor, b_lo: torch.Tensor, half: float,
                  cavity: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The photo's own mouth interior, re-laid into the current opening: (h, w, 3) colours.

    The upper half of the photo's opening (upper teeth) hangs from the upper lip and the lower half (lower
    teeth, tongue) rides on the lower lip, each at the photo's scale; where the current opening is wider than
    the photo's, the gap between them is the shaded cavity. a/b: mouth-frame coordinates of the patch pixels;
    b_up/b_lo: the current inner-lip profiles there.
    """
    src = rig.mouth_source
    assert src is not None
    dev = a.device
    k = src.half / half  # photo pixels per output pixel
    src_iod = rig.iod  # the base and the photo share one crop: photo pixels
    s_lat = a * k  # lateral coordinate in the photo's mouth frame
    s_up = _interp(s_lat, src.lateral, src.upper, dev)
    s_lo = _interp(s_lat, src.lateral, src.lower, dev)
    s_gap = (s_lo - s_up).clamp(min=0.0)
    d_up = (b - b_up).clamp(min=0.0) * k  # depth below the upper lip, photo pixels
    d_lo = (b_lo - b).clamp(min=0.0) * k
    center = torch.as_tensor(src.center, dtype=torch.float32, device=dev)
    axis = torch.as_tensor(src.axis, dtype=torch.float32, device=dev)
    down = torch.as_tensor(src.down, dtype=torch.float32, device=dev)
    lateral = center + s_lat[..., None] * axis  # (h, w, 2)
    from_up = lateral + (s_up + d_up)[..., None] * down
    from_lo = lateral + (s_lo - d_lo)[..., None] * down
    size = src.image.shape[-1]
    grid = torch.stack([from_up, from_lo]) * (2.0 / size) - 1.0  # (2, h, w, 2)
    tex = F.grid_sample(src.image.expand(2, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                        align_corners=False).permute(0, 2, 3, 1)  # (2, h, w, 3)  # fmt: skip
    split = src.split
    # The jaw that is relatively nearer owns the pixel; each shows the photo's rows it had there.
    use_up = torch.sigmoid((d_lo / (1 - split) - d_up / split) / 0.8)[..., None]
    # The lower jaw's texture reaches half a pixel past its share, so the two meet without a dark seam;
    # the cavity shows only where neither reaches (an opening wider than the photo's).
    up_len = (split * s_gap).clamp(max=rig.config.own_teeth_max * src_iod)
    vis_up = torch.sigmoid((up_len - d_up) / 0.8)[..., None]
    vis_lo = torch.sigmoid(((1 - split) * s_gap + 0.5 - d_lo) / 0.8)[..., None]
    w_up = vis_up * (1 - vis_lo * (1 - use_up))
    w_lo = vis_lo * (1 - vis_up * use_up)
    w_cav = (1 - vis_up) * (1 - vis_lo)
    return (tex[0] * w_up + tex[1] * w_lo + cavity * w_cav) / (w_up + w_lo + w_cav).clamp(min=1e-6)


def _interp(x: torch.Tensor, xp: np.ndarray, fp: np.ndarray, device: torch.device) -> torch.Tensor:
    """np.interp for a tensor x over a small sorted table (xp, fp)."""
    order = np.argsort(xp)
    xs = torch.as_tensor(xp[order], dtype=torch.float32, device=device)
    ys = torch.as_tensor(fp[order], dtype=torch.float32, device=device)
    idx = torch.searchsorted(xs, x.contiguous()).clamp(1, len(xs) - 1)
    x0, x1 = xs[idx - 1], xs[idx]
    y0, y1 = ys[idx - 1], ys[idx]
    t = ((x - x0) / (x1 - x0).clamp(min=1e-6)).clamp(0, 1)
    return y0 + t * (y1 - y0)
