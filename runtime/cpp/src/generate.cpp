/*
 * generate.cpp: Session::generate: runtime/generate.py's greedy and sampled decoding in C++, through the exported
 * cache (each step's present.* outputs fed back as past_key_values.* as the manifest's cache layout says), or by
 * recomputing the sequence for a causal LM exported without one. Left-padded batches, EOS lists (finished rows
 * emit pad_token_id until every row is done), the Python runtime's checks and messages in its order (the prompt,
 * the options, then the export and lengths).
 */
#include "sessionImpl.h"

#include "generationConfig.h"
#include "pyFormat.h"
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace tensorkiln
{
namespace
{

Error inputError(std::string const& message)
{
    return Error(ErrorKind::kRUNTIME_INPUT, message);
}

//! numpy's str() of np.unique(values)[:5] (what the Python runtime shows of a mask that is not 0/1).
std::string uniqueShown(Tensor const& mask)
{
    std::vector<double> values = mask.toFloat64();
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    values.resize(std::min<std::size_t>(values.size(), 5));
    std::vector<std::string> items;
    if (!isFloating(mask.dtype()))
    {
        for (double value : values)
            items.push_back(mask.dtype() == DType::kBOOL ? (value != 0 ? "True" : "False")
                                                         : std::to_string(static_cast<int64_t>(value)));
        return "[" + join(items, " ") + "]";
    }
    std::size_t wholeWidth = 0, fractionWidth = 0;
    std::vector<std::pair<std::string, std::string>> parts;
    for (double value : values)
    {
        std::string text = pyFloat(value);
        std::size_t const dot = text.find('.');
        std::string whole = dot == std::string::npos ? text : text.substr(0, dot);
        std::string fraction = dot == std::string::npos ? "" : text.substr(dot + 1);
        if (fraction == "0")
            fraction.clear();
        wholeWidth = std::max(wholeWidth, whole.size());
        fractionWidth = std::max(fractionWidth, fraction.size());
        parts.emplace_back(whole, fraction);
    }
    for (auto const& [whole, fraction] : parts)
    {
        items.push_back(std::string(wholeWidth - whole.size(), ' ') + whole + "." + fraction
            + std::string(fractionWidth - fraction.size(), ' '));
    }
    return "[" + join(items, " ") + "]";
}

//! The prompt checked and cast (runtime/generate.py's _prompt): ids and a 0/1 mask, both int64.
std::pair<Tensor, Tensor> prompt(Tensor const& inputIds, Tensor const* attentionMask)
{
    if (inputIds.size() == 0)
    {
        throw inputError("the prompt is empty (input_ids of shape " + pyShape(inputIds.shape())
            + "): generation needs at least one token per row");
    }
    if (!isInteger(inputIds.dtype()))
    {
        throw inputError(std::string("input_ids must hold integer token ids, got dtype ") + dtypeName(inputIds.dtype())
            + "; for text, call generate(text=...)");
    }
    Tensor ids = inputIds.cast(DType::kINT64);
    if (attentionMask == nullptr)
    {
        Tensor mask(DType::kINT64, ids.shape());
        std::fill(mask.data<int64_t>(), mask.data<int64_t>() + mask.size(), 1);
        return {std::move(ids), std::move(mask)};
    }
    std::vector<double> const values = attentionMask->toFloat64();
    bool const binary = std::all_of(values.begin(), values.end(), [](double v) { return v == 0.0 || v == 1.0; });
    if (!binary)
    {
        throw inputError("attention_mask must be 0/1 (1 for a real token, 0 for padding), got "
            + uniqueShown(*attentionMask));
    }
    return {std::move(ids), attentionMask->cast(DType::kINT64)};
}

void validate(Manifest const& manifest, Tensor const& ids, Tensor const& mask, int64_t maxNewTokens)
{
    if (manifest.head != "ForCausalLM")
    {
        throw inputError("generate needs a causal LM export; this one is " + manifest.hfClass + " (" + manifest.task
            + "). Export the checkpoint with --task ForCausalLM");
    }
    if (ids.rank() != 2 || ids.shape()[0] == 0 || ids.shape()[1] == 0)
    {
        throw inputError("input_ids must be (batch, prompt length) with at least one token, got shape "
            + pyShape(ids.shape()));
    }
    if (mask.shape() != ids.shape())
    {
        throw inputError("attention_mask has shape " + pyShape(mask.shape()) + "; it must match input_ids' "
            + pyShape(ids.shape()));
    }
    int64_t const batch = ids.shape()[0], length = ids.shape()[1];
    int64_t const* m = mask.data<int64_t>();
    for (int64_t row = 0; row < batch; ++row)
    {
        for (int64_t i = 1; i < length; ++i)
        {
            if (m[row * length + i] < m[row * length + i - 1])
            {
                throw inputError("the prompts are padded on the right (a 1 before a 0 in attention_mask); pad them on "
                                 "the left for generation, as HF's generate expects");
            }
        }
    }
    for (int64_t row = 0; row < batch; ++row)
    {
        if (m[row * length + length - 1] != 1)
        {
            throw inputError("every prompt needs at least one real token (attention_mask 1)");
        }
    }
    int64_t const limit = manifest.lengthRules.maxLength;
    if (length + maxNewTokens > limit)
    {
        throw inputError("prompt length " + std::to_string(length) + " + max_new_tokens " + std::to_string(maxNewTokens)
            + " exceeds the model's maximum of " + std::to_string(limit)
            + " tokens; shorten the prompt or ask for fewer tokens");
    }
}

//! The model stepped through its exported cache, or recomputing the sequence without one.
class Decoder
{
public:
    explicit Decoder(Session::Impl const& session)
        : mSession(session)
    {
    }

    //! The last position's logits of every row, (batch) x (vocab), in float64.
    std::vector<std::vector<double>> operator()(Tensor const& ids, Tensor const& mask, int64_t fresh)
    {
        NamedTensors inputs;
        auto const& cache = mSession.manifest.cache;
        if (cache)
        {
            inputs = mPast;
            inputs["input_ids"] = sliceAxis(ids, 1, ids.shape()[1] - fresh, fresh);
        }
        else
        {
            inputs["input_ids"] = ids;
        }
        inputs["attention_mask"] = mask;
        NamedTensors out = mSession.run(inputs);
        if (cache)
        {
            mPast.clear();
            for (auto const& entry : cache->entries)
            {
                mPast[entry.input] = std::move(out.at(entry.output));
            }
        }
        Tensor const& logits = out.at("logits"); // (batch, tokens, vocab)
        std::vector<double> const values = logits.toFloat64();
        int64_t const batch = logits.shape()[0], tokens = logits.shape()[1], vocab = logits.shape()[2];
        std::vector<std::vector<double>> rows(static_cast<std::size_t>(batch));
        for (int64_t row = 0; row < batch; ++row)
        {
            auto const begin = values.begin() + (row * tokens + tokens - 1) * vocab;
            rows[static_cast<std::size_t>(row)].assign(begin, begin + vocab);
        }
        return rows;
    }

private:
    Session::Impl const& mSession;
    NamedTensors mPast;
};

//! ids (batch, length) with one more column `tokens`.
Tensor appendColumn(Tensor const& ids, std::vector<int64_t> const& tokens)
{
    int64_t const batch = ids.shape()[0], length = ids.shape()[1];
    Tensor out(DType::kINT64, {batch, length + 1});
    for (int64_t row = 0; row < batch; ++row)
    {
        std::copy_n(ids.data<int64_t>() + row * length, length, out.data<int64_t>() + row * (length + 1));
        out.data<int64_t>()[row * (length + 1) + length] = tokens[static_cast<std::size_t>(row)];
    }
    return out;
}

void checkFinite(std::vector<std::vector<double>> const& rows)
{
    std::vector<int64_t> broken;
    for (std::size_t row = 0; row < rows.size(); ++row)
    {
        if (brokenRow(rows[row]))
            broken.push_back(static_cast<int64_t>(row));
    }
    if (!broken.empty())
    {
        broken.resize(std::min<std::size_t>(broken.size(), 8));
        throw Error(ErrorKind::kNON_FINITE_LOGITS, "the model returned NaN or infinite logits for prompt row(s) "
                + pyIntList(broken) + ": its weights or the export are broken (`kiln parity` checks an export against "
                  "its checkpoint)");
    }
}

GenerationResult decode(Session::Impl const& session, Tensor ids, Tensor mask, ResolvedOptions const& options,
    StepCallback const& onStep)
{
    int64_t const batch = ids.shape()[0], promptLength = ids.shape()[1];
    Decoder decoder(session);
    NumpyGenerator rng(options.seed);
    std::vector<bool> done(static_cast<std::size_t>(batch), false);
    std::vector<int64_t> lengths(static_cast<std::size_t>(batch), 0);
    std::set<int64_t> const eos(options.eosTokenIds.begin(), options.eosTokenIds.end());
    int64_t fresh = promptLength;
    for (int64_t step = 0; step < options.maxNewTokens; ++step)
    {
        std::vector<std::vector<double>> rows = decoder(ids, mask, fresh);
        checkFinite(rows);
        int64_t const length = ids.shape()[1];
        bool const suppressEos = !options.eosTokenIds.empty() && length - promptLength < options.minNewTokens;
        std::vector<int64_t> tokens(static_cast<std::size_t>(batch));
        for (int64_t row = 0; row < batch; ++row)
        {
            std::vector<double>& scores = rows[static_cast<std::size_t>(row)];
            std::vector<int64_t> const sequence(ids.data<int64_t>() + row * length, ids.data<int64_t>() + (row + 1) * length);
            processRow(scores, sequence, options.repetitionPenalty, options.noRepeatNgramSize, suppressEos,
                options.eosTokenIds);
            int64_t token = 0;
            if (options.doSample)
            {
                warpRow(scores, options.temperature, options.topK, options.topP);
                token = sampleRow(scores, rng);
            }
            else
            {
                token = argmaxRow(scores);
            }
            tokens[static_cast<std::size_t>(row)] = done[static_cast<std::size_t>(row)] ? options.padTokenId : token;
        }
        for (std::size_t row = 0; row < tokens.size(); ++row)
        {
            lengths[row] += done[row] ? 0 : 1;
            done[row] = done[row] || eos.count(tokens[row]) > 0;
        }
        ids = appendColumn(ids, tokens);
        mask = appendColumn(mask, std::vector<int64_t>(static_cast<std::size_t>(batch), 1));
        if (onStep)
        {
            onStep(tokens);
        }
        if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }))
        {
            break;
        }
        fresh = 1;
    }
    return GenerationResult{std::move(ids), std::move(lengths)};
}

