"""File I/O shared by every stage: atomic writes, images, palette PNG label maps, JSON.

Every function takes a local path or a URL that fsspec reads (``wsk.storage``): a local path is
read and written as a file, with no fsspec in the way; a URL's atomic write uploads a whole local
temporary in one ``put`` (``atomic_path``).
"""

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from wsk import storage
from wsk.classes import voc_palette
from wsk.errors import WskError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary name keeps the suffix of ``path`` (``np.savez`` and OpenCV look at it).
    Nothing is left behind if the body raises.

    For a URL (``wsk.storage``), where a rename is not atomic, the temporary is a local file and
    success uploads it whole in one ``put``: the object appears complete or not at all.
    """
    path = os.fspath(path)
    if storage.is_url(path):
        with _uploaded(path) as tmp:
            yield tmp
        return
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    suffix = "".join(base.partition(".")[1:]) if "." in base else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _uploaded(url):
    """``atomic_path`` for a URL: a local temporary, uploaded in one ``put`` on success."""
    folder = tempfile.mkdtemp(prefix="wsk-upload-")
    try:
        base = url.rstrip("/").rsplit("/", 1)[-1]
        suffix = "".join(base.partition(".")[1:]) if "." in base else ""
        tmp = os.path.join(folder, "file" + suffix)
        yield tmp
        storage.upload(tmp, url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# atomic_path's temporary names: "." + the file's name + "." + mkstemp's 8 random characters + ".tmp..."
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\..*)?$")


def remove_temporaries(folder):
    """Delete the temporary files ``atomic_path`` left in ``folder`` and its subfolders (image ids
    of a labels file may hold ``/``) when a process was killed mid-write (SIGKILL skips its
    clean-up); returns how many. A stage calls it before its workers write. Under a URL there are
    none: a write there is one upload of a local temporary (``atomic_path``)."""
    if storage.is_url(folder):
        return 0
    removed = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            if _TEMPORARY.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(parent, name))
                    removed += 1
    return removed


def remove_paths(*paths):
    """Remove files or folders (those that exist)."""
    for path in paths:
        if storage.is_url(path):
            storage.rmtree(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def file_stamp(*paths):
    """A short text that changes whenever what one of ``paths`` holds changes (``storage.stamp``).

    Stages store the stamp of their inputs beside their outputs, so that an output made from an
    older input (a retrained model, recomputed proposals) is recomputed instead of reused.
    """
    return "|".join(storage.stamp(path) for path in paths)


def save_npz(path, **arrays):
    """``np.savez_compressed``'s format, written atomically and byte for byte the same for the same
    arrays: every member has the zip's earliest date where numpy puts the time of writing, so a
    recomputed output with the same content keeps its stamp (``file_stamp``) and its users stay valid."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


# An .npy header is a dict literal, e.g. {'descr': '<f2', 'fortran_order': False, 'shape': (6, 64, 64), }
_NPY_MAGIC = b"\x93NUMPY"
_NPY_FIELDS = re.compile(r"""^\{'descr':\s*'(?P<descr>[^']+)',\s*'fortran_order':\s*(?P<fortran>True|False),"""
                         r"""\s*'shape':\s*\((?P<shape>[0-9,\s]*)\),?\s*\}\s*$""")


def _parse_npy(raw):
    """One ``.npy`` member of an ``.npz`` (bytes) as an array, without ``np.load``.

    ``np.load`` parses the header with ``ast.literal_eval``, which is not thread-safe on CPython
    3.11.7 (concurrent calls from tf.data's worker threads fail with "AST constructor recursion
    depth mismatch"). The header wsk writes is a fixed dict literal; a regular expression reads
    it. Object arrays, structured dtypes and short data are refused (``ValueError``).
    """
    if raw[:6] != _NPY_MAGIC or len(raw) < 10:
        raise ValueError("not an .npy array")
    major = raw[6]
    if major == 1:
        length, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise ValueError(f"unknown .npy version {major}")
    header = raw[start:start + length].decode("utf-8" if major == 3 else "latin1")
    fields = _NPY_FIELDS.match(header.strip())
    if fields is None:
        raise ValueError(f"unsupported .npy header {header.strip()[:80]!r}")
    dtype = np.dtype(fields["descr"])
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    shape = tuple(int(n) for n in fields["shape"].split(",") if n.strip())
    count = math.prod(shape)
    data = memoryview(raw)[start + length:]
    if len(data) < count * dtype.itemsize:
        raise ValueError(f"truncated array ({len(data)} of {count * dtype.itemsize} bytes)")
    array = np.frombuffer(data, dtype, count=count)
    return array.reshape(shape, order="F" if fields["fortran"] == "True" else "C").copy()


def _readable(path):
    """What readers open: a local path as it is, a URL's bytes in memory."""
    return io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else path


