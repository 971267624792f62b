/*
 * tensorkiln/tensor.h: a dense, row-major, host tensor: an element type, a shape and the bytes.
 *
 * The C++ runtime takes and returns these where the Python runtime takes and returns numpy arrays. DType names are
 * numpy's ("int64", "float32", ...), because the runtime's error messages name them as the Python runtime does.
 * A Tensor owns its bytes; copies are deep, moves are cheap.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

namespace tensorkiln
{

enum class DType
{
    kBOOL,
    kINT8,
    kUINT8,
    kINT16,
    kUINT16,
    kINT32,
    kUINT32,
    kINT64,
    kUINT64,
    kFLOAT16,
    kFLOAT32,
    kFLOAT64,
};

//! numpy's name of the type: "bool", "int64", "float16", ...
char const* dtypeName(DType dtype) noexcept;
//! The type of a numpy name; false when `name` is none of them.
bool dtypeFromName(std::string const& name, DType& dtype) noexcept;
//! Bytes per element.
std::size_t dtypeSize(DType dtype) noexcept;
bool isInteger(DType dtype) noexcept;  //!< signed or unsigned integers (not bool)
bool isFloating(DType dtype) noexcept; //!< float16, float32, float64

//! The DType of a C++ element type (bool, the fixed-width integers, float, double); float16 has no C++ type here.
template <typename T>
constexpr DType dtypeOf();

class Tensor
{
public:
    Tensor() = default;
    //! Zero-filled.
    Tensor(DType dtype, std::vector<int64_t> shape);

    //! A tensor holding `values` (their count must equal the shape's product).
    template <typename T>
    static Tensor of(std::vector<int64_t> shape, std::vector<T> const& values)
    {
        Tensor tensor(dtypeOf<T>(), std::move(shape));
        tensor.checkCount(values.size());
        if (!values.empty())
        {
            std::memcpy(tensor.mData.data(), values.data(), values.size() * sizeof(T));
        }
        return tensor;
    }

    //! A tensor of `dtype` whose bytes are copied from `bytes` (`byteCount` must match the shape).
    static Tensor fromBytes(DType dtype, std::vector<int64_t> shape, void const* bytes, std::size_t byteCount);

    DType dtype() const noexcept
    {
        return mDType;
    }
    std::vector<int64_t> const& shape() const noexcept
    {
        return mShape;
    }
    std::size_t rank() const noexcept
    {
        return mShape.size();
    }
    //! The number of elements (1 for a scalar).
    std::size_t size() const noexcept;
    std::size_t byteSize() const noexcept
    {
        return mData.size();
    }

    void const* raw() const noexcept
    {
        return mData.data();
    }
    void* raw() noexcept
    {
        return mData.data();
    }

    //! Typed views; T must be the tensor's type (std::logic_error otherwise).
    template <typename T>
    T const* data() const
    {
        checkType(dtypeOf<T>());
        return reinterpret_cast<T const*>(mData.data());
    }
    template <typename T>
    T* data()
    {
        checkType(dtypeOf<T>());
        return reinterpret_cast<T*>(mData.data());
    }

    //! The elements converted to int64 (integers and bool) or double (any type); float16 is decoded.
    std::vector<int64_t> toInt64() const;
    std::vector<double> toFloat64() const;

    //! A copy converted to `dtype` (numpy's astype: floats to integers truncate; float16 rounds to nearest even).
    Tensor cast(DType dtype) const;

private:
    void checkType(DType want) const;
    void checkCount(std::size_t count) const;

    DType mDType{DType::kFLOAT32};
    std::vector<int64_t> mShape;
    std::vector<std::byte> mData;
};

//! IEEE half precision <-> single precision (round to nearest even), as numpy converts.
uint16_t floatToHalf(float value) noexcept;
float halfToFloat(uint16_t bits) noexcept;

template <typename T>
constexpr DType dtypeOf()
{
    if constexpr (std::is_same_v<T, bool>)
        return DType::kBOOL;
    else if constexpr (std::is_same_v<T, int8_t>)
        return DType::kINT8;
    else if constexpr (std::is_same_v<T, uint8_t>)
        return DType::kUINT8;
    else if constexpr (std::is_same_v<T, int16_t>)
        return DType::kINT16;
    else if constexpr (std::is_same_v<T, uint16_t>)
        return DType::kUINT16;
    else if constexpr (std::is_same_v<T, int32_t>)
        return DType::kINT32;
    else if constexpr (std::is_same_v<T, uint32_t>)
        return DType::kUINT32;
    else if constexpr (std::is_same_v<T, int64_t>)
        return DType::kINT64;
    else if constexpr (std::is_same_v<T, uint64_t>)
        return DType::kUINT64;
    else if constexpr (std::is_same_v<T, float>)
        return DType::kFLOAT32;
    else
    {
        static_assert(std::is_same_v<T, double>, "no tensorkiln DType for this C++ type");
        return DType::kFLOAT64;
    }
}

} // namespace tensorkiln
