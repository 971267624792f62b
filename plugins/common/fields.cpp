/*
 * fields.cpp: FieldReader. Values are copied out with memcpy (TensorRT gives no alignment promise for field data).
 */
#include "common/fields.h"

#include "common/status.h"

#include <cmath>
#include <cstring>

namespace tensorkiln::plugin
{
namespace
{

template <typename T>
T loadAt(void const* data, int32_t index) noexcept
{
    T value;
    std::memcpy(&value, static_cast<char const*>(data) + static_cast<std::size_t>(index) * sizeof(T), sizeof(T));
    return value;
}

float halfBitsToFloat(uint16_t bits) noexcept
{
    uint32_t const sign = static_cast<uint32_t>(bits & 0x8000U) << 16;
    uint32_t const exponent = (bits >> 10) & 0x1FU;
    uint32_t const mantissa = bits & 0x3FFU;
    if (exponent == 0)
    {
        // Zero or subnormal: mantissa * 2^-24, exact in fp32.
        float const magnitude = std::ldexp(static_cast<float>(mantissa), -24);
        return sign != 0 ? -magnitude : magnitude;
    }
    uint32_t const fp32Exponent = exponent == 0x1FU ? 0xFFU : exponent + (127 - 15);
    uint32_t const word = sign | (fp32Exponent << 23) | (mantissa << 13);
    float value;
    std::memcpy(&value, &word, sizeof(value));
    return value;
}

float bfloatBitsToFloat(uint16_t bits) noexcept
{
    uint32_t const word = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &word, sizeof(value));
    return value;
}

bool isInteger(FieldType type) noexcept
{
    return type == FieldType::kINT8 || type == FieldType::kINT16 || type == FieldType::kINT32
        || type == FieldType::kINT64;
}

int64_t integerAt(Field const& field) noexcept
{
    switch (field.type)
    {
    case FieldType::kINT8: return loadAt<int8_t>(field.data, 0);
    case FieldType::kINT16: return loadAt<int16_t>(field.data, 0);
    case FieldType::kINT32: return loadAt<int32_t>(field.data, 0);
    case FieldType::kINT64: return loadAt<int64_t>(field.data, 0);
    default: return 0;
    }
}

} // namespace

char const* fieldTypeName(FieldType type) noexcept
{
    switch (type)
    {
    case FieldType::kINT8: return "int8";
    case FieldType::kINT16: return "int16";
    case FieldType::kINT32: return "int32";
    case FieldType::kINT64: return "int64";
    case FieldType::kFLOAT16: return "float16";
    case FieldType::kBFLOAT16: return "bfloat16";
    case FieldType::kFLOAT32: return "float32";
    case FieldType::kFLOAT64: return "float64";
    case FieldType::kCHAR: return "string";
    case FieldType::kOTHER: return "unsupported type";
    }
    return "unsupported type";
}

FieldReader::FieldReader(std::string owner, std::vector<Field> fields)
    : mOwner(std::move(owner))
    , mFields(std::move(fields))
{
    for (std::size_t i = 0; i < mFields.size(); ++i)
    {
        for (std::size_t j = 0; j < i; ++j)
        {
            TK_CHECK(mFields[i].name != mFields[j].name,
                mOwner << ": field '" << mFields[i].name << "' is given twice");
        }
    }
}

bool FieldReader::contains(std::string_view name) const noexcept
{
    return find(name) != nullptr;
}

Field const* FieldReader::find(std::string_view name) const noexcept
{
    for (Field const& field : mFields)
    {
        if (field.name == name)
        {
            return &field;
        }
    }
    return nullptr;
}

Field const& FieldReader::require(std::string_view name) const
{
    Field const* field = find(name);
    TK_CHECK(field != nullptr, mOwner << ": required field '" << name << "' is missing");
    TK_CHECK(field->data != nullptr && field->length > 0, mOwner << ": field '" << name << "' has no value");
    return *field;
}

Field const& FieldReader::scalar(std::string_view name) const
{
    Field const& field = require(name);
    TK_CHECK(field.length == 1,
        mOwner << ": field '" << name << "' must be a scalar, got " << field.length << " values");
    return field;
}

int64_t FieldReader::readInt(std::string_view name) const
{
    Field const& field = scalar(name);
    TK_CHECK(isInteger(field.type),
        mOwner << ": field '" << name << "' must be an integer, got " << fieldTypeName(field.type));
    return integerAt(field);
}

int64_t FieldReader::readInt(std::string_view name, int64_t fallback) const
{
    return contains(name) ? readInt(name) : fallback;
}

double FieldReader::readFloat(std::string_view name) const
{
    Field const& field = scalar(name);
    switch (field.type)
    {
    case FieldType::kFLOAT16: return halfBitsToFloat(loadAt<uint16_t>(field.data, 0));
    case FieldType::kBFLOAT16: return bfloatBitsToFloat(loadAt<uint16_t>(field.data, 0));
    case FieldType::kFLOAT32: return loadAt<float>(field.data, 0);
    case FieldType::kFLOAT64: return loadAt<double>(field.data, 0);
    default: break;
    }
    TK_CHECK(isInteger(field.type),
        mOwner << ": field '" << name << "' must be a number, got " << fieldTypeName(field.type));
    return static_cast<double>(integerAt(field));
}

double FieldReader::readFloat(std::string_view name, double fallback) const
{
    return contains(name) ? readFloat(name) : fallback;
}

std::string FieldReader::readString(std::string_view name) const
{
    Field const& field = require(name);
    TK_CHECK(field.type == FieldType::kCHAR,
        mOwner << ": field '" << name << "' must be a string, got " << fieldTypeName(field.type));
    std::string value(static_cast<char const*>(field.data), static_cast<std::size_t>(field.length));
    while (!value.empty() && value.back() == '\0')
    {
        value.pop_back();
    }
    TK_CHECK(value.find('\0') == std::string::npos, mOwner << ": field '" << name << "' has a NUL inside the string");
    return value;
}

std::string FieldReader::readString(std::string_view name, std::string fallback) const
{
    return contains(name) ? readString(name) : fallback;
}

std::vector<std::string> FieldReader::unknownNames(std::initializer_list<std::string_view> known) const
{
    std::vector<std::string> unknown;
    for (Field const& field : mFields)
    {
        bool isKnown = false;
        for (std::string_view name : known)
        {
            isKnown = isKnown || field.name == name;
        }
        if (!isKnown)
        {
            unknown.push_back(field.name);
        }
    }
    return unknown;
}

int64_t checkedRange(std::string const& owner, std::string_view what, int64_t value, int64_t low, int64_t high)
{
    TK_CHECK(value >= low && value <= high,
        owner << ": " << what << " must be in [" << low << ", " << high << "], got " << value);
    return value;
}

} // namespace tensorkiln::plugin
