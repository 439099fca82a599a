"""Inference backends: one model, four ways to run its forward pass on a CPU (or GPU).

``predict --backend NAME`` and the service choose one:

* ``eager`` -- PyTorch as trained (the reference the others are checked against), run
  under :func:`torch.inference_mode` with the weights and inputs in ``channels_last``
  layout (oneDNN's native layout: no reorder before and after every convolution). On the
  CPU it keeps freed activation memory in the process (:func:`keep_freed_memory`):
  with glibc's default every pass faulted its activations in afresh, system time that
  grew faster than the batch and made batch 2 slower per image than batch 1
  (``bench/bench_batching.py``);
* ``compiled`` -- the same graph through :func:`torch.compile` (Inductor) with
  ``freezing``: batch norms folded into the convolutions, weights pre-packed as
  constants, element-wise ops fused. Compiling takes tens of seconds (once per input
  shape, cached on disk by Inductor) and needs a C++ compiler;
* ``onnx`` -- ONNX Runtime (``onnxruntime``) on a graph exported with
  :func:`torch.onnx.export` (``dynamo=True``, i.e. through :func:`torch.export`);
* ``openvino`` -- OpenVINO on the same ONNX graph (or an exported IR ``.xml``).

Every backend maps a ``(B, 1, H, W)`` float32 batch in [0, 1] to the model's outputs as
NumPy arrays::

    logit         (B,)
    attention     (B, h, w)
    localization  (B, h, w)
    benign_logit  (B,)        only for a model with the benign output (``model.benign_output``)

A backend that cannot be built (package missing, no compiler, export failure) falls back
to ``eager`` with the reason logged (``mammolens.predict`` logger) and kept in
:attr:`Backend.fallback_reason`. Grad-CAM needs gradients, so it always runs on the eager
model (or is skipped when only an exported graph is loaded).

Threads: every backend uses :func:`torch.get_num_threads` intra-op threads and one
inter-op thread (one stream), so a batch never competes with itself for the cores.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mammolens.errors import ConfigError

log = logging.getLogger("mammolens.predict")

BACKENDS = ("eager", "compiled", "onnx", "openvino")
#: the outputs every backend returns (the model may have more; exports keep these)
OUTPUT_NAMES = ("logit", "attention", "localization")
#: outputs a model has only when configured so (kept by every backend and export)
OPTIONAL_OUTPUT_NAMES = ("benign_logit",)


def output_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The outputs of ``model`` a backend returns: :data:`OUTPUT_NAMES`, plus
    ``benign_logit`` for a model with the benign output."""
    return OUTPUT_NAMES + (("benign_logit",) if getattr(model, "benign_output", False) else ())
INPUT_NAME = "image"
#: the record of a ``mammolens export`` folder (:mod:`mammolens.predict.export`)
EXPORT_FILE = "mammolens_export.json"
EXPORT_FORMATS = ("onnx", "openvino")
EXPORT_FORMAT_VERSION = 1
#: ONNX opset of exports (ONNX Runtime >= 1.17 and OpenVINO >= 2024.0 read it)
OPSET = 18


class BackendUnavailable(ConfigError):
    """A backend asked for cannot run here (package missing, export failed...)."""


def _threads() -> int:
    return max(1, int(torch.get_num_threads()))


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Keep freed large blocks in the process's heap instead of returning them to the kernel.

    glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
    ``mmap`` and gives it back with ``munmap`` when freed. A forward pass at 1024x832
    allocates gigabytes of such activation tensors, so without this the kernel faults in
    and zeroes every page of them again on every pass: system time that grows with the
    batch (bench/bench_batching.py). With ``M_MMAP_MAX = 0`` and a high
    ``M_TRIM_THRESHOLD`` the blocks stay in the heap and the next pass reuses them; the
    resident memory then stays at the peak of one batch (it does not grow with the number
    of batches). Process-wide; a no-op returning ``False`` off glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, int(trim_threshold)) == 1)


