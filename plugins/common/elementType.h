/*
 * elementType.h: the tensor element types the kernels read and write, free of TensorRT and ATen so that launchers,
 * host logic and both bindings (common/trtUtils.h, torch/) share one enum.
 */
#pragma once

#include <cstddef>
#include <cstdint>

namespace tensorkiln::plugin
{

enum class ElementType : int32_t
{
    kFLOAT32,
    kFLOAT16,
    kBFLOAT16,
    kFLOAT64, //!< torch binding only: the ops compute fp64 inputs in fp64; TensorRT has no fp64 tensors here
};

constexpr std::size_t elementSize(ElementType type) noexcept
{
    switch (type)
    {
    case ElementType::kFLOAT32: return 4;
    case ElementType::kFLOAT16: return 2;
    case ElementType::kBFLOAT16: return 2;
    case ElementType::kFLOAT64: return 8;
    }
    return 0;
}

constexpr char const* elementTypeName(ElementType type) noexcept
{
    switch (type)
    {
    case ElementType::kFLOAT32: return "float32";
    case ElementType::kFLOAT16: return "float16";
    case ElementType::kBFLOAT16: return "bfloat16";
    case ElementType::kFLOAT64: return "float64";
    }
    return "unknown";
}

} // namespace tensorkiln::plugin
