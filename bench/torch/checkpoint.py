"""Read a Hugging Face checkpoint folder (config.json + safetensors, single or sharded) into fp32
torch tensors. The safetensors format is parsed by hand (Debian ships no `safetensors` package):
8-byte little-endian header length, a JSON header, then raw little-endian tensor bytes."""
import json
import os
import struct

import numpy as np
import torch

INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(Exception):
    pass


def _decode(dtype: str, raw: bytes, shape: list, where: str) -> torch.Tensor:
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        # BF16 is the upper half of an fp32 bit pattern.
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise CheckpointError(f"{where}: dtype {dtype} is not supported (F32, F16, BF16)")
    n = int(np.prod(shape)) if shape else 1
    if a.size != n:
        raise CheckpointError(f"{where}: {a.size} values for shape {shape}")
    return torch.from_numpy(a.copy().reshape(shape))


def read_safetensors(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise CheckpointError(f"{path}: header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    start = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        if start + b > len(data):
            raise CheckpointError(f"{path}: tensor '{name}' ends past the end of the file")
        out[name] = _decode(e["dtype"], data[start + a : start + b], e["shape"], f"{path}: '{name}'")
    return out


def write_f32(path: str, t: torch.Tensor) -> None:
    """Raw little-endian fp32 values (row-major), for results read back by the bench."""
    with open(path, "wb") as f:
        f.write(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())


def read_checkpoint(folder: str):
    """(config dict, {name: fp32 tensor}) of an HF checkpoint folder."""
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{folder}: no config.json")
    with open(cfg_path, encoding="utf-8") as f:
        config = json.load(f)
    index = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{folder}: missing weight file {name}")
        tensors.update(read_safetensors(path))
    return config, tensors
