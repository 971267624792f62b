"""Generate ``plugins/common/nodeContract.h`` from ``runtime/contract.py``, the node contract's single source of truth.

The C++ plugins take every name they share with the ONNX export from this header: the creator's plugin name and
version, the input and output positions, the field (attribute) names, defaults and string choices, and the allowed
dtypes. ``tests/test_plugins_build.py`` fails when the committed header differs from a fresh generation, so a change
to the contract cannot silently drift away from the plugins.

    python scripts/gen_plugin_contract.py            # rewrite plugins/common/nodeContract.h
    python scripts/gen_plugin_contract.py --check    # exit 1 if the committed header is stale
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_PY = ROOT / "runtime" / "contract.py"
HEADER = ROOT / "plugins" / "common" / "nodeContract.h"

#: ONNX type string -> the bit of the dtype mask in the header (ElementType order of plugins/common/elementType.h).
DTYPE_BITS = {
    "tensor(float)": "kDTYPE_FLOAT32",
    "tensor(float16)": "kDTYPE_FLOAT16",
    "tensor(bfloat16)": "kDTYPE_BFLOAT16",
    "tensor(double)": "kDTYPE_FLOAT64",
}


def load_contract():
    """Import runtime/contract.py by path: it is torch-free, and this keeps the script free of the package install."""
    spec = importlib.util.spec_from_file_location("_tensorkiln_contract", CONTRACT_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def constant(name: str) -> str:
    """snake_case -> UPPER_SNAKE (kCONSTANT style after the k prefix)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).upper()


def c_string(value: str) -> str:
    if not re.fullmatch(r"[ -~]*", value) or '"' in value or "\\" in value:
        raise ValueError(f"contract string {value!r} is not plain printable ASCII")
    return f'"{value}"'


def dtype_mask(dtypes) -> str:
    unknown = [d for d in dtypes if d not in DTYPE_BITS]
    if unknown:
        raise ValueError(f"no plugin element type for ONNX dtypes {unknown}")
    return " | ".join(DTYPE_BITS[d] for d in dtypes)


def dtype_names(dtypes) -> str:
    return ", ".join(d.removeprefix("tensor(").removesuffix(")") for d in dtypes)


def array(ctype: str, name: str, items: list[str]) -> list[str]:
    """A static constexpr std::array member, one item per line when it does not fit in 120 columns."""
    head = f"    static constexpr std::array<{ctype}, {len(items)}> {name}{{"
    one_line = head + ", ".join(items) + "};"
    if len(one_line) <= 120:
        return [one_line]
    return [head] + [f"        {item}," for item in items[:-1]] + [f"        {items[-1]}}};"]


