/*
 * trtUtils.cpp: field, type and dims conversions between TensorRT and the host logic.
 */
#include "common/trtUtils.h"

#include "common/status.h"

namespace tensorkiln::plugin
{
namespace
{

FieldType toFieldType(nvinfer1::PluginFieldType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginFieldType::kINT8: return FieldType::kINT8;
    case nvinfer1::PluginFieldType::kINT16: return FieldType::kINT16;
    case nvinfer1::PluginFieldType::kINT32: return FieldType::kINT32;
    case nvinfer1::PluginFieldType::kINT64: return FieldType::kINT64;
    case nvinfer1::PluginFieldType::kFLOAT16: return FieldType::kFLOAT16;
    case nvinfer1::PluginFieldType::kBF16: return FieldType::kBFLOAT16;
    case nvinfer1::PluginFieldType::kFLOAT32: return FieldType::kFLOAT32;
    case nvinfer1::PluginFieldType::kFLOAT64: return FieldType::kFLOAT64;
    case nvinfer1::PluginFieldType::kCHAR: return FieldType::kCHAR;
    default: return FieldType::kOTHER;
    }
}

} // namespace

FieldReader readFields(nvinfer1::PluginFieldCollection const* collection, std::string owner)
{
    std::vector<Field> fields;
    if (collection != nullptr)
    {
        TK_CHECK(collection->nbFields >= 0 && (collection->nbFields == 0 || collection->fields != nullptr),
            owner << ": malformed PluginFieldCollection (" << collection->nbFields << " fields)");
        fields.reserve(static_cast<std::size_t>(collection->nbFields));
        for (int32_t i = 0; i < collection->nbFields; ++i)
        {
            nvinfer1::PluginField const& field = collection->fields[i];
            TK_CHECK(field.name != nullptr, owner << ": field " << i << " has no name");
            fields.push_back(Field{field.name, toFieldType(field.type), field.data, field.length});
        }
    }
    return FieldReader(std::move(owner), std::move(fields));
}

std::optional<ElementType> toElementType(nvinfer1::DataType type) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return ElementType::kFLOAT32;
    case nvinfer1::DataType::kHALF: return ElementType::kFLOAT16;
    case nvinfer1::DataType::kBF16: return ElementType::kBFLOAT16;
    default: return std::nullopt;
    }
}

nvinfer1::DataType toTrtDataType(ElementType type) noexcept
{
    switch (type)
    {
    case ElementType::kFLOAT16: return nvinfer1::DataType::kHALF;
    case ElementType::kBFLOAT16: return nvinfer1::DataType::kBF16;
    case ElementType::kFLOAT32:
    case ElementType::kFLOAT64: break;
    }
    return nvinfer1::DataType::kFLOAT;
}

std::vector<int64_t> toExtents(nvinfer1::Dims const& dims)
{
    TK_CHECK(dims.nbDims >= 0 && dims.nbDims <= nvinfer1::Dims::MAX_DIMS, "malformed Dims with " << dims.nbDims);
    return std::vector<int64_t>(dims.d, dims.d + dims.nbDims);
}

void PluginFieldList::add(char const* name, void const* data, nvinfer1::PluginFieldType type, int32_t length)
{
    mFields.emplace_back(name, data, type, length);
}

void PluginFieldList::clear() noexcept
{
    mFields.clear();
}

nvinfer1::PluginFieldCollection const* PluginFieldList::collection() noexcept
{
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
}

} // namespace tensorkiln::plugin
