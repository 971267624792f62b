/*
 * tensor.cpp: tensorkiln::Tensor's storage and conversions, and IEEE half precision as numpy converts it (round to
 * nearest even, subnormals, infinities and NaN kept).
 */
#include "tensorkiln/tensor.h"

#include <cmath>
#include <functional>
#include <numeric>
#include <stdexcept>

namespace tensorkiln
{
namespace
{

struct DTypeInfo
{
    DType dtype;
    char const* name;
    std::size_t size;
};

constexpr DTypeInfo kDTYPES[] = {
    {DType::kBOOL, "bool", 1},
    {DType::kINT8, "int8", 1},
    {DType::kUINT8, "uint8", 1},
    {DType::kINT16, "int16", 2},
    {DType::kUINT16, "uint16", 2},
    {DType::kINT32, "int32", 4},
    {DType::kUINT32, "uint32", 4},
    {DType::kINT64, "int64", 8},
    {DType::kUINT64, "uint64", 8},
    {DType::kFLOAT16, "float16", 2},
    {DType::kFLOAT32, "float32", 4},
    {DType::kFLOAT64, "float64", 8},
};

DTypeInfo const& info(DType dtype)
{
    for (auto const& entry : kDTYPES)
    {
        if (entry.dtype == dtype)
        {
            return entry;
        }
    }
    return kDTYPES[0];
}

std::size_t elementCount(std::vector<int64_t> const& shape)
{
    std::size_t count = 1;
    for (int64_t dim : shape)
    {
        if (dim < 0)
        {
            throw std::invalid_argument("tensorkiln::Tensor: a negative dimension");
        }
        count *= static_cast<std::size_t>(dim);
    }
    return count;
}

//! Visit element i of `raw` as a double or an int64, by type.
template <typename Out>
Out elementAs(DType dtype, std::byte const* raw, std::size_t i)
{
    switch (dtype)
    {
    case DType::kBOOL: return static_cast<Out>(reinterpret_cast<bool const*>(raw)[i]);
    case DType::kINT8: return static_cast<Out>(reinterpret_cast<int8_t const*>(raw)[i]);
    case DType::kUINT8: return static_cast<Out>(reinterpret_cast<uint8_t const*>(raw)[i]);
    case DType::kINT16: return static_cast<Out>(reinterpret_cast<int16_t const*>(raw)[i]);
    case DType::kUINT16: return static_cast<Out>(reinterpret_cast<uint16_t const*>(raw)[i]);
    case DType::kINT32: return static_cast<Out>(reinterpret_cast<int32_t const*>(raw)[i]);
    case DType::kUINT32: return static_cast<Out>(reinterpret_cast<uint32_t const*>(raw)[i]);
    case DType::kINT64: return static_cast<Out>(reinterpret_cast<int64_t const*>(raw)[i]);
    case DType::kUINT64: return static_cast<Out>(reinterpret_cast<uint64_t const*>(raw)[i]);
    case DType::kFLOAT16: return static_cast<Out>(halfToFloat(reinterpret_cast<uint16_t const*>(raw)[i]));
    case DType::kFLOAT32: return static_cast<Out>(reinterpret_cast<float const*>(raw)[i]);
    case DType::kFLOAT64: return static_cast<Out>(reinterpret_cast<double const*>(raw)[i]);
    }
    return Out{};
}

template <typename T>
void store(std::byte* raw, std::size_t i, T value)
{
    reinterpret_cast<T*>(raw)[i] = value;
}

} // namespace

char const* dtypeName(DType dtype) noexcept
{
    return info(dtype).name;
}

bool dtypeFromName(std::string const& name, DType& dtype) noexcept
{
    for (auto const& entry : kDTYPES)
    {
        if (name == entry.name)
        {
            dtype = entry.dtype;
            return true;
        }
    }
    return false;
}

std::size_t dtypeSize(DType dtype) noexcept
{
    return info(dtype).size;
}

bool isInteger(DType dtype) noexcept
{
    return dtype != DType::kBOOL && !isFloating(dtype);
}

bool isFloating(DType dtype) noexcept
{
    return dtype == DType::kFLOAT16 || dtype == DType::kFLOAT32 || dtype == DType::kFLOAT64;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape)
    : mDType(dtype)
    , mShape(std::move(shape))
    , mData(elementCount(mShape) * dtypeSize(dtype))
{
}

Tensor Tensor::fromBytes(DType dtype, std::vector<int64_t> shape, void const* bytes, std::size_t byteCount)
{
    Tensor tensor(dtype, std::move(shape));
    if (byteCount != tensor.mData.size())
    {
        throw std::invalid_argument("tensorkiln::Tensor::fromBytes: the byte count does not match the shape");
    }
    if (byteCount != 0)
    {
        std::memcpy(tensor.mData.data(), bytes, byteCount);
    }
    return tensor;
}

std::size_t Tensor::size() const noexcept
{
    std::size_t count = 1;
    for (int64_t dim : mShape)
    {
        count *= static_cast<std::size_t>(dim);
    }
    return count;
}

std::vector<int64_t> Tensor::toInt64() const
{
    std::vector<int64_t> out(size());
    for (std::size_t i = 0; i < out.size(); ++i)
    {
        out[i] = elementAs<int64_t>(mDType, mData.data(), i);
    }
    return out;
}

std::vector<double> Tensor::toFloat64() const
{
    std::vector<double> out(size());
    for (std::size_t i = 0; i < out.size(); ++i)
    {
        out[i] = elementAs<double>(mDType, mData.data(), i);
    }
    return out;
}

Tensor Tensor::cast(DType dtype) const
{
    if (dtype == mDType)
    {
        return *this;
    }
    Tensor out(dtype, mShape);
    std::size_t const count = size();
    std::byte* raw = out.mData.data();
    for (std::size_t i = 0; i < count; ++i)
    {
        switch (dtype)
        {
        case DType::kBOOL: store<bool>(raw, i, elementAs<double>(mDType, mData.data(), i) != 0.0); break;
        case DType::kFLOAT16: store<uint16_t>(raw, i, floatToHalf(elementAs<float>(mDType, mData.data(), i))); break;
        case DType::kFLOAT32: store<float>(raw, i, elementAs<float>(mDType, mData.data(), i)); break;
        case DType::kFLOAT64: store<double>(raw, i, elementAs<double>(mDType, mData.data(), i)); break;
        case DType::kINT8: store<int8_t>(raw, i, elementAs<int8_t>(mDType, mData.data(), i)); break;
        case DType::kUINT8: store<uint8_t>(raw, i, elementAs<uint8_t>(mDType, mData.data(), i)); break;
        case DType::kINT16: store<int16_t>(raw, i, elementAs<int16_t>(mDType, mData.data(), i)); break;
        case DType::kUINT16: store<uint16_t>(raw, i, elementAs<uint16_t>(mDType, mData.data(), i)); break;
        case DType::kINT32: store<int32_t>(raw, i, elementAs<int32_t>(mDType, mData.data(), i)); break;
        case DType::kUINT32: store<uint32_t>(raw, i, elementAs<uint32_t>(mDType, mData.data(), i)); break;
        case DType::kINT64: store<int64_t>(raw, i, elementAs<int64_t>(mDType, mData.data(), i)); break;
        case DType::kUINT64: store<uint64_t>(raw, i, elementAs<uint64_t>(mDType, mData.data(), i)); break;
        }
    }
    return out;
}

void Tensor::checkType(DType want) const
{
    if (want != mDType)
    {
        throw std::logic_error(std::string("tensorkiln::Tensor holds ") + dtypeName(mDType) + ", not "
            + dtypeName(want));
    }
}

void Tensor::checkCount(std::size_t count) const
{
    if (count != size())
    {
        throw std::invalid_argument("tensorkiln::Tensor::of: " + std::to_string(count) + " values for a shape of "
            + std::to_string(size()) + " elements");
    }
}

uint16_t floatToHalf(float value) noexcept
{
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    uint32_t const sign = (bits >> 16) & 0x8000u;
    uint32_t const exponent = (bits >> 23) & 0xffu;
    uint32_t mantissa = bits & 0x7fffffu;
    if (exponent == 0xffu) // Inf or NaN (a quiet NaN stays a NaN)
    {
        return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u | (mantissa >> 13) : 0u));
    }
    int32_t const halfExponent = static_cast<int32_t>(exponent) - 127 + 15;
    if (halfExponent >= 0x1f) // overflow
    {
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (halfExponent <= 0) // subnormal or zero: shift the implicit bit in, then round
    {
        if (halfExponent < -10)
        {
            return static_cast<uint16_t>(sign);
        }
        mantissa |= 0x800000u;
        uint32_t const shift = static_cast<uint32_t>(14 - halfExponent);
        uint32_t half = mantissa >> shift;
        uint32_t const rest = mantissa & ((1u << shift) - 1u);
        uint32_t const halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (half & 1u)))
        {
            ++half;
        }
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t half = (static_cast<uint32_t>(halfExponent) << 10) | (mantissa >> 13);
    uint32_t const rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
    {
        ++half; // may carry into the exponent, up to Inf: correct rounding
    }
    return static_cast<uint16_t>(sign | half);
}

float halfToFloat(uint16_t bits) noexcept
{
    uint32_t const sign = (static_cast<uint32_t>(bits) & 0x8000u) << 16;
    uint32_t const exponent = (bits >> 10) & 0x1fu;
    uint32_t mantissa = bits & 0x3ffu;
    uint32_t out;
    if (exponent == 0x1fu)
    {
        out = sign | 0x7f800000u | (mantissa << 13);
    }
    else if (exponent != 0)
    {
        out = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
    }
    else if (mantissa == 0)
    {
        out = sign;
    }
    else // subnormal: normalise
    {
        int32_t e = -1;
        do
        {
            ++e;
            mantissa <<= 1;
        } while ((mantissa & 0x400u) == 0);
        out = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float value;
    std::memcpy(&value, &out, sizeof(value));
    return value;
}

} // namespace tensorkiln
