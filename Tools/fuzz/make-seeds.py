#!/usr/bin/env python3
"""Writes the small seed files in seeds/: one per layout gradscope reads and
one per HDF5 feature its reader touches (storage layouts, filters, element
types, string forms, links, user block, old- and new-style object headers).

Small inputs keep the fuzzer fast; the sample runs in SampleCheckpoints/ are
added as seeds by run-fuzz.sh. Every file opens with HDF5 1.10.8 (libver is
bounded at v110). Re-run with `python3 make-seeds.py` (h5py + numpy).
"""
import os
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")
RNG = np.random.default_rng(7)
OLD = ("earliest", "v110")
NEW = ("v110", "v110")


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def new(name, libver=OLD, **kwargs):
    return h5py.File(os.path.join(OUT, name), "w", libver=libver, **kwargs)


def native(name, libver=OLD, **dataset_options):
    with new(name, libver) as f:
        f.attrs["format"] = "gradscope/1"
        f.attrs["step"] = 100
        f.attrs["loss"] = 0.6931
        f.attrs["lr"] = 1e-3
        f.attrs["framework"] = "pytorch"
        for group in ("weights", "gradients", "optimizer/exp_avg", "optimizer/exp_avg_sq"):
            f.create_dataset(f"{group}/fc.weight", data=f32(4, 3), **dataset_options)
            f.create_dataset(f"{group}/fc.bias", data=f32(4), **dataset_options)
        f["weights/fc.bias"].attrs["in_optimizer"] = True
        f.create_dataset("activations/logits", data=f32(8, 4), **dataset_options)