def load_npz(path, required=()):
    """Load an ``.npz`` into a dict, safely from any thread (``_parse_npy``).

    A missing file, an unreadable or truncated archive, a damaged member or a missing key is a
    ``WskError`` that says so; any other failure (a bug, the environment) propagates as it is.
    """
    try:
        with zipfile.ZipFile(_readable(path)) as archive:
            arrays = {name[:-len(".npy")]: _parse_npy(archive.read(name))
                      for name in archive.namelist() if name.endswith(".npy")}
    except FileNotFoundError:
        raise WskError("file not found", path) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as err:
        raise WskError(f"damaged file ({type(err).__name__}: {err})", path) from None
    except OSError as err:   # permissions, I/O errors: the file may be fine
        raise WskError(f"cannot read the file ({type(err).__name__}: {err.strerror or err})", path) from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise WskError(f"damaged file: missing {', '.join(missing)}", path)
    return arrays


def save_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def load_json(path):
    try:
        with storage.open_file(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise WskError("file not found", path) from None
    except (OSError, ValueError) as err:
        raise WskError(f"not readable JSON ({err})", path) from None


MAX_IMAGE_PIXELS = 64 * 2**20    # larger images are refused (bounded memory), e.g. 10,000 x 8,000
# the image files read_image reads (a dataset image is <id>.jpg unless another of these exists)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
EXIF_ORIENTATION = 0x0112         # the EXIF tag; values 5-8 turn the image by a quarter


def _open_image(path):
    """``PIL.Image`` of ``path``, opened lazily; a missing, unreadable or oversized file is a WskError."""
    if not storage.exists(path):
        raise WskError("image not found", path)
    try:
        img = Image.open(_readable(path))
    except OSError as err:   # PIL.UnidentifiedImageError is an OSError
        raise WskError(f"not a readable image ({err})", path) from None
    if img.width < 1 or img.height < 1 or img.width * img.height > MAX_IMAGE_PIXELS:
        img.close()
        raise WskError(f"image is {img.width}x{img.height}: outside 1 pixel .. {MAX_IMAGE_PIXELS / 2**20:.0f} "
                       "megapixels (downscale it)", path)
    return img


def image_size(path):
    """``(height, width)`` of the image as ``read_image`` returns it (EXIF orientation applied),
    read from the header only."""
    with _open_image(path) as img:
        width, height = img.size
        if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width
    return height, width


def read_image(path):
    """The one image reader of wsk: RGB uint8 ``(H, W, 3)`` for every stage and pipeline.

    Policy: the EXIF orientation is applied (the image as viewers show it); grey, palette, CMYK
    and RGBA images become RGB (alpha is dropped); 16-bit images keep their top 8 bits; a
    truncated or damaged file is refused (never filled with grey), as is an image outside
    1 .. ``MAX_IMAGE_PIXELS`` pixels. Every refusal is a ``WskError`` naming the file.
    """
    with _open_image(path) as img:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError) as err:   # truncated data, broken chunks
            raise WskError(f"damaged image ({err})", path) from None
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            wide = np.asarray(img, np.uint32)
            top = 8 if img.mode.startswith("I;16") or wide.max(initial=0) > 255 else 0
            img = Image.fromarray((wide >> top).astype(np.uint8), mode="L")
        rgb = np.array(img.convert("RGB"), np.uint8)   # a writable copy
    return np.ascontiguousarray(rgb)


def write_image(path, rgb, quality=95):
    """Write an RGB uint8 array (JPEG or PNG by suffix), atomically."""
    with atomic_path(path) as tmp:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if tmp.lower().endswith((".jpg", ".jpeg")) else []
        if not cv2.imwrite(tmp, np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, ::-1]), params):
            raise WskError("could not write image", path)


def read_label_png(path):
    """Class indices of a palette (or grey) PNG as ``(H, W)`` uint8: the indices, never colours."""
    if not storage.exists(path):
        raise WskError("label map not found", path)
    try:
        with Image.open(_readable(path)) as img:
            if img.mode not in ("P", "L"):
                raise WskError(f"label map must be a palette or grey PNG, found mode {img.mode}", path)
            return np.array(img, dtype=np.uint8)
    except WskError:
        raise
    except Exception as err:
        raise WskError(f"not a readable PNG ({err})", path) from None


PNG_MADE_FROM = "wsk:made_from"   # PNG text chunk: JSON of what a label map was computed from


def label_png_made_from(path):
    """The ``made_from`` record (dict) that ``write_label_png`` stored in ``path``, or None."""
    try:
        with Image.open(_readable(path)) as img:
            text = img.text.get(PNG_MADE_FROM)
    except OSError:
        return None
    return None if text is None else json.loads(text)


def write_label_png(path, labels, palette=None, made_from=None):
    """Write ``(H, W)`` class indices as a palette PNG (VOC colours by default), atomically;
    ``made_from`` (a JSON-able dict) goes into a text chunk (``label_png_made_from``)."""

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise WskError(f"a label map must be 2-D with values 0..255, got shape {labels.shape}", path)
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette((voc_palette() if palette is None else np.asarray(palette, np.uint8)).ravel().tolist())
    info = PngImagePlugin.PngInfo()
    if made_from is not None:
        info.add_text(PNG_MADE_FROM, json.dumps(made_from, sort_keys=True))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", pnginfo=info)
