/*
 * onnxExternal.h: the external-data file names an ONNX model refers to, read from its protobuf wire format without
 * a protobuf library: runtime/onnx_external.py in C++ (same walk, same field numbers, same errors).
 */
#pragma once

#include <string>
#include <vector>

namespace tensorkiln
{

//! Every external-data "location" in a serialized ModelProto, in walk order (duplicates kept); throws
//! std::out_of_range when the protobuf is truncated or damaged.
std::vector<std::string> locationsIn(unsigned char const* data, std::size_t size);
//! The external-data locations of the ONNX model at `path`, duplicates kept once (first occurrence), or a
//! ManifestError when it is empty, damaged or unreadable.
std::vector<std::string> externalLocations(std::string const& path);

} // namespace tensorkiln