GenerationResult generateWith(Session::Impl const& session, Tensor const& inputIds, Tensor const* attentionMask,
    Json const& given, StepCallback const& onStep)
{
    auto [ids, mask] = prompt(inputIds, attentionMask);
    int64_t const promptLength = ids.rank() == 2 ? ids.shape()[1] : 0;
    ResolvedOptions const options = resolveOptions(given, session.defaults(), session.config, promptLength);
    validate(session.manifest, ids, mask, options.maxNewTokens);
    if (options.numBeams > 1)
    {
        throw inputError("num_beams=" + std::to_string(options.numBeams)
            + " asks for beam search, which the C++ runtime does not have: use num_beams=1 (greedy or sampling), "
              "or the Python runtime's generate");
    }
    if (!options.stopStrings.empty())
    {
        throw inputError("stop_strings need the export's tokenizer, which the C++ runtime does not load: stop on "
                         "token ids with eos_token_id, or use the Python runtime's generate");
    }
    return decode(session, std::move(ids), std::move(mask), options, onStep);
}

} // namespace

GenerationResult Session::generate(Tensor const& inputIds, Tensor const* attentionMask,
    GenerationOptions const& options, StepCallback const& onStep) const
{
    return generateWith(*mImpl, inputIds, attentionMask, optionsToJson(options), onStep);
}

GenerationResult Session::generate(Tensor const& inputIds, Tensor const* attentionMask, std::string_view optionsJson,
    StepCallback const& onStep) const
{
    Json const given = optionsJson.empty() ? Json::object() : optionsFromJsonText(std::string(optionsJson));
    return generateWith(*mImpl, inputIds, attentionMask, given, onStep);
}

} // namespace tensorkiln
