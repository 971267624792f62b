/*
 * sampling.h: logits processors and sampling for generation: runtime/logits_processors.py in C++, in HF's order
 * (repetition penalty, n-gram ban, min_new_tokens; then temperature, top-k, top-p), with numpy's arithmetic where
 * it decides a token (float64, pairwise summation in the softmax, a sequential cumulative sum, the inverse CDF with
 * numpy's generator), so a seeded run picks the Python runtime's tokens.
 */
#pragma once

#include <cstdint>
#include <vector>

#include "numpyRandom.h"

namespace tensorkiln
{

//! One row's scores after the processors: `sequence` is the row's whole sequence so far (prompt included).
void processRow(std::vector<double>& scores, std::vector<int64_t> const& sequence, double repetitionPenalty,
    int64_t noRepeatNgramSize, bool suppressEos, std::vector<int64_t> const& eos);
//! Temperature, then top-k, then top-p; filtered tokens get -inf.
void warpRow(std::vector<double>& scores, double temperature, int64_t topK, double topP);
//! One token drawn from softmax(scores) by the inverse CDF with one draw of `rng`.
int64_t sampleRow(std::vector<double> const& scores, NumpyGenerator& rng);
//! The first index of the largest score (numpy's argmax).
int64_t argmaxRow(std::vector<double> const& scores);
//! Whether no token can honestly be chosen from these logits (a NaN or +Inf, or only -Inf).
bool brokenRow(std::vector<double> const& scores);

} // namespace tensorkiln
