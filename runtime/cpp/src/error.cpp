/*
 * error.cpp: the Python class name of each error kind (runtime/errors.py, runtime/logits_processors.py).
 */
#include "tensorkiln/error.h"

namespace tensorkiln
{

char const* Error::typeName() const noexcept
{
    switch (mKind)
    {
    case ErrorKind::kMANIFEST: return "ManifestError";
    case ErrorKind::kRUNTIME_INPUT: return "RuntimeInputError";
    case ErrorKind::kBACKEND_UNAVAILABLE: return "BackendUnavailableError";
    case ErrorKind::kUSAGE: return "UsageError";
    case ErrorKind::kNON_FINITE_LOGITS: return "NonFiniteLogitsError";
    }
    return "KilnError";
}

} // namespace tensorkiln
