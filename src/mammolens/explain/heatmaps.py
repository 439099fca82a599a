"""Heatmaps from a model's outputs: attention, localisation, Grad-CAM; overlays as PNG.

All maps are returned in *cache geometry* (the model's input size), float32 in [0, 1]:

* ``attention`` -- the gated-attention pooling weights (Ilse et al. 2018), bilinearly
  upsampled and divided by their maximum (so the most attended location is 1);
* ``localization`` -- the localisation branch's malignancy probability,
  ``sigmoid(logit)``, with the logits upsampled bilinearly before the sigmoid (for the
  baseline: the sigmoid of its class activation map, Zhou et al. 2016);
* ``gradcam`` -- Grad-CAM (Selvaraju et al., ICCV 2017) of the image logit at the last
  block of layer4 (computed natively; the ``grad-cam`` package gives the same maps).

:func:`mammolens.data.heatmap_io.save_heatmaps` stores them with the image's
:class:`~mammolens.data.transform.Transform`, so ``load_heatmap(..., geometry="original")``
maps them back onto the original mammogram; :func:`overlay_png` draws one over a
grayscale image in the house colour map (:mod:`mammolens.explain.colormap`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammolens.explain.colormap import heat_colormap_u8, to_unit


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, h, w)`` maps to ``(B, H, W)`` (half-pixel centres,
    as ``F.interpolate(..., align_corners=False)``).

    On the CPU OpenCV does it (within 1e-5 of PyTorch, about 6x less CPU: predict
    upsamples two maps per image to the full input size on the model's cores).
    """
    maps = maps.float()
    if maps.device.type == "cpu" and maps.ndim == 3 and maps.shape[0] > 0 and min(maps.shape[1:]) > 0:
        import cv2

        h, w = int(size[0]), int(size[1])
        arr = maps.detach().numpy()
        return torch.from_numpy(np.stack([cv2.resize(np.ascontiguousarray(m), (w, h), interpolation=cv2.INTER_LINEAR) for m in arr]))
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def attention_maps(attention: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Attention weights -> ``(B, H, W)`` in [0, 1] (divided by the per-image maximum)."""
    a = upsample(attention, size).clamp_min(0)
    mx = a.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (a / mx).cpu().numpy().astype(np.float32)


def localization_maps(localization: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Localisation logits -> ``(B, H, W)`` malignancy probabilities."""
    return torch.sigmoid(upsample(localization, size)).cpu().numpy().astype(np.float32)


class _LogitOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["logit"].unsqueeze(1)


def gradcam_maps(model: nn.Module, images: torch.Tensor, *, backend: str = "native") -> np.ndarray:
    """Grad-CAM of the malignancy logit, ``(B, H, W)`` in [0, 1].

    ``L = ReLU(sum_k alpha_k A^k)``, ``alpha_k`` the spatial mean of ``d logit / d A^k``
    over the activations ``A`` of :meth:`gradcam_layer` (the last block of layer4);
    each map is min-max scaled on its grid, then resized bilinearly to the input size.

    ``backend="native"`` computes this directly (one forward + backward); ``backend=
    "pytorch-grad-cam"`` uses the ``grad-cam`` package (identical maps, see the tests;
    its import alone takes seconds, so the native path is the default).
    """
    if backend == "pytorch-grad-cam":
        return _gradcam_package(model, images)
    if backend != "native":
        raise ValueError(f"backend must be 'native' or 'pytorch-grad-cam', got {backend!r}")
    layer = model.gradcam_layer()
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            x = images.detach()
            logit = model(x)["logit"]
            acts = store["a"]
            grads = torch.autograd.grad(logit.sum(), acts)[0]
    finally:
        handle.remove()
    with torch.no_grad():
        w = grads.float().mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((w * acts.float()).sum(dim=1))
        flat = cam.flatten(1)
        cam = cam - flat.amin(dim=1).view(-1, 1, 1)
        cam = cam / (1e-7 + cam.flatten(1).amax(dim=1).view(-1, 1, 1))
        out = upsample(cam, tuple(images.shape[-2:]))
    return to_unit(out.cpu().numpy())


def _gradcam_package(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapper = _LogitOnly(model)
    layer = model.gradcam_layer()
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        cam = GradCAM(model=wrapper, target_layers=[layer])
        try:
            out = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * x.shape[0])
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
    out = np.nan_to_num(np.asarray(out, dtype=np.float32), nan=0.0)
    h, w = images.shape[-2:]
    if out.shape[-2:] != (h, w):
        out = upsample(torch.from_numpy(out), (h, w)).numpy()
    return np.clip(out, 0, 1)


def compute_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    outputs: dict[str, torch.Tensor],
    *,
    gradcam: bool = True,
) -> list[dict[str, np.ndarray]]:
    """All heatmaps of a batch, one dict per image (cache geometry, [0, 1])."""
    size = tuple(images.shape[-2:])
    att = attention_maps(outputs["attention"], size)
    loc = localization_maps(outputs["localization"], size)
    gc = gradcam_maps(model, images) if gradcam else None
    res = []
    for i in range(images.shape[0]):
        d = {"attention": att[i], "localization": loc[i]}
        if gc is not None:
            d["gradcam"] = gc[i]
        res.append(d)
    return res


def overlay_rgb(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.4,
    threshold: float = 0.0,
) -> np.ndarray:
    """Blend a [0, 1] heatmap (:func:`~mammolens.explain.colormap.heat_colormap`) over a
    grayscale image; uint8 ``(H, W, 3)``.

    Pixels whose heatmap value is below ``threshold`` (or 0), and the air around the
    breast, stay gray; the blend weight grows with the heatmap value, so cold regions
    barely tint the image.
    """
    import cv2

    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    hm = to_unit(heatmap)  # once: NaN would poison the blend weights below
    if img.shape != hm.shape:
        raise ValueError(f"image {img.shape} and heatmap {hm.shape} differ in shape")
    # colour the breast only: not the air (within 0.02 of the image's darkest value), nor
    # where the map is exactly 0 (outside the breast crop the model saw)
    on = (hm >= threshold) & (hm > 0) & (img > float(img.min()) + 0.02)
    w = np.float32(alpha * 0.75) * hm
    w += np.float32(alpha * 0.25)
    w *= on
    # grey * (1 - w) + colour * w on uint8 planes (OpenCV's per-pixel blend): predict draws
    # one overlay per image on the cores the model uses; within one level of the float blend
    grey = cv2.cvtColor(cv2.convertScaleAbs(img, alpha=255.0), cv2.COLOR_GRAY2RGB)
    return cv2.blendLinear(grey, heat_colormap_u8(hm, unit=True), 1.0 - w, w)


def overlay_png(
    path: str | Path,
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    max_side: int | None = 1024,
    **kwargs: Any,
) -> Path:
    """Write :func:`overlay_rgb` as a PNG, shrunk so its long side is at most ``max_side``."""
    import cv2

    img = np.asarray(image, dtype=np.float32)
    hm = np.asarray(heatmap, dtype=np.float32)
    if max_side and max(img.shape) > max_side:
        f = max_side / max(img.shape)
        size = (max(1, int(round(img.shape[1] * f))), max(1, int(round(img.shape[0] * f))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        hm = cv2.resize(hm, size, interpolation=cv2.INTER_LINEAR)
    rgb = overlay_rgb(img, hm, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write overlay PNG")
    tmp.replace(path)
    return path