class _Outputs(torch.nn.Module):
    """The model restricted to :func:`output_names`, returned as a tuple (export-friendly)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = output_names(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[k] for k in self.names)


class Backend:
    """Runs the forward pass; ``__call__(x) -> {name: ndarray}`` (see the module doc).

    Attributes
    ----------
    name : str
        The backend that actually runs (``eager`` after a fall-back).
    requested : str
        The backend asked for.
    fallback_reason : str or None
        Why ``requested`` could not be used.
    """

    name = "?"

    def __init__(self) -> None:
        self.requested = self.name
        self.fallback_reason: str | None = None

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "requested": self.requested, "fallback_reason": self.fallback_reason}


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class EagerBackend(Backend):
    """PyTorch eager, ``channels_last`` + ``inference_mode`` (the reference).

    On the CPU a batch runs as single-image passes (``micro_batch=1``): eager convolutions
    at 1024x832 are 6-11 % slower per image at batch 2 than at batch 1 on two threads
    (bench/results/model_speed.md), so batching would only cost time there. Eval-mode
    batch norm and attention pooling are per image, so the outputs are the same.
    """

    name = "eager"

    def __init__(self, model: torch.nn.Module, *, channels_last: bool = True,
                 micro_batch: int | Literal["auto"] | None = "auto") -> None:
        super().__init__()
        self.model = model.eval()
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        if micro_batch == "auto":
            micro_batch = 1 if self.device.type == "cpu" else None
        elif micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1):
            raise ValueError(f"micro_batch must be an integer >= 1, 'auto' or None, got {micro_batch!r}")
        #: images per forward pass (``None``: the whole batch); ``"auto"`` gives 1 on the CPU, the whole batch elsewhere
        self.micro_batch: int | None = micro_batch
        # 4-D parameters (conv weights) go channels_last; the model stays usable for
        # Grad-CAM (autograd works in any layout)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.keeps_freed_memory = False
        if self.device.type == "cpu":
            # reuse the activations' memory from pass to pass instead of faulting it in again
            self.keeps_freed_memory = keep_freed_memory()

    def forward_torch(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        x = x.to(self.device)
        names = output_names(self.model)
        step = self.micro_batch or x.shape[0]
        parts = []
        with torch.inference_mode():
            for i in range(0, max(1, x.shape[0]), max(1, step)):
                xi = x[i : i + step]
                if self.channels_last:
                    xi = xi.contiguous(memory_format=torch.channels_last)
                out = self.model(xi)
                parts.append({k: out[k].float() for k in names})
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([p[k] for p in parts]) for k in names}

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in self.forward_torch(x).items()}


class CompiledBackend(Backend):
    """:func:`torch.compile` (Inductor, ``freezing=True``) of the channels_last model.

    Inductor compiles once per input shape (the last, smaller batch of a run compiles
    again); compiled kernels are cached on disk between processes.
    """

    name = "compiled"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        import shutil

        if os.name != "nt" and shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
            raise BackendUnavailable("torch.compile needs a C++ compiler (g++/c++) on PATH for CPU kernels")
        import torch._inductor.config as inductor_config

        # freezing: parameters become constants -> BN folded into conv, weights pre-packed
        inductor_config.freezing = True
        self.eager = EagerBackend(model)
        self.device = self.eager.device
        wrapped = _Outputs(self.eager.model)
        self.names = wrapped.names
        self.fn = torch.compile(wrapped, backend="inductor", dynamic=False)

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outs = self.fn(x)
        return {k: v.float().cpu().numpy() for k, v in zip(self.names, outs, strict=True)}


def export_onnx(model: torch.nn.Module, path: str | Path, image_size: tuple[int, int], *, opset: int = OPSET) -> Path:
    """Export ``model`` (outputs :data:`OUTPUT_NAMES`) to ONNX with a dynamic batch axis.

    Uses the ``torch.export``-based exporter; the graph is traced at batch 2 (batch 1
    would be specialised to a constant) and declared dynamic in the batch dimension.
    """
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _Outputs(model).eval()
    h, w = image_size
    x = torch.rand(2, 1, h, w)
    try:
        import onnxscript  # noqa: F401 - the exporter's dependency: a clear message if missing
    except ImportError as e:
        raise BackendUnavailable(f"ONNX export needs the onnx and onnxscript packages ({e})") from None
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                wrapped,
                (x,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(wrapped.names),
                dynamic_shapes=({0: "batch"},),
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
            prog.save(str(path))
    except BackendUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported the same way
        raise BackendUnavailable(f"ONNX export of the model failed ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    return path


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime (CPU execution provider, all graph optimisations)."""

    name = "onnx"

    def __init__(self, onnx_path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed ({e}); pip install onnxruntime") from None
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or _threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), so, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"{onnx_path}: ONNX Runtime cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
        names = [o.name for o in self.session.get_outputs()]
        missing = [k for k in OUTPUT_NAMES if k not in names]
        if missing:
            raise BackendUnavailable(f"{onnx_path}: the ONNX graph lacks outputs {missing} (not a mammolens export?)")
        self.names = OUTPUT_NAMES + tuple(k for k in OPTIONAL_OUTPUT_NAMES if k in names)
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(onnx_path)

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(list(self.names), {self.input_name: _as_numpy(x)})
        return dict(zip(self.names, outs, strict=True))


