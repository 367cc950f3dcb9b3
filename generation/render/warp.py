"""The mesh warp: draw a frame from target vertices by an inverse piecewise-affine warp of the rig's photo.

For every output pixel we find the triangle of the *target* mesh it lies in (a triangle-id raster), map it back
through that triangle's affine transform to the photo, and sample with ``grid_sample``. Because the map goes
output -> source, every output pixel gets exactly one source pixel: lips never fold and there are no holes.
The person is composited over the photo's still background, so only the person moves.

All tensor maths runs on ``device`` (CPU or CUDA unchanged); only the triangle-id raster is drawn with OpenCV on
the CPU (a few ms) and uploaded. ``generation.render.closing`` uses the warp alone to close an open mouth;
``generation.render.renderer`` adds the mouth interior, the lids and the occluders on top.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from generation.render.rig import FaceRig

__all__ = ["Warper"]


class Warper:
    """Warps one rig's photo to target meshes. Thread-compatible (no shared mutable state across calls)."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        size = rig.size
        ys, xs = torch.meshgrid(
            torch.arange(size, dtype=torch.float32, device=rig.device) + 0.5,
            torch.arange(size, dtype=torch.float32, device=rig.device) + 0.5,
            indexing="ij",
        )
        self.pixels = torch.stack([xs, ys], -1)  # (H, W, 2) pixel centres
        self._tri_cpu = rig.triangles.astype(np.int32)
        self._facing = np.sign(_twice_signed_areas(rig.source_vertices, self._tri_cpu))  # (K,) front faces

    @torch.no_grad()
    def warp(self, targets: np.ndarray, triangles: np.ndarray | None = None, source: np.ndarray | None = None
             ) -> np.ndarray:  # fmt: skip
        """The mesh warp alone (no mouth interior) to target vertices (B, V, 2): (B, size, size, 3) uint8.

        Args:
            triangles: (K, 3) vertex indices drawn in order (later wins); default the rig's depth-sorted mesh.
            source: (size, size, 3) uint8 image to sample instead of the rig's photo (same geometry).
        """
        image = None
        if source is not None:
            image = torch.from_numpy(source).to(device=self.rig.device, dtype=torch.float32)
            image = image.permute(2, 0, 1).unsqueeze(0).contiguous()
        return self.frames(targets, triangles, image).clamp_(0, 255).round_().to(torch.uint8).cpu().numpy()

    def frames(self, targets: np.ndarray, triangles: np.ndarray | None = None, source: torch.Tensor | None = None
              ) -> torch.Tensor:  # fmt: skip
        """(B, H, W, 3) float frames: every output pixel sampled from the base image through its triangle."""
        rig = self.rig
        src = self.source_map(targets, triangles)  # (B, H, W, 2)
        bsz = src.shape[0]
        grid = src * (2.0 / rig.size) - 1.0  # align_corners=False convention
        if rig.person is None:
            image = (rig.image if source is None else source).expand(bsz, -1, -1, -1)
            out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
            return out.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
        # The person mask travels with the pixels as a fourth channel: where the warped frame shows background
        # and the photo shows background too, the photo's own (still) pixel is used.
        image = (rig.image if source is None else source).expand(bsz, -1, -1, -1)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
        # Only around the head does the warp move background noticeably: composite there, the rest is the warp.
        y0, y1, x0, x1 = rig.composite_box
        person = F.grid_sample(rig.person.expand(bsz, -1, -1, -1), grid[:, y0:y1, x0:x1], mode="bilinear",
                               padding_mode="border", align_corners=False)[:, 0]  # (B, h, w)  # fmt: skip
        keep = (1.0 - person).mul_(rig.background[y0:y1, x0:x1])  # background before and after
        region = out[:, y0:y1, x0:x1]
        region.add_(rig.photo_background_hwc[y0:y1, x0:x1].sub(region).mul_(keep[..., None]))
        # Background now where the photo had the person: revealed by the move, drawn from the clean plate (zero
        # everywhere at rest, so the photo's own pose still renders the photo exactly).
        # Soft mask edges (hair) change a little with any move; only a clear change shows the plate.
        revealed = (rig.person[0, 0, y0:y1, x0:x1] - person).sub_(0.25).clamp_(min=0.0).mul_(1 / 0.75)
        region.add_(rig.plate_hwc[y0:y1, x0:x1].sub(region).mul_(revealed[..., None]))
        return out

    def source_map(self, targets: np.ndarray, triangles: np.ndarray | None = None,
                   box: tuple[int, int, int, int] | None = None) -> torch.Tensor:  # fmt: skip
        """(B, h, w, 2) the photo position (x, y, pixels) each output pixel of ``box`` (y0, y1, x0, x1; default the
        whole frame) is drawn from, through the target triangle it lies in."""
        rig = self.rig
        if triangles is None:
            tri_cpu, tri, src_tri = self._tri_cpu, rig.triangles, rig._src_tri
        else:
            tri_cpu, tri = triangles.astype(np.int32), triangles
            src_tri = torch.as_tensor(rig.source_vertices[triangles], dtype=torch.float32, device=rig.device)
        y0, y1, x0, x1 = box if box is not None else (0, rig.size, 0, rig.size)
        ids = np.stack([self._raster(t, tri_cpu, box=box) for t in targets])  # (B, h, w) triangle ids
        affine = self._affines(targets, tri, src_tri)  # (B, K, 2, 3) target -> source
        ids_t = torch.from_numpy(np.ascontiguousarray(ids)).to(rig.device)
        bsz, k = affine.shape[:2]
        flat = affine.reshape(bsz * k, 6)
        offset = (torch.arange(bsz, device=rig.device) * k)[:, None, None]
        per_pixel = flat[(ids_t.long() + offset).reshape(-1)].reshape(bsz, y1 - y0, x1 - x0, 2, 3)
        px = self.pixels[None, y0:y1, x0:x1, 0:1]  # (1, h, w, 1)
        py = self.pixels[None, y0:y1, x0:x1, 1:2]
        return per_pixel[..., 0] * px + per_pixel[..., 1] * py + per_pixel[..., 2]  # (B, h, w, 2)

    def source_map_rigid(self, targets: np.ndarray, rigid: np.ndarray, box: tuple[int, int, int, int],
                         step: int = 1) -> torch.Tensor:  # fmt: skip
        """``source_map`` in ``box`` for targets that move every vertex flagged in ``rigid`` (V,) by one affine
        map per frame (``deform_flat``): pixels of triangles made only of those vertices take that map's inverse,
        and only the other triangles (toward the ring and border anchors) are rasterised. (B, h, w, 2).

        step: compute the map every ``step`` pixels and interpolate it bilinearly in between. The map is
            continuous and piecewise affine with gentle kinks (the ring anchors' shear), so a coarse grid is
            within a fraction of a pixel of it at a sixteenth of the work (``step`` 4).
        """
        rig = self.rig
        y0, y1, x0, x1 = box
        h, w = y1 - y0, x1 - x0
        nh, nw = -(-(h - 1) // step) + 1, -(-(w - 1) // step) + 1  # coarse rows and columns, first to last
        rows = np.round(np.linspace(0, h - 1, nh)).astype(int)  # (nh,) the box rows (columns) they sit on
        cols = np.round(np.linspace(0, w - 1, nw)).astype(int)
        ys = torch.as_tensor(y0 + 0.5 + np.linspace(0, h - 1, nh), dtype=torch.float32, device=rig.device)
        xs = torch.as_tensor(x0 + 0.5 + np.linspace(0, w - 1, nw), dtype=torch.float32, device=rig.device)
        px = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (nh, nw, 2) pixel centres
        outer = np.nonzero(~rigid[self._tri_cpu].all(1))[0]  # (K',) triangles with a ring or border vertex
        src_rigid = rig.source_vertices[rigid]  # (R, 2)
        affine = self._affines(targets, rig.triangles[outer], rig._src_tri[outer])  # (B, K', 2, 3)
        out = []
        for b, verts in enumerate(targets):
            # The frame's one map, target -> source, fitted on the rigid vertices (exact up to rounding).
            design = np.concatenate([verts[rigid], np.ones((len(src_rigid), 1))], 1)  # (R, 3)
            back = torch.as_tensor(np.linalg.lstsq(design, src_rigid, rcond=None)[0], dtype=torch.float32,
                                   device=rig.device)  # (3, 2)  # fmt: skip
            src = px[..., 0:1] * back[0] + px[..., 1:2] * back[1] + back[2]  # (nh, nw, 2)
            ids = self._raster(verts, self._tri_cpu[outer], box=box, empty=-1, facing=self._facing[outer])
            hit = torch.from_numpy(np.ascontiguousarray(ids[np.ix_(rows, cols)])).to(rig.device).reshape(-1)
            where = torch.nonzero(hit >= 0)[:, 0]
            if len(where):
                per = affine[b][hit[where].long()]  # (n, 2, 3)
                p = px.reshape(-1, 2)[where]  # (n, 2)
                flat = src.reshape(-1, 2)
                flat[where] = per[..., 0] * p[:, :1] + per[..., 1] * p[:, 1:] + per[..., 2]
            if (nh, nw) != (h, w):
                fine = F.interpolate(src.permute(2, 0, 1)[None], size=(h, w), mode="bilinear", align_corners=True)
                src = fine[0].permute(1, 2, 0)  # (h, w, 2)
            out.append(src)
        return torch.stack(out).contiguous()

    def sample(self, image: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """(B, h, w, C): ``image`` (1, C, H, W) read bilinearly at ``source`` positions (B, h, w, 2) (pixels)."""
        grid = source * (2.0 / self.rig.size) - 1.0  # align_corners=False convention
        out = F.grid_sample(image.expand(len(source), -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)  # fmt: skip
        return out.permute(0, 2, 3, 1).contiguous()

    def _raster(self, verts: np.ndarray, tri_cpu: np.ndarray, box: tuple[int, int, int, int] | None = None,
                empty: int = 0, facing: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Triangle id (row of ``tri_cpu``) per output pixel, drawn far-to-near (later ones win), 1/16 px
        precision; only ``box`` (y0, y1, x0, x1) when given, ``empty`` where no triangle is drawn. ``facing``:
        the rows' front-face windings (the rig's mesh has its own; None for other triangle lists culls none).

        Collapsed triangles (closed lids and lips) are skipped: OpenCV would still draw them as a line of their
        source centroid's colour, a seam of teeth or eye along closed lips and lids. Their neighbours cover it.
        """
        y0, y1, x0, x1 = box if box is not None else (0, self.rig.size, 0, self.rig.size)
        ids = np.full((y1 - y0, x1 - x0), empty, dtype=np.int32)
        area2 = _twice_signed_areas(verts, tri_cpu)
        visible = np.abs(area2) > 0.1  # px^2
        if facing is None and tri_cpu is self._tri_cpu:
            facing = self._facing
        if facing is not None:
            # Back-face culling: a triangle whose winding flipped has turned away from the camera (the far cheek
            # in a head turn). Drawn, it would lie over the hair beside the face as a serrated edge.
            visible &= np.sign(area2) == facing
        tri = verts[tri_cpu] - np.array([x0, y0])  # (K, 3, 2) in the box
        if box is not None:  # only triangles that reach into the box
            lo, hi = tri.min(1), tri.max(1)
            visible &= (hi[:, 0] >= -1) & (hi[:, 1] >= -1) & (lo[:, 0] <= x1 - x0 + 1) & (lo[:, 1] <= y1 - y0 + 1)
        pts = np.round((tri - 0.5) * 16).astype(np.int32)  # (K, 3, 2) in 1/16 px
        for k in np.nonzero(visible)[0]:
            cv2.fillConvexPoly(ids, pts[k], int(k), lineType=cv2.LINE_8, shift=4)
        return ids

    def _affines(self, targets: np.ndarray, triangles: np.ndarray, src_tri: torch.Tensor) -> torch.Tensor:
        """(B, K, 2, 3) affine maps from each target triangle to its source triangle."""
        rig = self.rig
        tgt = torch.as_tensor(
            targets[:, triangles], dtype=torch.float32, device=rig.device
        )  # (B, K, 3, 2)
        ones = torch.ones(tgt.shape[:-1] + (1,), device=rig.device)
        m = torch.cat([tgt, ones], -1).transpose(-1, -2)  # (B, K, 3, 3) columns [x, y, 1]
        det = torch.linalg.det(m)
        ok = det.abs() > 1e-3
        m_safe = torch.where(ok[..., None, None], m, torch.eye(3, device=rig.device).expand_as(m))
        src = src_tri.transpose(-1, -2).expand(tgt.shape[0], -1, -1, -1)  # (B, K, 2, 3)
        affine = src @ torch.linalg.inv(m_safe)  # (B, K, 2, 3)
        # Degenerate (zero-area) triangles map everything to their source centroid.
        centroid = src_tri.mean(1)  # (K, 2)
        fallback = torch.zeros_like(affine)
        fallback[..., 2] = centroid
        return torch.where(ok[..., None, None], affine, fallback)


def _twice_signed_areas(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(K,) twice the signed area of each triangle over vertices (V, 2): the sign is its winding."""
    tri = verts[triangles]  # (K, 3, 2)
    d1, d2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
