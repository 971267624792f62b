/*
 * commands.h: kiln-run's commands, each over one loaded tensorkiln::Session (see kilnRun.cpp for the usage).
 */
#pragma once

#include "arguments.h"

namespace tensorkiln::tools
{

//! Each returns the exit status; errors are thrown (tensorkiln::Error, std::invalid_argument for usage, and
//! std::runtime_error for files kiln-run cannot read or write) and printed by main.
int runCommand(Arguments const& args);
int generateCommand(Arguments const& args);
int stressCommand(Arguments const& args);
int infoCommand(Arguments const& args);

} // namespace tensorkiln::tools