class OpenVinoBackend(Backend):
    """OpenVINO CPU plugin (latency hint, one stream, fp32 precision) on ONNX or IR."""

    name = "openvino"

    def __init__(self, model_path: str | Path, *, threads: int | None = None, device: str = "CPU") -> None:
        super().__init__()
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailable(f"openvino is not installed ({e}); pip install openvino") from None
        core = ov.Core()
        cfg = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads or _threads()),
            # fp32 as trained: the CPU plugin may otherwise pick bf16 on AMX/AVX512-bf16 CPUs
            "INFERENCE_PRECISION_HINT": "f32",
        }
        try:
            self.compiled = core.compile_model(str(model_path), device, cfg)
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"{model_path}: OpenVINO cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
        self.outputs = {}
        for out in self.compiled.outputs:
            for n in out.get_names():
                self.outputs[n] = out
        missing = [k for k in OUTPUT_NAMES if k not in self.outputs]
        if missing:
            raise BackendUnavailable(f"{model_path}: the OpenVINO model lacks outputs {missing} (not a mammolens export?)")
        self.names = OUTPUT_NAMES + tuple(k for k in OPTIONAL_OUTPUT_NAMES if k in self.outputs)
        self.request = self.compiled.create_infer_request()
        self.path = Path(model_path)

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        res = self.request.infer({0: _as_numpy(x)})
        # copy: the request's output buffers are reused by the next call
        return {k: np.array(res[self.outputs[k]], dtype=np.float32, copy=True) for k in self.names}


def runtime_backend(fmt: str, model_file: str | Path) -> Backend:
    """The runtime backend of an exported model file (``onnx`` -> ONNX Runtime, ``openvino``)."""
    if fmt == "onnx":
        return OnnxRuntimeBackend(model_file)
    if fmt == "openvino":
        return OpenVinoBackend(model_file)
    raise BackendUnavailable(f"{model_file}: unknown export format {fmt!r}")


def make_backend(
    name: str,
    model: torch.nn.Module,
    image_size: tuple[int, int],
    *,
    work_dir: str | Path | None = None,
    fallback: bool = True,
) -> Backend:
    """Build backend ``name`` for a PyTorch model (exporting it when the runtime needs a file).

    Parameters
    ----------
    name
        One of :data:`BACKENDS`.
    model
        The trained model (eval mode).
    image_size
        ``(H, W)`` the model takes (the export's fixed spatial size).
    work_dir
        Where the ONNX export goes (default: a temporary folder removed at exit).
    fallback
        On failure, log the reason and return the eager backend (``fallback_reason`` set);
        otherwise raise :class:`BackendUnavailable`.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "eager":
        return EagerBackend(model)
    dev = next(iter(model.parameters()), torch.empty(0)).device
    on_gpu = dev.type != "cpu"
    try:
        if name in ("onnx", "openvino") and on_gpu:
            raise BackendUnavailable(f"the {name} backend runs on the CPU; the model is on {dev}")
        if name == "compiled":
            be: Backend = CompiledBackend(model)
        else:
            # probe the runtime first: no export when it is missing anyway
            mod = "onnxruntime" if name == "onnx" else "openvino"
            try:
                __import__(mod)
            except ImportError as e:
                raise BackendUnavailable(f"{mod} is not installed ({e}); pip install {mod}") from None
            d = Path(work_dir) if work_dir else Path(_tempdir())
            onnx_path = export_onnx(model, d / "model.onnx", image_size)
            be = OnnxRuntimeBackend(onnx_path) if name == "onnx" else OpenVinoBackend(onnx_path)
    except BackendUnavailable as e:
        if not fallback:
            raise
        log.warning("backend %s unavailable, using eager PyTorch instead: %s", name, e)
        be = EagerBackend(model)
        be.requested = name
        be.fallback_reason = str(e)
    return be


_TMP: list[tempfile.TemporaryDirectory] = []


def _tempdir() -> str:
    t = tempfile.TemporaryDirectory(prefix="mammolens-backend-")
    _TMP.append(t)  # removed at interpreter exit
    return t.name


def compare_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute differences of two backends' results on the same batch.

    ``score`` (the sigmoid of the logit, what predict reports) and ``localization_map``
    (the sigmoid of the localisation logits, what the heatmap shows) are compared as the
    user sees them, next to the raw outputs.
    """

    def sig(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v.astype(np.float64)))

    d = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
         for k in OUTPUT_NAMES + OPTIONAL_OUTPUT_NAMES if k in a and k in b}
    d["score"] = float(np.max(np.abs(sig(a["logit"]) - sig(b["logit"]))))
    d["localization_map"] = float(np.max(np.abs(sig(a["localization"]) - sig(b["localization"]))))
    if "benign_logit" in a and "benign_logit" in b:
        d["benign_score"] = float(np.max(np.abs(sig(a["benign_logit"]) - sig(b["benign_logit"]))))
    return d


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "CompiledBackend",
    "EagerBackend",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "compare_outputs",
    "export_onnx",
    "make_backend",
    "output_names",
    "runtime_backend",
]
