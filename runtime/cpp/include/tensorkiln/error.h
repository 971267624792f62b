/*
 * tensorkiln/error.h: the errors the C++ runtime throws, the Python runtime's error types (runtime/errors.py) one
 * for one.
 *
 * Every error meant for a person is a tensorkiln::Error whose kind() names the Python class (ManifestError,
 * RuntimeInputError, BackendUnavailableError, UsageError, NonFiniteLogitsError) and whose what() is the Python
 * runtime's message for the same problem, word for word, so a service can show it as it is. exitCode() is the
 * `kiln` exit status: 2 for a request that cannot be carried out as given, 1 for a check that ran and failed.
 * Anything else thrown (std::bad_alloc, ...) is a bug or the machine, not the caller's input.
 */
#pragma once

#include <stdexcept>
#include <string>

namespace tensorkiln
{

enum class ErrorKind
{
    kMANIFEST,            //!< the export folder, its manifest or its files (ManifestError)
    kRUNTIME_INPUT,       //!< inputs or generation options that cannot be run (RuntimeInputError)
    kBACKEND_UNAVAILABLE, //!< ONNX Runtime, TensorRT or the native kernels are missing or refuse (BackendUnavailableError)
    kUSAGE,               //!< an option that cannot be used as given (UsageError)
    kNON_FINITE_LOGITS,   //!< the model returned NaN/Inf logits during generation (NonFiniteLogitsError, exit 1)
};

class Error : public std::runtime_error
{
public:
    Error(ErrorKind kind, std::string const& message)
        : std::runtime_error(message)
        , mKind(kind)
    {
    }

    ErrorKind kind() const noexcept
    {
        return mKind;
    }

    //! The Python class name of this error, e.g. "ManifestError".
    char const* typeName() const noexcept;

    //! The `kiln` exit status: 1 for NonFiniteLogitsError (a check failed), 2 for everything else.
    int exitCode() const noexcept
    {
        return mKind == ErrorKind::kNON_FINITE_LOGITS ? 1 : 2;
    }

private:
    ErrorKind mKind;
};

} // namespace tensorkiln
