/*
 * onnxExternal.cpp: the protobuf walk of runtime/onnx_external.py (ModelProto -> graphs, functions, training graphs
 * -> nodes -> attributes -> tensors, sparse tensors and subgraphs), with an explicit stack so a deeply nested model
 * cannot exhaust the call stack, over a read-only mmap of the file (the weights are never copied).
 */
#include "onnxExternal.h"

#include "pyFormat.h"
#include "tensorkiln/error.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

namespace tensorkiln
{
namespace
{

enum Kind
{
    kMODEL,
    kGRAPH,
    kFUNCTION,
    kTRAINING,
    kNODE,
    kATTRIBUTE,
    kTENSOR,
    kSPARSE,
    kENTRY,
    kNONE
};

//! Field number -> the kind of the embedded message (onnx.proto's field numbers).
Kind childKind(Kind parent, uint64_t field)
{
    static std::map<Kind, std::map<uint64_t, Kind>> const kCHILDREN = {
        {kMODEL, {{7, kGRAPH}, {20, kTRAINING}, {25, kFUNCTION}}},
        {kTRAINING, {{1, kGRAPH}, {2, kGRAPH}}},
        {kGRAPH, {{1, kNODE}, {5, kTENSOR}, {15, kSPARSE}}},
        {kFUNCTION, {{7, kNODE}, {11, kATTRIBUTE}}},
        {kNODE, {{5, kATTRIBUTE}}},
        {kATTRIBUTE, {{5, kTENSOR}, {6, kGRAPH}, {10, kTENSOR}, {11, kGRAPH}, {22, kSPARSE}, {23, kSPARSE}}},
        {kSPARSE, {{1, kTENSOR}, {2, kTENSOR}}},
        {kTENSOR, {{13, kENTRY}}},
    };
    auto const children = kCHILDREN.find(parent);
    if (children == kCHILDREN.end())
    {
        return kNONE;
    }
    auto const child = children->second.find(field);
    return child == children->second.end() ? kNONE : child->second;
}

uint64_t varint(unsigned char const* data, std::size_t& pos, std::size_t end)
{
    uint64_t value = 0;
    for (unsigned shift = 0;; shift += 7)
    {
        if (pos >= end || shift > 63)
        {
            throw std::out_of_range("truncated");
        }
        unsigned char const byte = data[pos++];
        value |= static_cast<uint64_t>(byte & 0x7f) << shift;
        if (byte < 0x80)
        {
            return value;
        }
    }
}

struct Field
{
    uint64_t number;
    std::size_t begin;
    std::size_t end;
};

//! The length-delimited fields of data[start:end].
std::vector<Field> fields(unsigned char const* data, std::size_t start, std::size_t end)
{
    std::vector<Field> out;
    std::size_t pos = start;
    while (pos < end)
    {
        uint64_t const key = varint(data, pos, end);
        switch (key & 7)
        {
        case 0: varint(data, pos, end); break;
        case 1: pos += 8; break;
        case 5: pos += 4; break;
        case 2:
        {
            uint64_t const size = varint(data, pos, end);
            if (size > end - pos)
            {
                throw std::out_of_range("truncated");
            }
            out.push_back(Field{key >> 3, pos, pos + static_cast<std::size_t>(size)});
            pos += static_cast<std::size_t>(size);
            break;
        }
        default: throw std::out_of_range("not protobuf"); // groups are not in onnx.proto
        }
        if (pos > end)
        {
            throw std::out_of_range("truncated");
        }
    }
    return out;
}

} // namespace

std::vector<std::string> locationsIn(unsigned char const* data, std::size_t size)
{
    std::vector<std::string> found;
    struct Pending
    {
        Kind kind;
        std::size_t begin;
        std::size_t end;
    };
    std::vector<Pending> stack{{kMODEL, 0, size}};
    while (!stack.empty())
    {
        Pending const current = stack.back();
        stack.pop_back();
        for (Field const& field : fields(data, current.begin, current.end))
        {
            Kind const child = childKind(current.kind, field.number);
            if (child == kENTRY)
            {
                std::string key, value;
                for (Field const& part : fields(data, field.begin, field.end))
                {
                    std::string const text(reinterpret_cast<char const*>(data + part.begin), part.end - part.begin);
                    if (part.number == 1)
                        key = text;
                    else if (part.number == 2)
                        value = text;
                }
                if (key == "location")
                {
                    found.push_back(value);
                }
            }
            else if (child != kNONE)
            {
                stack.push_back(Pending{child, field.begin, field.end});
            }
        }
    }
    return found;
}

std::vector<std::string> externalLocations(std::string const& path)
{
    std::string const label = pyRepr(pyPath(path));
    int const fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
    {
        throw Error(ErrorKind::kMANIFEST, label + " cannot be read: " + std::strerror(errno));
    }
    struct stat status
    {
    };
    if (::fstat(fd, &status) != 0 || status.st_size == 0)
    {
        ::close(fd);
        throw Error(ErrorKind::kMANIFEST, label + " is empty, not an ONNX model: re-export it");
    }
    auto const size = static_cast<std::size_t>(status.st_size);
    void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (mapped == MAP_FAILED)
    {
        throw Error(ErrorKind::kMANIFEST, label + " cannot be read: " + std::strerror(errno));
    }
    std::vector<std::string> all;
    bool damaged = false;
    try
    {
        all = locationsIn(static_cast<unsigned char const*>(mapped), size);
    }
    catch (std::out_of_range const&)
    {
        damaged = true;
    }
    ::munmap(mapped, size);
    if (damaged)
    {
        throw Error(ErrorKind::kMANIFEST, label
                + " is not a complete ONNX model (its protobuf ends early or is damaged): re-export it");
    }
    std::vector<std::string> unique;
    std::set<std::string> seen;
    for (auto const& location : all)
    {
        if (seen.insert(location).second)
        {
            unique.push_back(location);
        }
    }
    return unique;
}

} // namespace tensorkiln