def main():
    os.makedirs(OUT, exist_ok=True)
    native("native-contiguous.h5")
    native("native-v110.h5", libver=NEW)
    native("native-gzip-shuffle-fletcher.h5", chunks=True, compression="gzip", shuffle=True, fletcher32=True)

    with new("native-types.h5", NEW) as f:
        f.attrs["format"] = "gradscope/1"
        f.attrs["step"] = np.int64(7)
        f.create_dataset("weights/half", data=f32(3, 2).astype(np.float16))
        f.create_dataset("weights/double", data=f32(2, 2).astype(np.float64))
        f.create_dataset("weights/big_endian", data=f32(2, 3).astype(">f4"))
        bf16 = f.create_dataset("weights/bf16", data=np.frombuffer(b"\x80\x3f" * 6, dtype="V2").reshape(2, 3))
        bf16.attrs["dtype"] = "bfloat16"
        f.create_dataset("weights/int8", data=np.arange(6, dtype=np.int8).reshape(2, 3))
        f.create_dataset("weights/bool", data=np.array([True, False, True]))
        f.create_dataset("weights/scalar", data=np.float32(1.5))
        f.create_dataset("weights/null", data=h5py.Empty("f4"))
        f.create_dataset("weights/zero_size", shape=(0, 3), dtype="f4")
        f.create_dataset("weights/unallocated", shape=(4, 4), dtype="f4", fillvalue=0.25)
        f.create_dataset("weights/chunked_partial", shape=(40, 4), chunks=(8, 4), dtype="f4")[0:8] = f32(8, 4)
        space = h5py.h5s.create_simple((2, 2))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"weights/compact", h5py.h5t.IEEE_F32LE, space, plist).write(
            h5py.h5s.ALL, h5py.h5s.ALL, f32(2, 2))
        compound = np.zeros(2, dtype=[("a", "f4"), ("b", "i2")])
        f.create_dataset("other/compound", data=compound)

    with new("strings-and-attributes.h5", NEW) as f:
        g = f.create_group("model")
        g.attrs["vlen_utf8"] = "héllo"
        g.attrs["vlen_ascii"] = np.array(b"ascii", dtype=h5py.string_dtype("ascii"))
        g.attrs["fixed"] = np.array([b"dense/kernel:0", b"dense/bias:0"], dtype="S16")
        g.attrs["list"] = np.array(["a", "bb", "ccc"], dtype=h5py.string_dtype())
        g.attrs["json"] = '{"class_name": "Sequential"}'
        for i in range(12):  # more than 8 attributes: dense attribute storage
            g.attrs[f"attr_{i:02d}"] = np.arange(i + 1, dtype=np.float64)
        for i in range(20):  # more than 16 links: dense link storage
            g.create_dataset(f"w{i}", data=f32(2))

    with new("links.h5") as f:
        f.create_dataset("weights/a", data=f32(2, 2))
        f["soft"] = h5py.SoftLink("/weights/a")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["external"] = h5py.ExternalLink("other.h5", "/x")
        f["weights/again"] = f["weights/a"]          # a second hard link
        f["weights/loop"] = f["weights"]             # a hard-link cycle

    with new("userblock.h5", userblock_size=512) as f:
        f.create_dataset("weights/w", data=f32(3, 3))

    with new("multi-step.h5") as f:
        for step in (100, 200):
            f.attrs["format"] = "gradscope/1"
            f.create_dataset(f"step_{step}/weights/w", data=f32(2, 3))
            f.create_dataset(f"step_{step}/gradients/w", data=f32(2, 3))

    with new("keras3.weights.h5") as f:
        f.create_dataset("layers/dense/vars/0", data=f32(3, 4))
        f.create_dataset("layers/dense/vars/1", data=f32(4))
        f["layers/dense/vars"].attrs["name"] = "hidden"
        f.create_dataset("layers/dense_1/vars/0", data=f32(4, 1))
        f.create_dataset("layers/dense_1/vars/1", data=f32(1))
        f.create_dataset("optimizer/vars/0", data=np.int64(64))
        f.create_dataset("optimizer/vars/1", data=np.float32(1e-3))
        for i, shape in enumerate([(3, 4), (3, 4), (4,), (4,), (4, 1), (4, 1), (1,), (1,)]):
            f.create_dataset(f"optimizer/vars/{i + 2}", data=f32(*shape))
        f.create_group("vars").attrs["name"] = "sequential"

    with new("keras-legacy.h5") as f:
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"dense", b"dense_1"], dtype="S8")
        mw.attrs["keras_version"] = b"2.2.4-tf"
        mw.attrs["backend"] = b"tensorflow"
        f.attrs["training_config"] = '{"optimizer_config": {"class_name": "Adam"}}'
        names = {"dense": [(b"dense/kernel:0", (3, 4)), (b"dense/bias:0", (4,))],
                 "dense_1": [(b"dense_1/kernel:0", (4, 1)), (b"dense_1/bias:0", (1,))]}
        slots = [b"Adam/iter:0"]
        for layer, weights in names.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = np.array([n for n, _ in weights], dtype="S20")
            for n, shape in weights:
                g.create_dataset(n.decode(), data=f32(*shape))
        ow = f.create_group("optimizer_weights")
        ow.create_dataset("Adam/iter:0", data=np.int64(10))
        for kind in ("m", "v"):
            for layer, weights in names.items():
                for n, shape in weights:
                    slot = f"Adam/{n.decode()[:-2]}/{kind}:0"
                    slots.append(slot.encode())
                    ow.create_dataset(slot, data=f32(*shape))
        ow.attrs["weight_names"] = np.array(slots, dtype="S40")

    with new("keras-saveweights.h5") as f:
        f.attrs["layer_names"] = np.array([b"dense"], dtype="S8")
        f.attrs["keras_version"] = b"2.0.8"
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense_1/kernel:0", b"dense_1/bias:0"], dtype="S20")
        g.create_dataset("dense_1/kernel:0", data=f32(3, 2))
        g.create_dataset("dense_1/bias:0", data=f32(2))

    with new("torch-state-dict.h5", NEW) as f:
        for name, shape in [("features.0.weight", (4, 1, 3, 3)), ("features.0.bias", (4,)),
                            ("bn1.running_mean", (4,)), ("fc.weight", (2, 4)), ("fc.bias", (2,))]:
            f.create_dataset(f"model/{name}", data=f32(*shape))
            f.create_dataset(f"grads/{name}", data=f32(*shape))
        f.create_dataset("model/bn1.num_batches_tracked", data=np.int64(12))
        f.attrs["epoch"] = 3

    with new("empty-root.h5") as f:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
