/*
 * trtUtils.h: the thin layer between TensorRT types and the TensorRT-free host logic: fields in and out, element
 * types, dims, and the logger bridge. Only the plugin library compiles this (it needs the TensorRT headers, but
 * nothing here needs libnvinfer: every call into TensorRT below is inline or virtual).
 */
#pragma once

#include "common/elementType.h"
#include "common/fields.h"

#include <NvInferRuntime.h>

#include <optional>
#include <string>
#include <vector>

namespace tensorkiln::plugin
{

//! A PluginFieldCollection as a FieldReader (a null collection reads as empty).
FieldReader readFields(nvinfer1::PluginFieldCollection const* collection, std::string owner);

//! The element types the kernels support, or nullopt for every other TensorRT type.
std::optional<ElementType> toElementType(nvinfer1::DataType type) noexcept;
nvinfer1::DataType toTrtDataType(ElementType type) noexcept;

//! Dims -> a vector of extents (-1 stays -1 for a dynamic extent at build time).
std::vector<int64_t> toExtents(nvinfer1::Dims const& dims);

//! An owning list of PluginFields behind a PluginFieldCollection: for a creator's getFieldNames() (data nullptr)
//! and for getFieldsToSerialize() (data pointing at the plugin's members, which must outlive the collection).
class PluginFieldList
{
public:
    void add(char const* name, void const* data, nvinfer1::PluginFieldType type, int32_t length);
    void clear() noexcept;
    nvinfer1::PluginFieldCollection const* collection() noexcept;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! Route logMessage() to the logger TensorRT finds for the calling thread (nullptr: back to stderr).
void installLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

} // namespace tensorkiln::plugin
