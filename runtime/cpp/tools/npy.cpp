/*
 * npy.cpp: see npy.h. The header is the dict numpy writes ({'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }),
 * parsed for those three keys only.
 */
#include "npy.h"

#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <stdexcept>
#include <vector>

namespace tensorkiln::tools
{
namespace
{

char const kMAGIC[] = "\x93NUMPY";
std::size_t const kMAGIC_SIZE = 6;

std::map<std::string, DType> const& descrs()
{
    static std::map<std::string, DType> const table{{"|b1", DType::kBOOL}, {"|i1", DType::kINT8},
        {"|u1", DType::kUINT8}, {"<i2", DType::kINT16}, {"<u2", DType::kUINT16}, {"<i4", DType::kINT32},
        {"<u4", DType::kUINT32}, {"<i8", DType::kINT64}, {"<u8", DType::kUINT64}, {"<f2", DType::kFLOAT16},
        {"<f4", DType::kFLOAT32}, {"<f8", DType::kFLOAT64}};
    return table;
}

std::runtime_error badFile(std::string const& path, std::string const& why)
{
    return std::runtime_error(path + " is not an .npy array kiln-run reads: " + why);
}

std::vector<int64_t> parseShape(std::string const& text)
{
    std::vector<int64_t> shape;
    std::regex const number("[0-9]+");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), number); it != std::sregex_iterator(); ++it)
    {
        shape.push_back(std::stoll(it->str()));
    }
    return shape;
}

//! (dtype, shape) from the header dict.
std::pair<DType, std::vector<int64_t>> parseHeader(std::string const& path, std::string const& header)
{
    std::smatch descr, order, shape;
    if (!std::regex_search(header, descr, std::regex("'descr':\\s*'([^']*)'"))
        || !std::regex_search(header, order, std::regex("'fortran_order':\\s*(True|False)"))
        || !std::regex_search(header, shape, std::regex("'shape':\\s*\\(([0-9,\\s]*)\\)")))
    {
        throw badFile(path, "its header is not numpy's");
    }
    if (order[1] == "True")
    {
        throw badFile(path, "Fortran order (save a C-contiguous array)");
    }
    auto const found = descrs().find(descr[1]);
    if (found == descrs().end())
    {
        throw badFile(path, "element type " + descr[1].str() + " (bool, integers or floats, little-endian)");
    }
    return {found->second, parseShape(shape[1])};
}

std::string headerText(Tensor const& tensor)
{
    std::string descr;
    for (auto const& [name, dtype] : descrs())
    {
        if (dtype == tensor.dtype())
        {
            descr = name;
        }
    }
    std::string shape;
    for (int64_t dim : tensor.shape())
    {
        shape += std::to_string(dim) + ", ";
    }
    if (tensor.rank() > 1)
    {
        shape.resize(shape.size() - 2);
    }
    else if (tensor.rank() == 1)
    {
        shape.resize(shape.size() - 1);
    }
    std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
    std::size_t const unpadded = kMAGIC_SIZE + 2 + 2 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    return header + "\n";
}

} // namespace

Tensor readNpy(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    std::string const bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (bytes.size() < kMAGIC_SIZE + 4 || bytes.compare(0, kMAGIC_SIZE, kMAGIC) != 0)
    {
        throw badFile(path, "no .npy magic");
    }
    auto const byteAt = [&](std::size_t i) { return static_cast<std::size_t>(static_cast<unsigned char>(bytes[i])); };
    int const major = static_cast<int>(byteAt(kMAGIC_SIZE));
    std::size_t const lengthSize = major == 1 ? 2 : 4;
    std::size_t headerSize = 0;
    for (std::size_t i = 0; i < lengthSize; ++i)
    {
        headerSize |= byteAt(kMAGIC_SIZE + 2 + i) << (8 * i);
    }
    std::size_t const start = kMAGIC_SIZE + 2 + lengthSize;
    if (start + headerSize > bytes.size())
    {
        throw badFile(path, "truncated header");
    }
    auto const [dtype, shape] = parseHeader(path, bytes.substr(start, headerSize));
    std::size_t count = 1;
    for (int64_t dim : shape)
    {
        count *= static_cast<std::size_t>(dim);
    }
    std::size_t const dataSize = count * dtypeSize(dtype);
    if (bytes.size() - start - headerSize != dataSize)
    {
        throw badFile(path, "its data is not " + std::to_string(dataSize) + " bytes");
    }
    return Tensor::fromBytes(dtype, shape, bytes.data() + start + headerSize, dataSize);
}

void writeNpy(std::string const& path, Tensor const& tensor)
{
    std::string const header = headerText(tensor);
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(kMAGIC, kMAGIC_SIZE);
    char const version[2] = {1, 0};
    file.write(version, 2);
    char const length[2] = {static_cast<char>(header.size() & 0xff), static_cast<char>(header.size() >> 8)};
    file.write(length, 2);
    file << header;
    file.write(static_cast<char const*>(tensor.raw()), static_cast<std::streamsize>(tensor.byteSize()));
    if (!file)
    {
        throw std::runtime_error("cannot write " + path);
    }
}

} // namespace tensorkiln::tools
