"""``/api/images``: server-rendered PNGs of mammograms and heatmaps for the viewer.

Images are decoded through :func:`mammolens.serve.render.load_display`: the model's
pixel pipeline, in a child process. A stored image that cannot be decoded (or whose
decoder crashes) is a 422 with the reason; the server stays up.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from mammolens.errors import InputError
from mammolens.serve.deps import CurrentUser, RowId, current_user, service
from mammolens.serve.models import Image
from mammolens.serve.render import Display, heatmap_png, load_display, render_png
from mammolens.serve.routes._views import ai_visible, may_open
from mammolens.serve.scoring import heatmap_original

router = APIRouter(prefix="/api/images", tags=["images"])


def _image(request: Request, image_id: int, user: CurrentUser, *, need_ai: bool) -> tuple[Image, str]:
    svc = service(request)
    with svc.db.session() as s:
        im = s.get(Image, image_id)
        if im is None or not may_open(s, user, im.study):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such image")
        if need_ai and not ai_visible(s, user, im.study):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "AI results are hidden until the unaided read is locked")
        s.expunge(im)
        return im, im.laterality


def _display(request: Request, im: Image, lat: str) -> Display:
    svc = service(request)
    try:
        return load_display(
            svc.storage.resolve("instances", im.file), lat,
            cache=svc.render_cache, window=getattr(svc.scorer, "window", "auto"),
        )
    except InputError as e:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the stored image cannot be decoded: {e.reason}"
        ) from None


def _png_response(data: bytes) -> Response:
    # patient images: never kept by the browser or a proxy (docs/serve.md, "Security")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/{image_id}/info")
def info(image_id: RowId, request: Request, user: CurrentUser = Depends(current_user)) -> dict:
    """Default window (centre/width in display units: the model's input intensities,
    0-1), value range, hanging mirror flag and the VOI transformation applied."""
    im, lat = _image(request, image_id, user, need_ai=False)
    d = _display(request, im, lat)
    return {
        "id": im.id,
        "laterality": im.laterality,
        "view": im.view,
        "window_center": d.center,
        "window_width": d.width,
        "min": d.vmin,
        "max": d.vmax,
        "mirrored": d.mirror,
        "voi": d.voi,
        "rows": int(d.pixels.shape[0]),
        "columns": int(d.pixels.shape[1]),
    }


@router.get("/{image_id}/image.png")
async def image_png(
    image_id: RowId,
    request: Request,
    user: CurrentUser = Depends(current_user),
    wc: float | None = Query(None, allow_inf_nan=False, description="window centre (display units)"),
    ww: float | None = Query(None, gt=0, allow_inf_nan=False, description="window width (display units)"),
    max_h: int = Query(1024, ge=64, le=4096),
    hanging: bool = True,
) -> Response:
    im, lat = _image(request, image_id, user, need_ai=False)

    def _render() -> bytes:
        d = _display(request, im, lat)
        return render_png(d, center=wc, width=ww, max_h=max_h, hanging=hanging)

    return _png_response(await run_in_threadpool(_render))


@router.get("/{image_id}/heatmap.png")
async def heatmap(
    image_id: RowId,
    request: Request,
    user: CurrentUser = Depends(current_user),
    max_h: int = Query(1024, ge=64, le=4096),
    hanging: bool = True,
    regions: int = Query(3, ge=0, le=10),
) -> Response:
    svc = service(request)
    im, lat = _image(request, image_id, user, need_ai=True)
    if not im.heatmap_file:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no heatmap for this image (not scored yet)")
    hm_path = svc.storage.resolve("heatmaps", im.heatmap_file)

    def _render() -> bytes:
        d = _display(request, im, lat)
        arr, _kind = heatmap_original(hm_path)
        return heatmap_png(arr, d, max_h=max_h, hanging=hanging, regions=regions)

    return _png_response(await run_in_threadpool(_render))
