/*
 * generationConfig.cpp: runtime/generation_config.py's resolve in C++ (see generationConfig.h). The checks run in
 * the order Python evaluates them: unknown names, lengths, special ids, do_sample, top_p, temperature, top_k, seed,
 * num_beams, length_penalty, early_stopping, repetition_penalty, no_repeat_ngram_size, stop_strings.
 */
#include "generationConfig.h"

#include "pyFormat.h"

#include <algorithm>
#include <cmath>

namespace tensorkiln
{
namespace
{

std::vector<std::string> const kOPTION_NAMES{"max_new_tokens", "max_length", "min_new_tokens", "min_length",
    "do_sample", "temperature", "top_k", "top_p", "seed", "num_beams", "length_penalty", "early_stopping",
    "repetition_penalty", "no_repeat_ngram_size", "eos_token_id", "pad_token_id", "stop_strings", "ignore_eos"};

Json const& hfDefaults()
{
    static Json const defaults = {{"do_sample", false}, {"temperature", 1.0}, {"top_k", 50}, {"top_p", 1.0},
        {"num_beams", 1}, {"length_penalty", 1.0}, {"early_stopping", false}, {"repetition_penalty", 1.0},
        {"no_repeat_ngram_size", 0}};
    return defaults;
}

Error inputError(std::string const& message)
{
    return Error(ErrorKind::kRUNTIME_INPUT, message);
}

//! A present, non-null value of `source` (Python's source.get(name) is not None).
Json const* present(Json const& source, std::string const& name)
{
    if (!source.is_object())
    {
        return nullptr;
    }
    auto const found = source.find(name);
    return found == source.end() || found->is_null() ? nullptr : &*found;
}

//! Python's truthiness of a JSON value.
bool truthy(Json const& value)
{
    switch (value.type())
    {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return value.get<bool>();
    case Json::value_t::number_integer: return value.get<int64_t>() != 0;
    case Json::value_t::number_unsigned: return value.get<uint64_t>() != 0;
    case Json::value_t::number_float: return value.get<double>() != 0.0;
    case Json::value_t::string: return !value.get<std::string>().empty();
    default: return !value.empty();
    }
}

int64_t integer(std::string const& name, Json const& value, int64_t low)
{
    if (!value.is_number_integer() || (value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX)
        || value.get<int64_t>() < low)
    {
        std::string const what = low == 1 ? "a positive integer" : "an integer >= " + std::to_string(low);
        throw inputError(name + " must be " + what + ", got " + jsonRepr(value));
    }
    return value.get<int64_t>();
}

double number(std::string const& name, Json const& value)
{
    if (!value.is_number() || !std::isfinite(value.get<double>()))
    {
        throw inputError(name + " must be a finite number, got " + jsonRepr(value));
    }
    return value.get<double>();
}

double positive(std::string const& name, Json const& value, std::string const& hint = "")
{
    if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() <= 0)
    {
        throw inputError(name + " must be a finite number > 0, got " + jsonRepr(value) + hint);
    }
    return value.get<double>();
}

std::vector<int64_t> tokenIds(std::string const& name, Json const& value, int64_t vocabSize)
{
    std::vector<Json> values;
    if (value.is_array())
    {
        values.assign(value.begin(), value.end());
    }
    else
    {
        values.push_back(value);
    }
    bool const ok = !values.empty() && std::all_of(values.begin(), values.end(), [](Json const& v) {
        return v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() >= 0);
    });
    if (!ok)
    {
        throw inputError(name + " must be a token id (an integer >= 0) or a list of them, got " + jsonRepr(value));
    }
    std::vector<int64_t> ids;
    for (auto const& v : values)
    {
        if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        {
            throw inputError(name + " holds " + jsonRepr(v) + ", outside the vocabulary [0, "
                + std::to_string(vocabSize) + ")");
        }
        ids.push_back(v.get<int64_t>());
    }
    for (int64_t token : ids)
    {
        if (token >= vocabSize)
        {
            throw inputError(name + " holds " + std::to_string(token) + ", outside the vocabulary [0, "
                + std::to_string(vocabSize) + ")");
        }
    }
    return ids;
}

std::vector<std::string> stopStrings(Json const& value)
{
    std::vector<Json> values;
    if (value.is_string())
        values.push_back(value);
    else if (value.is_array())
        values.assign(value.begin(), value.end());
    bool const ok = (value.is_string() || value.is_array())
        && std::all_of(values.begin(), values.end(), [](Json const& v) { return v.is_string() && !v.get<std::string>().empty(); });
    if (!ok)
    {
        throw inputError("stop_strings must be a non-empty string or a list of them, got " + jsonRepr(value));
    }
    std::vector<std::string> out;
    for (auto const& v : values)
        out.push_back(v.get<std::string>());
    return out;
}

void earlyStopping(Json const& value)
{
    if (!value.is_boolean() && !(value.is_string() && value.get<std::string>() == "never"))
    {
        throw inputError("early_stopping must be True, False or 'never', got " + jsonRepr(value));
    }
}

