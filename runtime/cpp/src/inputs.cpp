/*
 * inputs.cpp: runtime/inputs.py in C++ (see inputs.h). Each check runs where the Python one runs, so an input that
 * breaks two rules gets the same (first) message from both runtimes.
 */
#include "inputs.h"

#include "pyFormat.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace tensorkiln
{
namespace
{

std::vector<std::string> const kINTEGER_INPUTS{"input_ids", "attention_mask", "token_type_ids", "position_ids"};
std::string const kPAST_PREFIX = "past_key_values.";

bool hasPlus(Dim const& dim)
{
    return std::holds_alternative<std::string>(dim) && std::get<std::string>(dim).find('+') != std::string::npos;
}

std::string describe(std::vector<Dim> const& dims)
{
    std::vector<std::string> parts;
    for (auto const& dim : dims)
    {
        parts.push_back(dimText(dim));
    }
    return "(" + join(parts, ", ") + ")";
}

Error inputError(std::string const& message)
{
    return Error(ErrorKind::kRUNTIME_INPUT, message);
}

//! Symbolic dim sizes bound from the inputs' shapes, with an error naming both inputs on a conflict.
class Sizes
{
public:
    std::map<std::string, int64_t> sizes;

    void bind(std::string const& name, TensorInfo const& info, std::vector<int64_t> const& shape)
    {
        if (shape.size() != info.dims.size())
        {
            throw inputError("input " + pyRepr(name) + " has rank " + std::to_string(shape.size()) + " (shape "
                + pyShape(shape) + "); the model expects rank " + std::to_string(info.dims.size()) + ": "
                + describe(info.dims));
        }
        for (std::size_t axis = 0; axis < shape.size(); ++axis)
        {
            Dim const& dim = info.dims[axis];
            if (std::holds_alternative<int64_t>(dim))
            {
                if (std::get<int64_t>(dim) != shape[axis])
                {
                    throw inputError("input " + pyRepr(name) + " axis " + std::to_string(axis) + " is "
                        + std::to_string(shape[axis]) + "; the model fixes it at " + dimText(dim));
                }
            }
            else if (!hasPlus(dim))
            {
                std::string const& symbol = std::get<std::string>(dim);
                auto const bound = sizes.find(symbol);
                if (bound != sizes.end() && bound->second != shape[axis])
                {
                    throw inputError("input " + pyRepr(name) + " has " + symbol + " = " + std::to_string(shape[axis])
                        + " (axis " + std::to_string(axis) + ") but " + pyRepr(mSource[symbol]) + " has "
                        + std::to_string(bound->second) + "; their shapes must agree");
                }
                sizes.emplace(symbol, shape[axis]);
                mSource.emplace(symbol, name);
            }
        }
    }

    void checkSum(std::string const& name, TensorInfo const& info, std::vector<int64_t> const& shape) const
    {
        for (std::size_t axis = 0; axis < info.dims.size(); ++axis)
        {
            if (hasPlus(info.dims[axis]))
            {
                std::string const& dim = std::get<std::string>(info.dims[axis]);
                int64_t const want = resolveDim(dim, sizes);
                if (shape[axis] != want)
                {
                    throw inputError("input " + pyRepr(name) + " axis " + std::to_string(axis) + " is "
                        + std::to_string(shape[axis]) + "; it must be " + dim + " = " + std::to_string(want)
                        + " (the cached tokens plus the new ones)");
                }
            }
        }
    }

private:
    std::map<std::string, std::string> mSource;
};

Tensor integerInput(std::string const& name, Tensor const& array)
{
    if (array.dtype() == DType::kBOOL || isInteger(array.dtype()))
    {
        return array.cast(DType::kINT64);
    }
    throw inputError("input " + pyRepr(name) + " must hold integers (token ids, mask or positions), got dtype "
        + dtypeName(array.dtype()) + "; cast it, e.g. np.asarray(x, dtype=np.int64)");
}

void checkRange(std::string const& name, Tensor const& array, int64_t low, std::optional<int64_t> high,
    std::string const& what)
{
    if (array.size() == 0)
    {
        return;
    }
    int64_t const* values = array.data<int64_t>();
    auto const [lo, hi] = std::minmax_element(values, values + array.size());
    if (*lo < low || (high && *hi >= *high))
    {
        std::string const bound
            = high ? "[" + std::to_string(low) + ", " + std::to_string(*high) + ")" : ">= " + std::to_string(low);
        throw inputError("input " + pyRepr(name) + " holds " + std::to_string(*lo < low ? *lo : *hi) + ", outside "
            + what + " " + bound);
    }
}

Tensor filled(DType dtype, std::vector<int64_t> shape, int64_t value)
{
    Tensor out(DType::kINT64, std::move(shape));
    std::fill(out.data<int64_t>(), out.data<int64_t>() + out.size(), value);
    return out.cast(dtype);
}

//! `array` padded on its last axis to `width` with `value` (numpy's np.pad with a constant).
Tensor padLast(Tensor const& array, int64_t width, int64_t value)
{
    std::vector<int64_t> shape = array.shape();
    int64_t const length = shape.back();
    shape.back() = width;
    Tensor out = filled(array.dtype(), shape, value);
    std::size_t const rowBytes = static_cast<std::size_t>(length) * dtypeSize(array.dtype());
    std::size_t const outRowBytes = static_cast<std::size_t>(width) * dtypeSize(array.dtype());
    std::size_t const rows = length == 0 ? 0 : array.size() / static_cast<std::size_t>(length);
    auto const* source = static_cast<std::byte const*>(array.raw());
    auto* target = static_cast<std::byte*>(out.raw());
    for (std::size_t row = 0; row < rows; ++row)
    {
        std::memcpy(target + row * outRowBytes, source + row * rowBytes, rowBytes);
    }
    return out;
}

//! A graph of one fixed length: right-pad shorter inputs to it (ids with the pad id, the rest with 0) and return
//! the real length to trim outputs back to; refuse longer ones.
std::optional<int64_t> padFixed(Manifest const& manifest, NamedTensors& arrays)
{
    LengthRules const& rules = manifest.lengthRules;
    Tensor const& ids = arrays.at("input_ids");
    if (ids.rank() == 0)
    {
        return std::nullopt; // the rank check names it
    }
    int64_t const length = ids.shape().back();
    int64_t const fixed = *rules.fixedLength;
    if (length > fixed)
    {
        throw inputError("the sequence is too long: " + std::to_string(length) + " tokens > the model's maximum of "
            + std::to_string(fixed) + " (" + (rules.note.empty() ? "a fixed-length graph" : rules.note)
            + "); truncate the input or split it");
    }
    for (char const* name : {"attention_mask", "token_type_ids"})
    {
        auto const found = arrays.find(name);
        if (found != arrays.end() && found->second.shape() != ids.shape())
        {
            throw inputError("input " + pyRepr(name) + " has shape " + pyShape(found->second.shape())
                + "; it must match input_ids' shape " + pyShape(ids.shape()));
        }
    }
    if (length == fixed)
    {
        return std::nullopt;
    }
    arrays.emplace("attention_mask", filled(DType::kINT64, ids.shape(), 1));
    if (manifest.hasInput("token_type_ids"))
    {
        arrays.emplace("token_type_ids", filled(DType::kINT64, ids.shape(), 0));
    }
    for (auto& [name, array] : arrays)
    {
        int64_t const value = name == "input_ids" ? rules.padTokenId.value_or(0) : 0;
        if (array.rank() > 0)
        {
            array = padLast(array, array.shape().back() + fixed - length, value);
        }
    }
    return length;
}

std::vector<std::string> checkNames(Manifest const& manifest, NamedTensors const& inputs)
{
    std::vector<std::string> known;
    for (auto const& info : manifest.inputs)
    {
        known.push_back(info.name);
    }
    std::vector<std::string> unknown;
    for (auto const& [name, tensor] : inputs)
    {
        if (std::find(known.begin(), known.end(), name) == known.end())
        {
            unknown.push_back(name);
        }
    }
    if (!unknown.empty())
    {
        throw inputError(std::string("unknown input") + (unknown.size() > 1 ? "s " : " ") + joinRepr(unknown)
            + "; this " + manifest.hfClass + " export takes " + join(known, ", "));
    }
    if (inputs.count("input_ids") == 0)
    {
        throw inputError("input 'input_ids' is required; this " + manifest.hfClass + " export takes "
            + join(known, ", "));
    }
    return known;
}

DType floatType(Manifest const& manifest)
{
    return manifest.precision == "fp16" ? DType::kFLOAT16 : DType::kFLOAT32;
}

//! Check and cast the given cache inputs (all or none) and bind their sizes; returns the cached length.
int64_t cacheInputs(Manifest const& manifest, NamedTensors& arrays, Sizes& sizes, std::vector<std::string>& pastNames)
{
    std::vector<std::string> given, missing;
    for (auto const& info : manifest.inputs)
    {
        if (info.name.compare(0, kPAST_PREFIX.size(), kPAST_PREFIX) == 0)
        {
            pastNames.push_back(info.name);
            (arrays.count(info.name) ? given : missing).push_back(info.name);
        }
    }
    if (!given.empty() && !missing.empty())
    {
        std::vector<std::string> const shown(missing.begin(), missing.begin() + std::min<std::size_t>(4, missing.size()));
        throw inputError("pass all of the cache inputs or none (a prefill); missing: " + join(shown, ", ")
            + (missing.size() > 4 ? " and " + std::to_string(missing.size() - 4) + " more" : ""));
    }
    for (auto const& name : given)
    {
        Tensor& array = arrays.at(name);
        if (!isFloating(array.dtype()))
        {
            throw inputError("cache input " + pyRepr(name) + " must be floating point, got dtype "
                + dtypeName(array.dtype()));
        }
        std::vector<int64_t> const shape = array.shape();
        array = array.cast(floatType(manifest));
        sizes.bind(name, manifest.input(name), shape);
    }
    if (!pastNames.empty() && given.empty())
    {
        sizes.sizes[kPAST] = 0;
    }
    auto const past = sizes.sizes.find(kPAST);
    return past == sizes.sizes.end() ? 0 : past->second;
}

Tensor const& attentionMask(Manifest const& manifest, NamedTensors& arrays, Sizes& sizes, int64_t past)
{
    Tensor const& ids = arrays.at("input_ids");
    int64_t const length = ids.shape().back();
    int64_t const maxLength = manifest.lengthRules.maxLength;
    if (past + length > maxLength)
    {
        std::string const what = past ? std::to_string(past) + " cached + " + std::to_string(length) + " new tokens"
                                       : std::to_string(length) + " tokens";
        throw inputError("the sequence is too long: " + what + " > the model's maximum of " + std::to_string(maxLength)
            + "; truncate the input or split it");
    }
    if (arrays.count("attention_mask") == 0)
    {
        std::vector<int64_t> shape = ids.shape();
        shape.back() = length + past;
        arrays.emplace("attention_mask", filled(DType::kINT64, shape, 1));
    }
    Tensor const& mask = arrays.at("attention_mask");
    TensorInfo const& info = manifest.input("attention_mask");
    sizes.bind("attention_mask", info, mask.shape());
    if (!info.dims.empty() && hasPlus(info.dims.back()))
    {
        sizes.checkSum("attention_mask", info, mask.shape());
    }
    if (mask.size() != 0)
    {
        auto const [lo, hi] = std::minmax_element(mask.data<int64_t>(), mask.data<int64_t>() + mask.size());
        if (*lo < 0 || *hi > 1)
        {
            throw inputError("input 'attention_mask' must hold 0 (padding) or 1 (a real token)");
        }
    }
    return mask;
}

void tokenTypesAndPositions(Manifest const& manifest, ModelLimits const& limits, NamedTensors& arrays, Sizes& sizes,
    Tensor const& mask, int64_t past)
{
    Tensor const& ids = arrays.at("input_ids");
    if (manifest.hasInput("token_type_ids"))
    {
        if (arrays.count("token_type_ids") == 0)
        {
            arrays.emplace("token_type_ids", filled(DType::kINT64, ids.shape(), 0));
        }
        Tensor const& types = arrays.at("token_type_ids");
        sizes.bind("token_type_ids", manifest.input("token_type_ids"), types.shape());
        checkRange("token_type_ids", types, 0, limits.typeVocabSize, "the token types");
    }
    if (manifest.hasInput("position_ids"))
    {
        if (arrays.count("position_ids") == 0)
        {
            Tensor const positions = positionIdsFromMask(mask);
            std::size_t const axis = positions.rank() - 1;
            arrays.emplace("position_ids", sliceAxis(positions, axis, past, positions.shape().back() - past));
        }
        Tensor const& positions = arrays.at("position_ids");
        sizes.bind("position_ids", manifest.input("position_ids"), positions.shape());
        checkRange("position_ids", positions, 0, manifest.lengthRules.maxLength, "the positions");
    }
}

} // namespace

ModelLimits modelLimits(Json const& config)
{
    Fields const fields(config, "the export's config.json", ErrorKind::kMANIFEST);
    ModelLimits limits;
    limits.vocabSize = fields.integer("vocab_size", 1);
    limits.typeVocabSize = fields.optionalInteger("type_vocab_size", 1);
    return limits;
}

Prepared prepare(Manifest const& manifest, ModelLimits const& limits, NamedTensors const& inputs)
{
    std::vector<std::string> const known = checkNames(manifest, inputs);
    NamedTensors arrays = inputs;
    for (auto const& name : kINTEGER_INPUTS)
    {
        auto const found = arrays.find(name);
        if (found != arrays.end())
        {
            found->second = integerInput(name, found->second);
        }
    }
    Prepared prepared;
    if (manifest.lengthRules.fixedLength)
    {
        prepared.realLength = padFixed(manifest, arrays);
    }

    Sizes sizes;
    Tensor const& ids = arrays.at("input_ids");
    sizes.bind("input_ids", manifest.input("input_ids"), ids.shape());
    if (ids.shape().front() == 0 || ids.shape().back() == 0)
    {
        throw inputError("input 'input_ids' has shape " + pyShape(ids.shape())
            + ": the batch and the sequence need at least one token each");
    }
    checkRange("input_ids", ids, 0, limits.vocabSize, "the vocabulary");
    std::vector<std::string> pastNames;
    int64_t const past = cacheInputs(manifest, arrays, sizes, pastNames);
    Tensor const mask = attentionMask(manifest, arrays, sizes, past);
    tokenTypesAndPositions(manifest, limits, arrays, sizes, mask, past);

    for (auto const& name : pastNames) // a prefill: every cache input empty along its sequence axis
    {
        if (arrays.count(name) == 0)
        {
            std::vector<int64_t> shape;
            for (auto const& dim : manifest.input(name).dims)
            {
                shape.push_back(std::holds_alternative<int64_t>(dim) ? std::get<int64_t>(dim)
                                                                     : resolveDim(std::get<std::string>(dim), sizes.sizes));
            }
            arrays.emplace(name, Tensor(floatType(manifest), shape));
        }
    }
    for (auto const& name : known)
    {
        auto found = arrays.find(name);
        if (found != arrays.end())
        {
            prepared.feeds.emplace_back(name, std::move(found->second));
        }
    }
    return prepared;
}

NamedTensors trim(Manifest const& manifest, Prepared const& prepared, NamedTensors outputs)
{
    if (!prepared.realLength)
    {
        return outputs;
    }
    for (auto const& info : manifest.outputs)
    {
        auto found = outputs.find(info.name);
        if (info.tokenAxis && found != outputs.end())
        {
            found->second = sliceAxis(found->second, static_cast<std::size_t>(*info.tokenAxis), 0, *prepared.realLength);
        }
    }
    return outputs;
}

Tensor positionIdsFromMask(Tensor const& mask)
{
    Tensor out(DType::kINT64, mask.shape());
    if (mask.size() == 0)
    {
        return out;
    }
    int64_t const width = mask.shape().back();
    int64_t const* in = mask.data<int64_t>();
    int64_t* positions = out.data<int64_t>();
    for (std::size_t row = 0; row < mask.size() / static_cast<std::size_t>(width); ++row)
    {
        int64_t running = 0;
        for (int64_t i = 0; i < width; ++i)
        {
            std::size_t const at = row * static_cast<std::size_t>(width) + static_cast<std::size_t>(i);
            running += in[at];
            positions[at] = in[at] == 0 ? 1 : running - 1;
        }
    }
    return out;
}

Tensor sliceAxis(Tensor const& tensor, std::size_t axis, int64_t begin, int64_t count)
{
    std::vector<int64_t> shape = tensor.shape();
    int64_t const full = shape[axis];
    shape[axis] = count;
    Tensor out(tensor.dtype(), shape);
    std::size_t outer = 1, inner = dtypeSize(tensor.dtype());
    for (std::size_t i = 0; i < axis; ++i)
        outer *= static_cast<std::size_t>(tensor.shape()[i]);
    for (std::size_t i = axis + 1; i < shape.size(); ++i)
        inner *= static_cast<std::size_t>(shape[i]);
    auto const* source = static_cast<std::byte const*>(tensor.raw());
    auto* target = static_cast<std::byte*>(out.raw());
    for (std::size_t o = 0; o < outer; ++o)
    {
        std::memcpy(target + o * static_cast<std::size_t>(count) * inner,
            source + (o * static_cast<std::size_t>(full) + static_cast<std::size_t>(begin)) * inner,
            static_cast<std::size_t>(count) * inner);
    }
    return out;
}

} // namespace tensorkiln
