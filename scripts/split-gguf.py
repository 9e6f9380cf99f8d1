#!/usr/bin/env python3
"""Splits a GGUF into shards as llama.cpp's gguf-split and convert_hf_to_gguf.py write them.

    split-gguf.py IN.gguf OUT.gguf --max-tensors N

writes OUT-00001-of-0000K.gguf ... (the model's metadata in every shard, `split.no`, `split.count` and
`split.tensors.count` added by gguf-py's writer; each shard's tensors in its own data section) and prints
their paths, first to last. Tensors are copied as their bytes, so the shards hold exactly the file's weights.
"""
import argparse
import os
import sys

import gguf


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--max-tensors", type=int, required=True)
    args = parser.parse_args()
    reader = gguf.GGUFReader(args.src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(args.out, arch, split_max_tensors=args.max_tensors)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key.startswith("split.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    for tensor in reader.tensors:
        quantized = tensor.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type if quantized else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    stem, _ = os.path.splitext(args.out)
    count = len(writer.tensors)
    if count == 1:
        sys.exit("the model has too few tensors to split at this size")
    for i in range(count):
        print(f"{stem}-{i + 1:05d}-of-{count:05d}.gguf")


if __name__ == "__main__":
    main()
