"""``/api/images``: server-rendered PNGs of mammograms and heatmaps for the viewer.

Images are decoded through :func:`mammolens.serve.render.load_display`: the model's
pixel pipeline, in a child process. A stored image that cannot be decoded (or whose
decoder crashes) is a 422 with the reason; the server stays up.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from mammolens.errors import InputError
from mammolens.serve import queries
from mammolens.serve.deps import CurrentUser, RowId, ServiceDep, SignedIn
from mammolens.serve.models import Image
from mammolens.serve.render import Display, heatmap_png, load_display, render_png
from mammolens.serve.schemas import ImageInfo
from mammolens.serve.scoring import heatmap_original
from mammolens.serve.service import Service

router = APIRouter(prefix="/api/images", tags=["images"])

_PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


def _viewable(svc: Service, image_id: int, user: CurrentUser) -> tuple[Image, bool]:
    """The image (detached) and whether the user may see its AI results; 404 when it
    does not exist or belongs to another reader's blinded case. A short session of its
    own: rendering takes long and needs no database connection. Called by the routes
    (not a dependency), so that invalid query parameters are a 422 before any lookup."""
    with svc.db.session() as s:
        found = queries.viewable_image(s, image_id, user)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such image")
    return found


def _display(svc: Service, im: Image) -> Display:
    try:
        return load_display(
            svc.storage.resolve("instances", im.file), im.laterality,
            cache=svc.render_cache, window=getattr(svc.scorer, "window", "auto"),
        )
    except InputError as e:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the stored image cannot be decoded: {e.reason}"
        ) from None


def _png_response(data: bytes) -> Response:
    # patient images: never kept by the browser or a proxy (docs/serve.md, "Security")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/{image_id}/info", response_model=ImageInfo)
def info(image_id: RowId, svc: ServiceDep, user: SignedIn) -> dict:
    """Default window (centre/width in display units: the model's input intensities,
    0-1), value range, hanging mirror flag and the VOI transformation applied."""
    im, _show_ai = _viewable(svc, image_id, user)
    d = _display(svc, im)
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


@router.get("/{image_id}/image.png", response_class=Response, responses=_PNG)
async def image_png(
    image_id: RowId,
    svc: ServiceDep,
    user: SignedIn,
    wc: float | None = Query(None, allow_inf_nan=False, description="window centre (display units)"),
    ww: float | None = Query(None, gt=0, allow_inf_nan=False, description="window width (display units)"),
    max_h: int = Query(1024, ge=64, le=4096),
    hanging: bool = True,
) -> Response:
    """The image as an 8-bit PNG in the given window (default: the display's own),
    mirrored for the hanging protocol unless ``hanging=false``."""
    im, _show_ai = await run_in_threadpool(_viewable, svc, image_id, user)

    def _render() -> bytes:
        return render_png(_display(svc, im), center=wc, width=ww, max_h=max_h, hanging=hanging)

    return _png_response(await run_in_threadpool(_render))


@router.get("/{image_id}/heatmap.png", response_class=Response, responses=_PNG)
async def heatmap(
    image_id: RowId,
    svc: ServiceDep,
    user: SignedIn,
    max_h: int = Query(1024, ge=64, le=4096),
    hanging: bool = True,
    regions: int = Query(3, ge=0, le=10),
) -> Response:
    """The heatmap as a transparent RGBA overlay with its ``regions`` top regions
    outlined; 403 while the AI is hidden from a reader, 404 before scoring."""
    im, show_ai = await run_in_threadpool(_viewable, svc, image_id, user)
    if not show_ai:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "AI results are hidden until the unaided read is locked")
    if not im.heatmap_file:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no heatmap for this image (not scored yet)")
    hm_path = svc.storage.resolve("heatmaps", im.heatmap_file)

    def _render() -> bytes:
        d = _display(svc, im)
        arr, _kind = heatmap_original(hm_path)
        return heatmap_png(arr, d, max_h=max_h, hanging=hanging, regions=regions)

    return _png_response(await run_in_threadpool(_render))
