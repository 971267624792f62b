/*
 * sampling.cpp: see sampling.h. numpy's pairwise summation (blocks of 8 accumulators up to 128 elements, halves
 * above) is reproduced because np.sum uses it and the softmax's normaliser feeds the token decision.
 */
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

namespace tensorkiln
{
namespace
{

double const kNEG_INF = -std::numeric_limits<double>::infinity();

double pairwiseSum(double const* a, std::size_t n)
{
    if (n < 8)
    {
        double sum = 0.0;
        for (std::size_t i = 0; i < n; ++i)
            sum += a[i];
        return sum;
    }
    if (n <= 128)
    {
        double r[8];
        for (std::size_t j = 0; j < 8; ++j)
            r[j] = a[j];
        std::size_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (std::size_t j = 0; j < 8; ++j)
                r[j] += a[i + j];
        double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i)
            sum += a[i];
        return sum;
    }
    std::size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwiseSum(a, n2) + pairwiseSum(a + n2, n - n2);
}

//! numpy's add.reduce over a row: the first element, plus the pairwise sum of the rest.
double numpySum(std::vector<double> const& values)
{
    if (values.empty())
        return 0.0;
    return values[0] + pairwiseSum(values.data() + 1, values.size() - 1);
}

std::vector<double> softmax(std::vector<double> const& scores)
{
    double const top = *std::max_element(scores.begin(), scores.end());
    double const shift = std::isfinite(top) ? top : 0.0;
    std::vector<double> out(scores.size());
    for (std::size_t i = 0; i < scores.size(); ++i)
        out[i] = std::exp(scores[i] - shift);
    double const total = numpySum(out);
    for (double& value : out)
        value /= total;
    return out;
}

} // namespace

void processRow(std::vector<double>& scores, std::vector<int64_t> const& sequence, double repetitionPenalty,
    int64_t noRepeatNgramSize, bool suppressEos, std::vector<int64_t> const& eos)
{
    if (repetitionPenalty != 1.0)
    {
        for (int64_t token : std::set<int64_t>(sequence.begin(), sequence.end()))
        {
            double& score = scores[static_cast<std::size_t>(token)];
            score = score < 0 ? score * repetitionPenalty : score / repetitionPenalty;
        }
    }
    auto const size = static_cast<std::size_t>(noRepeatNgramSize);
    if (size > 0 && sequence.size() >= size)
    {
        std::vector<double> banned = scores; // bans apply to the scores before any other ban of this step
        std::size_t const length = sequence.size();
        for (std::size_t start = 0; start + size <= length; ++start)
        {
            if (std::equal(sequence.begin() + static_cast<std::ptrdiff_t>(start),
                    sequence.begin() + static_cast<std::ptrdiff_t>(start + size - 1),
                    sequence.begin() + static_cast<std::ptrdiff_t>(length - size + 1)))
            {
                banned[static_cast<std::size_t>(sequence[start + size - 1])] = kNEG_INF;
            }
        }
        scores = banned;
    }
    if (suppressEos)
    {
        for (int64_t token : eos)
            scores[static_cast<std::size_t>(token)] = kNEG_INF;
    }
}

void warpRow(std::vector<double>& scores, double temperature, int64_t topK, double topP)
{
    if (temperature != 1.0)
    {
        for (double& score : scores)
            score /= temperature;
    }
    std::size_t const vocab = scores.size();
    if (topK > 0 && static_cast<std::size_t>(topK) < vocab)
    {
        std::vector<double> sorted = scores;
        auto const k = static_cast<std::size_t>(topK);
        std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(vocab - k), sorted.end());
        double const kth = sorted[vocab - k];
        for (double& score : scores)
            score = score < kth ? kNEG_INF : score;
    }
    if (topP < 1.0)
    {
        std::vector<std::size_t> order(vocab);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
        std::vector<double> ascending(vocab);
        for (std::size_t i = 0; i < vocab; ++i)
            ascending[i] = scores[order[i]];
        std::vector<double> const probabilities = softmax(ascending);
        double cumulative = 0.0;
        for (std::size_t i = 0; i < vocab; ++i)
        {
            cumulative += probabilities[i];
            bool const drop = cumulative <= 1 - topP && i + 1 < vocab; // the top token always stays
            scores[order[i]] = drop ? kNEG_INF : ascending[i];
        }
    }
}

int64_t sampleRow(std::vector<double> const& scores, NumpyGenerator& rng)
{
    std::vector<double> const probabilities = softmax(scores);
    std::vector<double> cumulative(probabilities.size());
    std::partial_sum(probabilities.begin(), probabilities.end(), cumulative.begin());
    double const draw = rng.random() * cumulative.back();
    auto const below = std::count_if(cumulative.begin(), cumulative.end(), [&](double c) { return c <= draw; });
    return std::min<int64_t>(below, static_cast<int64_t>(scores.size()) - 1);
}

int64_t argmaxRow(std::vector<double> const& scores)
{
    return std::max_element(scores.begin(), scores.end()) - scores.begin();
}

bool brokenRow(std::vector<double> const& scores)
{
    bool allNegInf = true;
    for (double score : scores)
    {
        if (std::isnan(score) || score == std::numeric_limits<double>::infinity())
            return true;
        allNegInf = allNegInf && score == kNEG_INF;
    }
    return allNegInf;
}

} // namespace tensorkiln
