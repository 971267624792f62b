/*
 * npy.h: numpy's .npy format (versions 1.0-3.0, little-endian, C order) read into and written from tensorkiln
 * tensors, so kiln-run exchanges arrays with numpy (np.save / np.load) without a Python in between. Checked against
 * numpy's own files by tests/test_cpp_runtime.py (kiln-run reads what np.save wrote; np.load reads what it wrote).
 */
#pragma once

#include <string>

#include "tensorkiln/tensor.h"

namespace tensorkiln::tools
{

//! The array in `path`; a std::runtime_error naming the file for anything but a plain little-endian C-order array of
//! bool, integers or floats.
Tensor readNpy(std::string const& path);
//! Write `tensor` as a version 1.0 .npy file at `path`.
void writeNpy(std::string const& path, Tensor const& tensor);

} // namespace tensorkiln::tools
