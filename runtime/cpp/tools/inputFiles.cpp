/*
 * inputFiles.cpp: see inputFiles.h.
 */
#include "inputFiles.h"

#include "npy.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace tensorkiln::tools
{
namespace
{

using Json = nlohmann::json;

void collectShape(Json const& value, std::size_t depth, std::vector<int64_t>& shape, std::vector<Json>& leaves)
{
    if (!value.is_array())
    {
        if (depth != shape.size())
            throw std::invalid_argument("inputs JSON: a nested list is ragged (mixes lists and numbers)");
        leaves.push_back(value);
        return;
    }
    if (depth == shape.size())
    {
        if (!leaves.empty())
            throw std::invalid_argument("inputs JSON: a nested list is ragged (mixes lists and numbers)");
        shape.push_back(static_cast<int64_t>(value.size()));
    }
    else if (depth > shape.size() || shape[depth] != static_cast<int64_t>(value.size()))
    {
        throw std::invalid_argument("inputs JSON: a nested list is ragged (rows of different lengths)");
    }
    for (Json const& item : value)
        collectShape(item, depth + 1, shape, leaves);
}

Tensor tensorOf(std::string const& name, Json const& value)
{
    std::vector<int64_t> shape;
    std::vector<Json> leaves;
    collectShape(value, 0, shape, leaves);
    bool anyFloat = false, allBool = !leaves.empty();
    for (Json const& leaf : leaves)
    {
        if (!leaf.is_number() && !leaf.is_boolean())
            throw std::invalid_argument("inputs JSON: " + name + " holds " + leaf.dump() + ", not a number");
        anyFloat = anyFloat || leaf.is_number_float();
        allBool = allBool && leaf.is_boolean();
    }
    if (allBool)
    {
        Tensor tensor(DType::kBOOL, shape);
        for (std::size_t i = 0; i < leaves.size(); ++i)
            tensor.data<bool>()[i] = leaves[i].get<bool>();
        return tensor;
    }
    if (anyFloat)
    {
        Tensor tensor(DType::kFLOAT64, shape);
        for (std::size_t i = 0; i < leaves.size(); ++i)
            tensor.data<double>()[i] = leaves[i].get<double>();
        return tensor;
    }
    Tensor tensor(DType::kINT64, shape);
    for (std::size_t i = 0; i < leaves.size(); ++i)
        tensor.data<int64_t>()[i] = leaves[i].get<int64_t>();
    return tensor;
}

} // namespace

tensorkiln::LoadOptions loadOptions(Arguments const& args)
{
    tensorkiln::LoadOptions options;
    options.backend = args.value("backend").value_or(options.backend);
    options.kernels = args.value("kernels").value_or(options.kernels);
    options.threads = static_cast<int>(args.integer("threads").value_or(0));
    options.providers = args.values("provider");
    options.onnxruntimeLibrary = args.value("onnxruntime-library").value_or("");
    options.checkFiles = !args.flag("no-check");
    return options;
}

NamedTensors readInputsDir(std::string const& folder)
{
    NamedTensors inputs;
    for (auto const& entry : std::filesystem::directory_iterator(folder))
    {
        if (entry.path().extension() == ".npy")
            inputs[entry.path().stem().string()] = readNpy(entry.path().string());
    }
    return inputs;
}

NamedTensors readInputsJson(std::string const& path)
{
    std::ifstream file(path);
    if (!file)
        throw std::runtime_error("cannot open " + path);
    Json data;
    try
    {
        data = Json::parse(file);
    }
    catch (Json::parse_error const& error)
    {
        throw std::invalid_argument(path + " is not JSON: " + error.what());
    }
    if (!data.is_object())
        throw std::invalid_argument(path + " must hold a JSON object of named nested lists");
    NamedTensors inputs;
    for (auto const& [name, value] : data.items())
        inputs[name] = tensorOf(name, value);
    return inputs;
}

NamedTensors readInputs(Arguments const& args)
{
    NamedTensors inputs;
    for (std::string const& folder : args.values("inputs-dir"))
        inputs.merge(readInputsDir(folder));
    if (auto const path = args.value("inputs-json"))
        inputs.merge(readInputsJson(*path));
    for (std::string const& item : args.values("input"))
    {
        auto const equals = item.find('=');
        if (equals == std::string::npos || equals == 0)
            throw std::invalid_argument("--input takes NAME=FILE.npy, got '" + item + "'");
        inputs[item.substr(0, equals)] = readNpy(item.substr(equals + 1));
    }
    return inputs;
}

} // namespace tensorkiln::tools
