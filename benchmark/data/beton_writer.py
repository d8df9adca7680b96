"""Writing FFCV ``.beton`` files atomically and fail-safe (``write_beton``), and the fields `npas data prepare`
writes (``fields_for``). Why a supervisor around FFCV's ``DatasetWriter``: see ``betons.py``'s docstring."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import write_json
from ..errors import ConfigError, DataError
from .partition import mix_seed

from .betons import IMAGE_FIELD, LABEL_FIELD, clamp_workers, field_column, import_ffcv, keep_torch_threads, sidecar_path


class _GuardedItems:
    """Wraps the dataset handed to DatasetWriter workers: reseeds numpy per sample (so the
    ``write_mode='proportion'`` JPEG/raw choice, drawn right after the item is read, is a function of
    the sample index) and turns an exception into a report on ``errors`` plus a worker exit, which the
    supervisor notices (DatasetWriter itself would wait forever)."""

    def __init__(self, get_item: Callable[[int], tuple], n: int, errors, seed: int, describe: Callable[[int], str]):
        self.get_item = get_item
        self.n = n
        self.errors = errors
        self.seed = seed
        self.describe = describe

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> tuple:
        i = int(index)  # DatasetWriter passes numpy int64
        try:
            item = self.get_item(i)
            np.random.seed(mix_seed(self.seed, i) % (2**32))
            return item
        except BaseException as exc:  # noqa: BLE001 - reported, then this worker exits
            try:
                self.errors.put(f"sample {i} ({self.describe(i)}): {type(exc).__name__}: {exc}")
                self.errors.close()
                self.errors.join_thread()
            finally:
                os._exit(3)


def _supervised_writer_class():
    """A DatasetWriter whose worker loop is supervised (built lazily: ffcv is optional)."""
    import_ffcv()
    from multiprocessing import Process, Queue, Value
    from queue import Empty

    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.writer import DatasetWriter
    from tqdm.auto import tqdm

    class SupervisedWriter(DatasetWriter):
        def __init__(self, *args, errors=None, desc: str = "", progress: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.errors = errors
            self.desc = desc
            self.progress = progress

        def _failure(self, processes) -> str | None:
            with contextlib.suppress(Empty, OSError, ValueError):
                return self.errors.get_nowait()
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                with contextlib.suppress(Empty, OSError, ValueError):  # the report may trail the exit
                    return self.errors.get(timeout=1.0)
                return f"a writer process exited with status {dead[0]}"
            return None

        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):  # noqa: C901
            self.num_samples = num_samples
            self.prepare()  # header + field descriptors in the file, shared memory for the metadata
            processes: list = []
            try:
                workqueue: Queue = Queue()
                for todo in queue_content:
                    workqueue.put(todo)
                for _ in range(self.num_workers):
                    workqueue.put(None)
                allocations_queue: Queue = Queue()
                done_number = Value(ctypes.c_uint64, 0)
                allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
                worker_args = (workqueue, self.metadata_sm, self.metadata_type, self.fields, allocator,
                               done_number, allocations_queue, *extra_worker_args)
                processes = [Process(target=work_fn, args=worker_args, daemon=True) for _ in range(self.num_workers)]
                for p in processes:
                    p.start()
                bar = tqdm(total=self.num_samples, desc=self.desc, unit="img", disable=not self.progress,
                           dynamic_ncols=True)
                previous = 0
                try:
                    while previous < self.num_samples:
                        failure = self._failure(processes)
                        if failure:
                            raise DataError(f"writing {Path(self.desc).name or 'the beton'} failed: {failure}")
                        if all(p.exitcode == 0 for p in processes):
                            val = done_number.value
                            if val < self.num_samples:
                                raise DataError(f"writer processes finished after {val} of {self.num_samples} samples")
                        val = done_number.value
                        if val > previous:
                            bar.update(val - previous)
                            previous = val
                        else:
                            time.sleep(0.05)
                finally:
                    bar.close()
                allocation_list = []
                for _ in processes:
                    while True:
                        try:
                            allocation_list.extend(allocations_queue.get(timeout=0.5))
                            break
                        except Empty:
                            failure = self._failure(processes)
                            if failure:
                                raise DataError(f"writing failed: {failure}") from None
                for p in processes:
                    p.join()
                self.finalize(allocation_list)
            finally:
                for p in processes:
                    if p.is_alive():
                        p.terminate()
                for p in processes:
                    p.join(timeout=10)
                    if p.is_alive():
                        p.kill()
                        p.join(timeout=5)
                with contextlib.suppress(Exception):
                    self.metadata_sm.close()
                with contextlib.suppress(Exception):
                    self.metadata_sm.unlink()

    return SupervisedWriter


def write_beton(
    target: Path,
    fields: dict,
    get_item: Callable[[int], tuple],
    n: int,
    *,
    labels: Sequence[int],
    meta: dict,
    workers: int = -1,
    describe: Callable[[int], str] = lambda i: f"index {i}",
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``n`` samples ``get_item(i) -> (HxWx3 uint8 array or PIL image, int label)`` to ``target``.

    Atomic: the data go to a temporary name in the target's folder (``.<name>.tmp-<pid>``), are read
    back and checked (sample count, labels), then ``os.replace``d over ``target``; on any error,
    including Ctrl-C, the temporary file is removed and ``target`` is untouched. The sidecar
    ``<target>.json`` (``meta`` plus counts) is written atomically after the beton.
    """
    import_ffcv()
    import multiprocessing as mp

    from ffcv.reader import Reader

    if n <= 0:
        raise DataError(f"nothing to write to {target}: 0 samples")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise DataError(f"internal: {n} samples but {labels.shape} labels for {target}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    workers = clamp_workers(workers, minimum=1)
    errors = mp.Queue()
    items = _GuardedItems(get_item, n, errors, seed, describe)
    writer_cls = _supervised_writer_class()
    t0 = time.perf_counter()
    try:
        with keep_torch_threads():
            writer = writer_cls(str(tmp), fields, num_workers=workers, errors=errors, desc=target.name,
                                progress=progress)
            chunk = max(1, min(100, n // (4 * workers) or 1))
            writer.from_indexed_dataset(items, chunksize=chunk)
        reader = Reader(str(tmp))
        got = np.asarray(field_column(reader, LABEL_FIELD), dtype=np.int64).reshape(-1)
        if int(reader.num_samples) != n or not np.array_equal(got, labels):
            raise DataError(f"{target.name}: read-back check failed ({int(reader.num_samples)} samples written, "
                            f"{n} expected, labels {'match' if np.array_equal(got, labels) else 'differ'})")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        errors.close()
        errors.cancel_join_thread()
    import importlib.metadata

    record = {
        **meta,
        "num_samples": n,
        "class_counts": np.bincount(labels).tolist(),
        "file_bytes": target.stat().st_size,
        "write_seconds": round(time.perf_counter() - t0, 3),
        "ffcv_version": importlib.metadata.version("ffcv"),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(sidecar_path(target), record)
    with contextlib.suppress(OSError):
        os.chmod(sidecar_path(target), 0o644)  # like the beton, not the 0600 of a temp file
    return target


def fields_for(name: str, *, write_mode: str = "proportion", max_res: int | None = 256, jpeg_quality: int = 90,
               compress_probability: float = 0.5, smart_threshold: int | None = None) -> dict:
    """The beton fields: CIFAR raw pixels; ImageNet ffcv-imagenet's recipe (max side, JPEG/raw mix)."""
    if name not in ("cifar10", "cifar100"):
        smart_threshold = check_image_options(write_mode, max_res, jpeg_quality, compress_probability, smart_threshold)
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField

    if name in ("cifar10", "cifar100"):
        return {IMAGE_FIELD: RGBImageField(write_mode="raw"), LABEL_FIELD: IntField()}
    return {
        IMAGE_FIELD: RGBImageField(write_mode=write_mode, max_resolution=max_res, jpeg_quality=jpeg_quality,
                                   compress_probability=float(compress_probability), smart_threshold=smart_threshold),
        LABEL_FIELD: IntField(),
    }


def check_image_options(write_mode: str, max_res: int | None, jpeg_quality: int, compress_probability: float,
                        smart_threshold: int | None) -> int | None:
    """Validate the ImageNet writer flags (ConfigError naming the flag); returns the smart threshold."""
    if write_mode not in ("proportion", "smart", "raw", "jpg"):
        raise ConfigError(f"--write-mode must be proportion, smart, raw or jpg, got {write_mode!r}")
    if max_res is not None and (isinstance(max_res, bool) or not isinstance(max_res, int) or max_res < 16):
        raise ConfigError(f"--max-res must be an integer >= 16 (longest image side in the beton), got {max_res!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"--jpeg-quality must be an integer in [1, 100], got {jpeg_quality!r}")
    if isinstance(compress_probability, bool) or not isinstance(compress_probability, (int, float)) \
            or not 0.0 <= float(compress_probability) <= 1.0:
        raise ConfigError(f"--compress-probability must be a number in [0, 1], got {compress_probability!r}")
    if smart_threshold is not None and (isinstance(smart_threshold, bool) or not isinstance(smart_threshold, int)
                                        or smart_threshold < 1):
        raise ConfigError(f"--smart-threshold must be a positive number of bytes, got {smart_threshold!r}")
    if write_mode == "smart" and smart_threshold is None:
        # ffcv's 'smart' mode never compresses without a threshold: JPEG-compress images whose raw
        # pixels exceed half of a full max_res x max_res image.
        side = max_res or 256
        smart_threshold = side * side * 3 // 2
    return smart_threshold
