/*
 * tensorkiln/generation.h: the options and result of Session::generate, with transformers.generate's names and
 * meanings (the Python runtime's runtime/generation_config.py).
 *
 * Every field left unset takes the export's generation_config.json value, then config.json's (special ids), then
 * HF's default, exactly as the Python runtime resolves them; without any length setting 20 new tokens are
 * generated. Each value is checked with the Python runtime's message (a RuntimeInputError naming the option).
 *
 * The same options can come as a JSON object with HF's names ({"max_new_tokens": 32, "do_sample": true, ...}),
 * which is what a service usually receives: Session::generate has an overload for it, and a value of the wrong
 * JSON type gets the message the Python runtime gives for that Python value.
 *
 * Supported: greedy decoding, sampling (temperature, top_k, top_p, seeded: the same seed gives the tokens the
 * Python runtime gives, both drawing from numpy's PCG64 stream), EOS lists, left-padded batches, min_new_tokens,
 * repetition_penalty, no_repeat_ngram_size. Not in C++: beam search (num_beams > 1) and stop_strings (they need
 * the tokenizer): both are refused with a message saying so.
 */
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "tensorkiln/tensor.h"

namespace tensorkiln
{

struct GenerationOptions
{
    std::optional<int64_t> maxNewTokens; //!< new tokens at most (max_new_tokens)
    std::optional<int64_t> maxLength;    //!< HF's total length, prompt included (max_length)
    std::optional<int64_t> minNewTokens; //!< EOS is suppressed until this many new tokens (min_new_tokens)
    std::optional<int64_t> minLength;    //!< the same, counted with the prompt (min_length)
    std::optional<bool> doSample;        //!< sample instead of greedy argmax
    std::optional<double> temperature;   //!< > 0
    std::optional<int64_t> topK;         //!< >= 0; 0 turns the filter off (HF's default 50)
    std::optional<double> topP;          //!< in (0, 1]
    std::optional<int64_t> seed;         //!< >= 0: reproducible sampling (numpy's default_rng(seed) stream)
    std::optional<int64_t> numBeams;     //!< only 1 in C++
    std::optional<double> repetitionPenalty;            //!< > 0; 1 is off
    std::optional<int64_t> noRepeatNgramSize;           //!< >= 0; 0 is off
    std::optional<std::vector<int64_t>> eosTokenId;     //!< one id or several; generation of a row stops at any
    std::optional<int64_t> padTokenId;                  //!< what finished rows emit
    bool ignoreEos{false};                              //!< generate every max_new_tokens token
};

struct GenerationResult
{
    //! (batch, prompt + generated) int64: the prompts followed by their tokens; finished rows continue with pads.
    Tensor sequences;
    //! Per row, how many generated tokens are real (up to and including its EOS).
    std::vector<int64_t> generatedLengths;
};

//! Called once per step with that step's token of every row (batch,), finished rows' pads included.
using StepCallback = std::function<void(std::vector<int64_t> const& tokens)>;

} // namespace tensorkiln
