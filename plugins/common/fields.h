/*
 * fields.h: read plugin attributes ("fields") by name into host parameters, with errors that name the plugin, the
 * field and what was expected.
 *
 * TensorRT hands attributes over as a PluginFieldCollection (name, type, data, length). Host logic must be testable
 * without TensorRT, so it reads a neutral Field list instead; common/trtUtils.h converts a PluginFieldCollection into
 * one. Integers may arrive as any integer width (the ONNX parser's choice), floats as fp16/bf16/fp32/fp64, strings as
 * kCHAR arrays with or without a trailing NUL.
 */
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace tensorkiln::plugin
{

enum class FieldType : int32_t
{
    kINT8,
    kINT16,
    kINT32,
    kINT64,
    kFLOAT16,
    kBFLOAT16,
    kFLOAT32,
    kFLOAT64,
    kCHAR,
    kOTHER, //!< anything else TensorRT can carry (dims, fp8, opaque bytes): never a valid attribute here
};

char const* fieldTypeName(FieldType type) noexcept;

//! A non-owning view of one attribute: `length` elements of `type` at `data`.
struct Field
{
    std::string name;
    FieldType type{FieldType::kOTHER};
    void const* data{nullptr};
    int32_t length{0};
};

//! Typed, by-name access to a list of fields. Every failure throws PluginError naming `owner` and the field.
class FieldReader
{
public:
    //! `owner` prefixes every error (the plugin name). Throws when a name occurs twice.
    FieldReader(std::string owner, std::vector<Field> fields);

    bool contains(std::string_view name) const noexcept;

    //! A scalar integer field. Required form throws when the field is absent.
    int64_t readInt(std::string_view name) const;
    int64_t readInt(std::string_view name, int64_t fallback) const;

    //! A scalar floating field; integer fields are accepted and widened.
    double readFloat(std::string_view name) const;
    double readFloat(std::string_view name, double fallback) const;

    //! A string field (kCHAR); trailing NULs are dropped.
    std::string readString(std::string_view name) const;
    std::string readString(std::string_view name, std::string fallback) const;

    //! Names of the fields not in `known`, in their original order (for a warning, not an error: the ONNX parser
    //! may pass attributes the plugin does not use).
    std::vector<std::string> unknownNames(std::initializer_list<std::string_view> known) const;

private:
    Field const* find(std::string_view name) const noexcept;
    Field const& require(std::string_view name) const;
    Field const& scalar(std::string_view name) const;

    std::string mOwner;
    std::vector<Field> mFields;
};

//! Fail unless `value` is within [low, high]; `what` names the field for the message.
int64_t checkedRange(std::string const& owner, std::string_view what, int64_t value, int64_t low, int64_t high);

} // namespace tensorkiln::plugin
