"""Minimal safetensors writer and dtype helpers built on NumPy only.

Run with Debian's interpreter: ``/usr/bin/python3`` (needs ``python3-numpy``).

Used by the reference self-check and by ``random_checkpoint.py`` to produce
checkpoints without any framework. The reader lives in ``mamba_ref.py`` so that
the reference does not depend on this writer.
"""

import json
import os
import struct

import numpy as np

# safetensors dtype name -> (little-endian NumPy storage dtype, bytes per element)
_STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}

_ALIASES = {"f64": "F64", "f32": "F32", "f16": "F16", "bf16": "BF16"}


def canonical_dtype(name):
    """'f32' / 'F32' -> 'F32'."""
    key = _ALIASES.get(name, name)
    if key not in _STORAGE:
        raise ValueError("unsupported dtype %r (use f32, f16, bf16 or f64)" % (name,))
    return key


def float32_to_bf16_bits(values):
    """Rounds float32 values to bfloat16 (round to nearest, ties to even); returns uint16 bits."""
    f = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    bits = f.view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_bits_to_float32(bits):
    """uint16 bfloat16 bits -> float32 values (exact)."""
    b = np.asarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def round_to_dtype(values, dtype):
    """The float64 values a tensor holds after being stored as `dtype`."""
    dtype = canonical_dtype(dtype)
    a = np.asarray(values, dtype=np.float64)
    if dtype == "F64":
        return a.copy()
    if dtype == "F32":
        return a.astype(np.float32).astype(np.float64)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    return bf16_bits_to_float32(float32_to_bf16_bits(a.astype(np.float32))).astype(np.float64)


def encode_tensor(values, dtype):
    """Returns the raw little-endian bytes of `values` stored as `dtype`."""
    dtype = canonical_dtype(dtype)
    a = np.asarray(values)
    if dtype == "BF16":
        if a.dtype == np.uint16:  # already bf16 bits
            raw = a
        else:
            raw = float32_to_bf16_bits(a.astype(np.float32))
        return np.ascontiguousarray(raw.astype("<u2")).tobytes()
    return np.ascontiguousarray(a.astype(_STORAGE[dtype])).tobytes()


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """Writes `tensors` ({name: array}) to `path`.

    `dtype` is either one dtype for every tensor or a {name: dtype} dict. A uint16
    array written as BF16 is taken to be raw bfloat16 bits.
    """
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = canonical_dtype(dtype[name] if isinstance(dtype, dict) else dtype)
        raw = encode_tensor(arr, dt)
        header[name] = {
            "dtype": dt,
            "shape": [int(s) for s in arr.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)  # keep the data section 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def write_sharded(model_dir, tensors, dtype="F32", num_shards=2):
    """Splits `tensors` over `num_shards` files plus model.safetensors.index.json."""
    names = sorted(tensors)
    groups = [names[i::num_shards] for i in range(num_shards)]
    weight_map = {}
    total = 0
    for i, group in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, num_shards)
        part = {n: tensors[n] for n in group}
        write_safetensors(os.path.join(model_dir, fname), part, dtype)
        for n in group:
            weight_map[n] = fname
            dt = canonical_dtype(dtype[n] if isinstance(dtype, dict) else dtype)
            total += int(np.asarray(tensors[n]).size) * _STORAGE[dt].itemsize
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
