/*
 * manifest.h: an export's manifest.json, parsed and checked as runtime/manifest.py's from_dict does (every key of
 * the wrong type named with its path, the format version, statuses, precisions, file names and hashes), keeping
 * what the C++ runtime uses.
 */
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "jsonFile.h"

namespace tensorkiln
{

constexpr int kMANIFEST_FORMAT_VERSION = 2;
constexpr char const* kMANIFEST_NAME = "manifest.json";
constexpr char const* kBATCH = "batch_size";
constexpr char const* kPAST = "past_sequence_length";

//! A dim: a fixed size, or a symbolic name ("batch_size", "past_sequence_length + sequence_length").
using Dim = std::variant<int64_t, std::string>;

struct TensorInfo
{
    std::string name;
    std::string dtype; //!< "int64", "float32", ... (numpy's names)
    std::vector<Dim> dims;
    std::optional<int64_t> tokenAxis;
};

struct LengthRules
{
    int64_t maxLength{0};
    std::optional<int64_t> fixedLength;
    std::optional<int64_t> padTokenId;
    std::optional<int64_t> padMultiple;
    std::string note;
};

struct CacheEntry
{
    int64_t layer{0};
    std::string kind;
    std::string input;
    std::string output;
    std::vector<Dim> dims;
    std::optional<int64_t> sequenceAxis;
};

struct CacheLayout
{
    std::string pastDim;
    std::vector<CacheEntry> entries;
    std::optional<std::string> positionIds;
};

struct CustomNode
{
    std::string domain;
    std::string opType;
    int64_t count{0};
};

struct Manifest
{
    int formatVersion{kMANIFEST_FORMAT_VERSION};
    std::string modelType;
    std::string task;
    std::string head;
    std::string hfClass;
    int64_t opset{0};
    std::string precision;
    std::vector<TensorInfo> inputs;
    std::vector<TensorInfo> outputs;
    LengthRules lengthRules;
    std::vector<CustomNode> customNodes;
    std::optional<CacheLayout> cache;
    std::vector<std::pair<std::string, std::string>> files; //!< name -> sha256, in file order
    std::string modelFile{"model.onnx"};
    std::string configFile{"config.json"};
    std::optional<std::string> generationConfig; //!< text.generation_config

    TensorInfo const& input(std::string const& name) const;
    bool hasInput(std::string const& name) const;
    bool hasFile(std::string const& name) const;
    std::string const* fileDigest(std::string const& name) const;
};

//! Parse and check a manifest; a ManifestError names `source` (a label, already quoted) and the first bad key.
Manifest manifestFromJson(Json const& data, std::string const& source);

//! The size of a symbolic dim ("a + b" sums its names) from `sizes`; a ManifestError names a missing one.
int64_t resolveDim(std::string const& dim, std::map<std::string, int64_t> const& sizes);
//! Python's str() of a dim (an int, or the name).
std::string dimText(Dim const& dim);

} // namespace tensorkiln
