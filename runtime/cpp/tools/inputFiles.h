/*
 * inputFiles.h: kiln-run's inputs and options from files and flags: named tensors from .npy files, a folder of them
 * or a JSON object of nested lists, and the LoadOptions every command takes.
 */
#pragma once

#include "arguments.h"
#include "tensorkiln/session.h"

#include <string>

namespace tensorkiln::tools
{

tensorkiln::LoadOptions loadOptions(Arguments const& args);
//! --input NAME=FILE.npy (repeatable), --inputs-dir DIR (every NAME.npy in it) and --inputs-json FILE.
NamedTensors readInputs(Arguments const& args);
//! Every NAME.npy in `folder`, by NAME.
NamedTensors readInputsDir(std::string const& folder);
//! {"input_ids": [[5, 6]], ...}: nested lists become arrays as numpy.asarray makes them (ints int64, any float
//! float64, booleans bool).
NamedTensors readInputsJson(std::string const& path);

} // namespace tensorkiln::tools