std::pair<int64_t, int64_t> lengths(Json const& given, Json const& defaults, int64_t promptLength)
{
    std::optional<int64_t> maximum, minimum;
    for (Json const* source : {&given, &defaults})
    {
        if (!maximum && present(*source, "max_new_tokens"))
        {
            maximum = integer("max_new_tokens", (*source)["max_new_tokens"], 1);
        }
        else if (!maximum && present(*source, "max_length"))
        {
            int64_t const total = integer("max_length", (*source)["max_length"], 1);
            if (total <= promptLength)
            {
                throw inputError("max_length " + std::to_string(total) + " leaves no room after the prompt of "
                    + std::to_string(promptLength) + " tokens; ask for max_new_tokens instead");
            }
            maximum = total - promptLength;
        }
        if (!minimum && present(*source, "min_new_tokens"))
        {
            minimum = integer("min_new_tokens", (*source)["min_new_tokens"], 0);
        }
        else if (!minimum && present(*source, "min_length"))
        {
            minimum = std::max<int64_t>(0, integer("min_length", (*source)["min_length"], 0) - promptLength);
        }
    }
    return {maximum.value_or(kDEFAULT_MAX_NEW_TOKENS), minimum.value_or(0)};
}

void specialIds(Json const& given, Json const& defaults, Json const& config, ResolvedOptions& out)
{
    int64_t const vocabSize = config.at("vocab_size").get<int64_t>();
    Json const* ignore = present(given, "ignore_eos");
    if (ignore == nullptr || !truthy(*ignore))
    {
        for (Json const* source : {&given, &defaults, &config})
        {
            if (Json const* eos = present(*source, "eos_token_id"))
            {
                out.eosTokenIds = tokenIds("eos_token_id", *eos, vocabSize);
                break;
            }
        }
    }
    Json pad;
    for (Json const* source : {&given, &defaults, &config})
    {
        if (Json const* value = present(*source, "pad_token_id"))
        {
            pad = *value;
            break;
        }
    }
    if (pad.is_null()) // no tokenizer in C++: the first EOS id, else 0
    {
        pad = out.eosTokenIds.empty() ? Json(0) : Json(out.eosTokenIds.front());
    }
    out.padTokenId = tokenIds("pad_token_id", pad, vocabSize).front();
}

} // namespace

Json optionsToJson(GenerationOptions const& o)
{
    Json given = Json::object();
    auto set = [&](char const* name, auto const& value) {
        if (value)
            given[name] = *value;
    };
    set("max_new_tokens", o.maxNewTokens);
    set("max_length", o.maxLength);
    set("min_new_tokens", o.minNewTokens);
    set("min_length", o.minLength);
    set("do_sample", o.doSample);
    set("temperature", o.temperature);
    set("top_k", o.topK);
    set("top_p", o.topP);
    set("seed", o.seed);
    set("num_beams", o.numBeams);
    set("repetition_penalty", o.repetitionPenalty);
    set("no_repeat_ngram_size", o.noRepeatNgramSize);
    set("pad_token_id", o.padTokenId);
    if (o.eosTokenId)
    {
        given["eos_token_id"] = o.eosTokenId->size() == 1 ? Json(o.eosTokenId->front()) : Json(*o.eosTokenId);
    }
    if (o.ignoreEos)
    {
        given["ignore_eos"] = true;
    }
    return given;
}

Json optionsFromJsonText(std::string const& text)
{
    Json const given = parseJsonText(text, "the generation options", ErrorKind::kRUNTIME_INPUT);
    if (!given.is_object())
    {
        throw inputError("the generation options must be a JSON object of HF's option names, got " + jsonKind(given));
    }
    return given;
}

ResolvedOptions resolveOptions(Json const& givenIn, Json const& defaults, Json const& config, int64_t promptLength)
{
    std::vector<std::string> unknown;
    Json given = Json::object();
    for (auto const& item : givenIn.items())
    {
        if (std::find(kOPTION_NAMES.begin(), kOPTION_NAMES.end(), item.key()) == kOPTION_NAMES.end())
            unknown.push_back(item.key());
        else if (!item.value().is_null())
            given[item.key()] = item.value();
    }
    if (!unknown.empty())
    {
        std::sort(unknown.begin(), unknown.end());
        throw inputError(std::string("unknown generation option") + (unknown.size() > 1 ? "s " : " ")
            + joinRepr(unknown) + "; the options are " + join(kOPTION_NAMES, ", "));
    }
    auto pick = [&](std::string const& name) -> Json {
        if (given.contains(name))
            return given[name];
        if (Json const* value = present(defaults, name))
            return *value;
        return hfDefaults().contains(name) ? hfDefaults()[name] : Json();
    };
    ResolvedOptions out;
    std::tie(out.maxNewTokens, out.minNewTokens) = lengths(given, defaults, promptLength);
    specialIds(given, defaults, config, out);
    Json const doSample = pick("do_sample");
    if (!doSample.is_boolean())
    {
        throw inputError("do_sample must be True or False, got " + jsonRepr(doSample));
    }
    out.doSample = doSample.get<bool>();
    Json const topP = pick("top_p");
    if (!topP.is_number() || !(topP.get<double>() > 0 && topP.get<double>() <= 1))
    {
        throw inputError("top_p must be a number in (0, 1], got " + jsonRepr(topP));
    }
    out.topP = topP.get<double>();
    out.temperature = positive("temperature", pick("temperature"), "; use do_sample=False for greedy decoding");
    out.topK = integer("top_k", pick("top_k"), 0);
    if (given.contains("seed"))
    {
        out.seed = static_cast<uint64_t>(integer("seed", given["seed"], 0));
    }
    out.numBeams = integer("num_beams", pick("num_beams"), 1);
    number("length_penalty", pick("length_penalty"));
    earlyStopping(pick("early_stopping"));
    out.repetitionPenalty = positive("repetition_penalty", pick("repetition_penalty"));
    out.noRepeatNgramSize = integer("no_repeat_ngram_size", pick("no_repeat_ngram_size"), 0);
    Json const stops = pick("stop_strings");
    if (truthy(stops))
    {
        out.stopStrings = stopStrings(stops);
    }
    return out;
}

} // namespace tensorkiln