def node_struct(node) -> list[str]:
    inputs, outputs, attributes = node.inputs, node.outputs, node.attributes
    required_inputs = sum(1 for spec in inputs if not spec.optional)
    if any(spec.optional for spec in inputs[:required_inputs]):
        raise ValueError(f"{node.op_type}: optional inputs must come last (TensorRT sees a shorter input list)")
    input_index = {spec.name: i for i, spec in enumerate(inputs)}

    def same_as(spec) -> str:
        return "-1" if spec.same_dtype_as is None else str(input_index[spec.same_dtype_as])

    lines = textwrap.wrap(f"{node.op_type} ({node.torch_op}): {node.doc}", 116, initial_indent="//! ",
                          subsequent_indent="//! ")
    lines += [
        "//!",
        "//!   #     name                      shape         dtypes",
    ]
    for i, spec in enumerate(inputs):
        flag = " (optional)" if spec.optional else ""
        lines.append(f"//!   in {i}  {spec.name:<25} {spec.shape:<13} {dtype_names(spec.dtypes)}{flag}")
    for i, spec in enumerate(outputs):
        lines.append(f"//!   out {i} {spec.name:<25} {spec.shape:<13} {dtype_names(spec.dtypes)}")
    for spec in attributes:
        default = "required" if spec.default is None else f"default {spec.default!r}"
        lines += textwrap.wrap(f"attr {spec.name} ({spec.onnx_type}, {default}): {spec.doc}", 112,
                               initial_indent="//!   ", subsequent_indent="//!       ")
    lines += [f"struct {node.op_type}", "{"]
    lines += [
        f"    static constexpr char const* kOP_TYPE = {c_string(node.op_type)};",
        f"    static constexpr char const* kTORCH_OP = {c_string(node.torch_op)};",
        f"    static constexpr char const* kPLUGIN_VERSION = {c_string(node.plugin_version)};",
        f"    static constexpr char const* kDOMAIN = {c_string(node.domain)};",
        "",
        f"    static constexpr int32_t kNB_INPUTS = {len(inputs)};",
        f"    static constexpr int32_t kNB_REQUIRED_INPUTS = {required_inputs};",
        f"    static constexpr int32_t kNB_OUTPUTS = {len(outputs)};",
    ]
    lines += [f"    static constexpr int32_t kIN_{constant(s.name)} = {i};" for i, s in enumerate(inputs)]
    lines += [f"    static constexpr int32_t kOUT_{constant(s.name)} = {i};" for i, s in enumerate(outputs)]
    for kind, specs in (("INPUT", inputs), ("OUTPUT", outputs)):
        lines += array("char const*", f"k{kind}_NAMES", [c_string(s.name) for s in specs])
        lines += array("uint32_t", f"k{kind}_DTYPES", [dtype_mask(s.dtypes) for s in specs])
        lines += array("int32_t", f"k{kind}_RANKS", [str(s.rank) for s in specs])
        lines.append(f"    //! Index of the input whose dtype this {kind.lower()} must equal, -1 when free.")
        lines += array("int32_t", f"k{kind}_SAME_DTYPE_AS", [same_as(s) for s in specs])
    lines += array("char const*", "kATTRIBUTE_NAMES", [c_string(s.name) for s in attributes])
    for spec in attributes:
        name = constant(spec.name)
        lines.append(f"    static constexpr char const* kATTR_{name} = {c_string(spec.name)};")
        if spec.default is None:
            continue
        if spec.onnx_type == "INT":
            lines.append(f"    static constexpr int64_t kDEFAULT_{name} = {int(spec.default)};")
        elif spec.onnx_type == "FLOAT":
            lines.append(f"    static constexpr double kDEFAULT_{name} = {float(spec.default)!r};")
        else:
            lines.append(f"    static constexpr char const* kDEFAULT_{name} = {c_string(spec.default)};")
        if spec.choices:
            lines += array("char const*", f"kCHOICES_{name}", [c_string(c) for c in spec.choices])
    lines += ["};", ""]
    return lines


def render() -> str:
    contract = load_contract()
    lines = [
        "/*",
        " * nodeContract.h: GENERATED by scripts/gen_plugin_contract.py from runtime/contract.py. Do not edit; run",
        " * `python scripts/gen_plugin_contract.py` after changing the contract (tests/test_plugins_build.py checks).",
        " *",
        " * The names, positions, attributes and dtypes the ONNX nodes carry and the plugins must match: a TensorRT",
        " * parser finds a plugin by op_type, plugin_version and domain, and fills its fields by attribute name.",
        " */",
        "#pragma once",
        "",
        "#include <array>",
        "#include <cstdint>",
        "",
        "namespace tensorkiln::plugin::contract",
        "{",
        "",
        f"constexpr char const* kDOMAIN = {c_string(contract.DOMAIN)};",
        f"constexpr char const* kPLUGIN_VERSION = {c_string(contract.PLUGIN_VERSION)};",
        "//! The creators' namespace: empty, so the parser finds them before trying the node's domain.",
        'constexpr char const* kPLUGIN_NAMESPACE = "";',
        "",
        "//! Dtype mask bits, in plugins/common/elementType.h's ElementType order.",
        "constexpr uint32_t kDTYPE_FLOAT32 = 1U << 0;",
        "constexpr uint32_t kDTYPE_FLOAT16 = 1U << 1;",
        "constexpr uint32_t kDTYPE_BFLOAT16 = 1U << 2;",
        "constexpr uint32_t kDTYPE_FLOAT64 = 1U << 3;",
        "",
    ]
    for op_type in sorted(contract.CONTRACTS):
        lines += node_struct(contract.CONTRACTS[op_type])
    lines += ["} // namespace tensorkiln::plugin::contract", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed header differs")
    parser.add_argument("--output", type=Path, default=HEADER, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python scripts/gen_plugin_contract.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.output.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
