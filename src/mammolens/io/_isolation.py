"""The mechanism behind :mod:`mammolens.io.sandbox`: run functions in child processes
that may die (supervised pool, one-shot child, crash and timeout reasons).

It imports nothing from the readers, so that :mod:`mammolens.io.dicom` can use it (to run
python-gdcm out of process) while :mod:`mammolens.io.sandbox` builds
:func:`~mammolens.io.sandbox.read_image_isolated` on top of both. Use the public
names from :mod:`mammolens.io.sandbox`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mammolens.errors import InputError

__all__ = ["DEFAULT_TIMEOUT", "IsolatedPool", "crash_reason", "default_path_of", "describe_source", "in_sandbox", "run_isolated"]

#: default seconds one item may take before it is declared hung
DEFAULT_TIMEOUT = 120.0

#: modules the fork server imports once, so that every child starts with them loaded
_PRELOAD = ["numpy", "pydicom", "mammolens.io.images", "mammolens.io.dicom"]

_IN_SANDBOX = False
_PRELOAD_SET = False


def in_sandbox() -> bool:
    """Whether this process is a sandbox child (a pool worker or a one-shot child)."""
    return _IN_SANDBOX


def _context(method: str | None = None) -> Any:
    """The multiprocessing context: ``forkserver`` (with preloads) where available, else ``spawn``."""
    global _PRELOAD_SET
    methods = mp.get_all_start_methods()
    name = method or ("forkserver" if "forkserver" in methods else "spawn")
    ctx = mp.get_context(name)
    if name == "forkserver" and not _PRELOAD_SET:
        # '__main__' first: the default preload, so functions defined in a script still unpickle
        ctx.set_forkserver_preload(["__main__", *_PRELOAD])
        _PRELOAD_SET = True
    return ctx


def _child_init(initializer: Callable[[], Any] | None = None, owner_pid: int | None = None) -> None:
    """Run first in every sandbox child."""
    global _IN_SANDBOX
    _IN_SANDBOX = True
    try:  # a decoder that aborts must not leave a core file per bad image
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # pragma: no cover - non-Unix
        pass
    # a child interrupted with the parent (Ctrl-C) dies quietly; the parent reports
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(owner_pid)
    if initializer is not None:
        initializer()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed parent whose own parent has not reaped it yet is a zombie
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _die_with(owner_pid: int | None) -> None:
    """Exit when the process that owns this child (the pool's creator) is gone.

    A pool worker blocks on its task queue, whose write end it also holds: when the
    owner is killed (``kill -9``, the OOM killer) nothing would wake it, and it would
    live on holding the owner's stdout / stderr. Its direct parent is no help: the
    ``forkserver`` process stays alive as long as any of its children does.
    """
    import threading

    if not owner_pid or owner_pid == os.getpid():
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if not _alive(owner_pid):
                os._exit(70)

    threading.Thread(target=watch, name="mammolens-owner-watch", daemon=True).start()


def default_path_of(item: Any) -> str | None:
    """The file an item stands for: the item itself (a path), ``item['path']``, ``item[0]``."""
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    if isinstance(item, Mapping):
        p = item.get("path")
        return None if p in (None, "") else str(p)
    if isinstance(item, tuple) and item and isinstance(item[0], str | os.PathLike):
        return os.fspath(item[0])
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0]
    return text[:300]


def _guarded(fn: Callable[[Any], Any], item: Any) -> tuple[str, Any, Any]:
    """Call ``fn(item)`` in a child; never let an exception object cross the process boundary.

    Returns ``("ok", result, None)`` or ``("error", path, reason)``. Exceptions are
    turned into text here because not all of them pickle (``InputError`` has a
    two-argument constructor; pyo3's ``PanicException`` lives in a module the parent
    may not have).
    """
    try:
        return ("ok", fn(item), None)
    except InputError as e:
        return ("error", e.path, e.reason)
    except MemoryError:
        return ("error", None, "out of memory while decoding (image too large?)")
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - PanicException, SystemExit from a library, ...
        kind = "decoder panicked" if type(e).__name__ == "PanicException" else "unexpected error while decoding"
        return ("error", None, f"{kind} ({type(e).__name__}: {_first_line(e)})")


def _one_shot_main(fn: Callable[[Any], Any], item: Any, conn: Any, initializer: Callable[[], Any] | None, owner_pid: int) -> None:
    """Body of a one-shot child: run ``fn(item)`` and send the guarded outcome back."""
    try:
        _child_init(initializer, owner_pid)
        out = _guarded(fn, item)
    except BaseException as e:  # noqa: BLE001 - the initializer failed
        out = ("error", None, f"sandbox child failed to start ({type(e).__name__}: {_first_line(e)})")
    try:
        conn.send(out)
    except Exception as e:  # noqa: BLE001 - an unpicklable result
        conn.send(("error", None, f"result cannot be returned from the sandbox ({type(e).__name__}: {_first_line(e)})"))
    finally:
        conn.close()


def describe_source(path: str | os.PathLike[str] | None) -> str:
    """What decoding ``path`` means, for crash messages: ``'JPEG 2000 ... pixel data'``.

    Reads the DICOM header only (the pixel data is what crashed, the header parser is
    pure Python); falls back on ``'the image'``.
    """
    if path is None:
        return "the image"
    try:
        import warnings

        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts:
            from pydicom.uid import UID

            uid = UID(str(ts))
            return f"{uid.name if uid.is_valid else str(uid)} pixel data"
    except Exception:  # noqa: BLE001 - any unreadable header: describe generically
        pass
    return "the image"


def crash_reason(exitcode: int | None, path: str | os.PathLike[str] | None) -> str:
    """The reason text for a child that died with ``exitcode`` (negative: killed by a signal)."""
    what = describe_source(path)
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"decoder crashed ({name}) while decoding {what}"
    if exitcode is None:
        return f"decoder process died while decoding {what}"
    return f"decoder process exited with status {exitcode} while decoding {what}"


def _timeout_reason(timeout: float, path: str | os.PathLike[str] | None) -> str:
    return f"decoding timed out after {timeout:g} s ({describe_source(path)}); the decoder was stopped"


def _to_result(item: Any, out: tuple[str, Any, Any], path_of: Callable[[Any], Any]) -> Any:
    status, a, b = out
    if status == "ok":
        return a
    return InputError(a or path_of(item), b)


def run_isolated(
    fn: Callable[[Any], Any],
    item: Any,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    initializer: Callable[[], Any] | None = None,
    mp_context: str | None = None,
    path_of: Callable[[Any], Any] = default_path_of,
) -> Any:
    """Run ``fn(item)`` once in a fresh child process; return its result or an ``InputError``.

    The ``InputError`` is *returned*, not raised, so that callers mapping over many
    items can record it; :func:`read_image_isolated` raises it. ``fn`` and ``item``
    must be picklable (``fn`` a module-level function).
    """
    ctx = _context(mp_context)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_one_shot_main, args=(fn, item, send, initializer, os.getpid()), daemon=True)
    proc.start()
    send.close()  # only the child holds the sending end: its death shows as EOF
    out: tuple[str, Any, Any] | None = None
    try:
        if recv.poll(timeout):
            try:
                out = recv.recv()
            except (EOFError, OSError):
                out = None  # died before or while sending
        else:
            proc.kill()
            proc.join()
            return InputError(path_of(item), _timeout_reason(float(timeout or 0), path_of(item)))
    finally:
        recv.close()
    proc.join(30)
    if proc.is_alive():  # sent its result but does not exit: not our problem any more
        proc.kill()
        proc.join()
    if out is None:
        return InputError(path_of(item), crash_reason(proc.exitcode, path_of(item)))
    return _to_result(item, out, path_of)


_END = object()


def _noop() -> None:
    """A task that only makes a worker start (:meth:`IsolatedPool.start`)."""


class IsolatedPool:
    """A supervised process pool that survives workers dying on bad inputs.

    Parameters
    ----------
    workers
        Worker processes (``1`` still runs out of process).
    fn
        A picklable (module-level) function of one item. Exceptions it raises become
        ``InputError`` results; it should catch the ones it can describe better itself.
    timeout
        Seconds one item may run before it is declared hung (``None``: no limit). The
        clock starts when the item is handed to an idle worker.
    initializer
        Called once in every worker (and one-shot child) before the first item.
    mp_context
        Start method (default ``forkserver`` where available, else ``spawn``).
    path_of
        The file an item stands for, used in ``InputError`` (default: the item itself
        when it is a path, ``item['path']`` for a mapping, ``item[0]`` for a tuple).

    Examples
    --------
    >>> with IsolatedPool(2, read_one) as pool:                       # doctest: +SKIP
    ...     for item, result in pool.map_unordered(paths):
    ...         if isinstance(result, InputError):
    ...             qc.add("preprocess", result.path, result.reason)
    """

    def __init__(
        self,
        workers: int,
        fn: Callable[[Any], Any],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        initializer: Callable[[], Any] | None = None,
        mp_context: str | None = None,
        path_of: Callable[[Any], Any] = default_path_of,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 or None")
        self.workers = int(workers)
        self.fn = fn
        self.timeout = timeout
        self.initializer = initializer
        self.mp_context = mp_context
        self.path_of = path_of
        #: how often the pool was replaced after a worker died or hung
        self.restarts = 0
        self._executor: ProcessPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> IsolatedPool:
        return self

    def start(self) -> IsolatedPool:
        """Start the worker processes now, without waiting for them.

        Their start-up (the fork server, the imports, the ``initializer``) then overlaps
        what the caller does next, e.g. loading a model, instead of delaying the first
        item. Returns the pool. Optional: the pool starts on its first item otherwise.
        """
        executor = self._get_executor()
        for _ in range(self.workers):
            executor.submit(_noop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)

    def close(self, *, kill: bool = False) -> None:
        """Shut the workers down (``kill``: without waiting for running items)."""
        if self._executor is not None:
            self._discard(self._executor, kill=kill)
            self._executor = None

    def _get_executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(self.mp_context),
                initializer=_child_init,
                initargs=(self.initializer, os.getpid()),
            )
        return self._executor

    @staticmethod
    def _discard(executor: ProcessPoolExecutor, *, kill: bool) -> None:
        if kill:
            # ProcessPoolExecutor (3.11) has no public way to stop a running task; its
            # worker table is the documented-by-source way to kill a hung decoder.
            for proc in list((getattr(executor, "_processes", None) or {}).values()):
                try:
                    proc.kill()
                except (OSError, ValueError, AttributeError):
                    pass
        executor.shutdown(wait=True, cancel_futures=True)

    def _replace(self) -> None:
        if self._executor is not None:
            self._discard(self._executor, kill=True)
            self._executor = None
        self.restarts += 1

    # ------------------------------------------------------------------ mapping
    def map_unordered(self, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, result)`` as items finish, ``result`` an ``InputError`` for a bad one.

        Every item is yielded exactly once. Items are read from ``items`` lazily (at
        most ``workers`` in flight), so a long generator is fine.
        """
        it = iter(items)
        retry: deque[Any] = deque()  # innocent items to run again in the pool
        suspects: deque[Any] = deque()  # items in flight when a worker died
        inflight: dict[Future[Any], tuple[Any, float]] = {}
        exhausted = False
        try:
            while True:
                # 1. items that were in flight when a worker died: each alone, in a one-shot child
                while suspects:
                    item = suspects.popleft()
                    yield item, self._solo(item)
                # 2. keep every worker busy, never more (so an item's clock starts when it runs)
                broken = False
                while len(inflight) < self.workers:
                    if retry:
                        item = retry.popleft()
                    elif not exhausted:
                        item = next(it, _END)
                        if item is _END:
                            exhausted = True
                            break
                    else:
                        break
                    try:
                        fut = self._get_executor().submit(_guarded, self.fn, item)
                    except BrokenProcessPool:
                        retry.appendleft(item)  # not run yet: not a suspect
                        broken = True
                        break
                    inflight[fut] = (item, time.monotonic())
                if broken:
                    # a worker died since the last wait: what is still in flight died with it
                    suspects.extend(item for item, _ in inflight.values())
                    inflight.clear()
                    self._replace()
                    continue
                if not inflight:
                    if exhausted and not retry and not suspects:
                        return
                    continue
                # 3. wait for the first to finish, or the earliest deadline
                wait_s = None
                if self.timeout is not None and inflight:
                    first = min(t for _, t in inflight.values())
                    wait_s = max(0.0, first + self.timeout - time.monotonic())
                done, _ = wait(list(inflight), timeout=wait_s, return_when=FIRST_COMPLETED)
                for fut in done:
                    item, _t = inflight.pop(fut)
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(item)
                        continue
                    except BaseException as e:  # noqa: BLE001 - e.g. an unpicklable item or result
                        yield item, InputError(self.path_of(item), f"cannot run in the sandbox ({type(e).__name__}: {_first_line(e)})")
                        continue
                    yield item, _to_result(item, out, self.path_of)
                if broken:
                    # every item still in flight died with the pool (or was killed by it)
                    suspects.extend(item for item, _ in inflight.values())
                    inflight.clear()
                    self._replace()
                    continue
                if not done and inflight and self.timeout is not None:
                    now = time.monotonic()
                    expired = [f for f, (_, t) in inflight.items() if now - t >= self.timeout]
                    if not expired:  # woke a hair early: wait again
                        continue
                    for fut in expired:
                        item, _t = inflight.pop(fut)
                        yield item, InputError(self.path_of(item), _timeout_reason(self.timeout, self.path_of(item)))
                    # the others ran in a pool we now kill: run them again
                    retry.extendleft(reversed([item for item, _ in inflight.values()]))
                    inflight.clear()
                    self._replace()
        finally:
            if inflight:  # the consumer stopped early or raised: do not wait for running items
                self.close(kill=True)

    def _solo(self, item: Any) -> Any:
        return run_isolated(
            self.fn,
            item,
            timeout=self.timeout,
            initializer=self.initializer,
            mp_context=self.mp_context,
            path_of=self.path_of,
        )
