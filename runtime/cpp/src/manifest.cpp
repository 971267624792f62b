/*
 * manifest.cpp: runtime/manifest.py's from_dict in C++: the keys are read in the Python order, so the first bad key
 * of a manifest is the one both runtimes name, with the same message.
 */
#include "manifest.h"

#include "paths.h"
#include "pyFormat.h"

#include <algorithm>

namespace tensorkiln
{
namespace
{

std::vector<std::string> const kDTYPES{"int64", "int32", "float32", "float16", "bool"};
std::vector<std::string> const kPRECISIONS{"fp32", "fp16", "int8"};

std::string tupleRepr(std::vector<std::string> const& items)
{
    return "(" + joinRepr(items) + (items.size() == 1 ? ",)" : ")");
}

bool contains(std::vector<std::string> const& items, std::string const& item)
{
    return std::find(items.begin(), items.end(), item) != items.end();
}

std::vector<Dim> dims(Fields const& fields, std::string const& key)
{
    Json const& value = fields.get(key);
    bool ok = value.is_array();
    if (ok)
    {
        for (auto const& dim : value)
        {
            ok = ok && (dim.is_string() || (dim.is_number_integer() && dim.get<int64_t>() >= 0));
        }
    }
    if (!ok)
    {
        throw fields.fail(key, "a list of dims (sizes >= 0 or symbolic names)", value);
    }
    std::vector<Dim> out;
    for (auto const& dim : value)
    {
        out.push_back(dim.is_string() ? Dim{dim.get<std::string>()} : Dim{dim.get<int64_t>()});
    }
    return out;
}

TensorInfo tensor(Fields const& t)
{
    TensorInfo info;
    info.name = t.string("name");
    info.dtype = t.string("dtype");
    info.dims = dims(t, "dims");
    info.tokenAxis = t.optionalInteger("token_axis", 0);
    if (!contains(kDTYPES, info.dtype))
    {
        throw Error(ErrorKind::kMANIFEST, "manifest tensor " + pyRepr(info.name) + " has dtype " + pyRepr(info.dtype)
                + "; expected one of " + tupleRepr(kDTYPES));
    }
    return info;
}

LengthRules lengthRules(Fields const& r)
{
    LengthRules rules;
    rules.maxLength = r.integer("max_length", 1);
    rules.fixedLength = r.optionalInteger("fixed_length", 1);
    rules.padTokenId = r.optionalInteger("pad_token_id", 0);
    rules.padMultiple = r.optionalInteger("pad_multiple", 1);
    rules.note = r.string("note", "");
    return rules;
}

std::optional<CacheLayout> cache(std::optional<Fields> const& c)
{
    if (!c)
    {
        return std::nullopt;
    }
    CacheLayout layout;
    for (Fields const& e : c->objects("entries"))
    {
        CacheEntry entry;
        entry.layer = e.integer("layer", 0);
        entry.kind = e.string("kind");
        entry.input = e.string("input");
        entry.output = e.string("output");
        entry.dims = dims(e, "dims");
        entry.sequenceAxis = e.optionalInteger("sequence_axis", 0);
        layout.entries.push_back(entry);
    }
    layout.pastDim = c->string("past_dim"); // after the entries, as the Python reader reads them
    layout.positionIds = c->optionalString("position_ids");
    c->string("note", "");
    return layout;
}

//! The verification record: checked for its types, as the Python reader checks it; returns its status.
std::string verification(Fields const& v)
{
    for (Fields const& c : v.objects("checks"))
    {
        Json const& shape = c.get("shape");
        bool ok = shape.is_object();
        if (ok)
        {
            for (auto const& item : shape.items())
            {
                ok = ok && item.value().is_number_integer();
            }
        }
        if (!ok)
        {
            throw c.fail("shape", "an object of sizes", shape);
        }
        std::optional<Fields> const half = c.optionalObject("torch_half_max_abs");
        for (Fields const& e : c.objects("errors"))
        {
            e.string("output");
            e.number("max_abs");
            e.number("nmse");
            e.number("cosine");
        }
        if (half)
        {
            for (auto const& item : half->data().items())
            {
                half->number(item.key());
            }
        }
    }
    std::string status = v.string("status");
    if (status == "skipped") // format 1's name for unverified
    {
        status = "unverified";
    }
    std::optional<Fields> const agreement = v.optionalObject("agreement");
    v.string("rule");
    v.string("provider");
    v.string("reason", "");
    v.string("oracle", "");
    if (Json const* atol = v.find("atol"); atol != nullptr && !atol->is_null())
    {
        v.number("atol");
    }
    if (agreement)
    {
        for (auto const& item : agreement->data().items())
        {
            Fields const inner = agreement->object(item.key());
            for (auto const& number : inner.data().items())
            {
                inner.number(number.key());
            }
        }
    }
    return status;
}

//! The int8 record, checked; its Python repr for the one message that shows it ("None" when absent).
std::string quantization(std::optional<Fields> const& q)
{
    if (!q)
    {
        return "None";
    }
    Fields const counts = q->object("quantized");
    Json const& kept = q->get("kept_fp32");
    bool ok = kept.is_array();
    if (ok)
    {
        for (auto const& item : kept)
        {
            ok = ok && item.is_string();
        }
    }
    if (!ok)
    {
        throw q->fail("kept_fp32", "a list of strings", kept);
    }
    std::string repr = "Quantization(method=" + pyRepr(q->string("method"));
    repr += ", tool=" + pyRepr(q->string("tool"));
    repr += ", tool_version=" + pyRepr(q->string("tool_version"));
    repr += ", weights=" + pyRepr(q->string("weights"));
    repr += ", activations=" + pyRepr(q->string("activations"));
    std::string quantized = "{";
    for (auto const& item : counts.data().items())
    {
        quantized += (quantized.size() > 1 ? ", " : "") + pyRepr(item.key()) + ": "
            + std::to_string(counts.integer(item.key(), 0));
    }
    std::vector<std::string> keptNames;
    for (auto const& item : kept)
    {
        keptNames.push_back(item.get<std::string>());
    }
    repr += ", quantized=" + quantized + "}, kept_fp32=" + tupleRepr(keptNames);
    return repr + ", source_sha256=" + pyRepr(q->string("source_sha256")) + ")";
}

struct TextSide
{
    std::optional<std::string> tokenizer;
    std::vector<std::string> files;
    std::optional<std::string> generationConfig;
};

TextSide textFiles(std::optional<Fields> const& d)
{
    TextSide text;
    if (!d)
    {
        return text;
    }
    if (Json const* files = d->find("files"); files != nullptr)
    {
        bool ok = files->is_array();
        if (ok)
        {
            for (auto const& item : *files)
            {
                ok = ok && item.is_string();
            }
        }
        if (!ok)
        {
            throw d->fail("files", "a list of file names", *files);
        }
        for (auto const& item : *files)
        {
            text.files.push_back(item.get<std::string>());
        }
    }
    text.tokenizer = d->optionalString("tokenizer");
    text.generationConfig = d->optionalString("generation_config");
    return text;
}

void checkNames(Manifest const& manifest, std::string const& source)
{
    for (auto const& [name, digest] : manifest.files)
    {
        if (checkName(name, source, "'files' entry") != name)
        {
            throw Error(ErrorKind::kMANIFEST, source + ": 'files' entry " + pyRepr(name) + " is not in normal form ("
                    + pyRepr(normalizeName(name)) + "); re-export the model");
        }
    }
    for (auto const& [key, name] : {std::pair<std::string, std::string>{"model_file", manifest.modelFile},
             std::pair<std::string, std::string>{"config_file", manifest.configFile}})
    {
        if (checkName(name, source, "key " + pyRepr(key)) != name || !manifest.hasFile(name))
        {
            std::string const what = key == "model_file" ? "model file" : "config file";
            throw Error(ErrorKind::kMANIFEST, source + " key 'files' does not list the " + what + " " + pyRepr(name)
                    + " (key " + pyRepr(key) + "), so its sha256 cannot be checked: re-export the model");
        }
    }
    for (auto const& [name, digest] : manifest.files)
    {
        bool const hex = digest.size() == 64
            && std::all_of(digest.begin(), digest.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
        if (!hex)
        {
            throw Error(ErrorKind::kMANIFEST, source + " key 'files' holds " + pyRepr(pyPrefix(digest, 80))
                    + ", not a sha256 in hex: re-export the model");
        }
    }
}

} // namespace

Manifest manifestFromJson(Json const& data, std::string const& source)
{
    Fields const d(data, source, ErrorKind::kMANIFEST);
    Json const* version = d.find("format_version");
    if (version == nullptr || !version->is_number_integer())
    {
        throw Error(ErrorKind::kMANIFEST, source + " key 'format_version' is missing or not an integer");
    }
    if (version->get<int64_t>() > kMANIFEST_FORMAT_VERSION)
    {
        throw Error(ErrorKind::kMANIFEST, source + " format_version " + std::to_string(version->get<int64_t>())
                + " is newer than this reader's (" + std::to_string(kMANIFEST_FORMAT_VERSION)
                + "); upgrade tensorkiln to read it");
    }
    Manifest m;
    m.formatVersion = static_cast<int>(version->get<int64_t>());
    m.modelType = d.string("model_type");
    m.task = d.string("task");
    m.head = d.string("head");
    m.hfClass = d.string("hf_class");
    m.opset = d.integer("opset", 1);
    m.precision = d.string("precision");
    for (Fields const& t : d.objects("inputs"))
        m.inputs.push_back(tensor(t));
    for (Fields const& t : d.objects("outputs"))
        m.outputs.push_back(tensor(t));
    m.lengthRules = lengthRules(d.object("length_rules"));
    for (Fields const& n : d.objects("custom_nodes"))
        m.customNodes.push_back(CustomNode{n.string("domain"), n.string("op_type"), n.integer("count", 0)});
    m.cache = cache(d.optionalObject("cache"));
    std::string const status = verification(d.object("verification"));
    m.files = d.strings("files");
    m.modelFile = d.string("model_file", "model.onnx");
    m.configFile = d.string("config_file", "config.json");
    d.strings("producer", true);
    std::string const quantized = quantization(d.optionalObject("quantization"));
    TextSide const text = textFiles(d.optionalObject("text"));
    m.generationConfig = text.generationConfig;

    if (status != "passed" && status != "unverified")
    {
        throw Error(ErrorKind::kMANIFEST, source + " verification status " + pyRepr(status)
                + " is not one of 'passed', 'unverified'");
    }
    if (!contains(kPRECISIONS, m.precision))
    {
        throw Error(ErrorKind::kMANIFEST, source + " key 'precision' is " + pyRepr(m.precision) + "; expected one of "
                + tupleRepr(kPRECISIONS));
    }
    checkNames(m, source);
    std::vector<std::string> named = text.files;
    if (text.generationConfig)
        named.push_back(*text.generationConfig);
    for (auto const& name : named)
    {
        if (!m.hasFile(name))
        {
            throw Error(ErrorKind::kMANIFEST, source + " key 'text' names " + pyRepr(name)
                    + ", which 'files' does not list: re-export the model");
        }
    }
    if (text.tokenizer && !contains(text.files, *text.tokenizer))
    {
        throw Error(ErrorKind::kMANIFEST, source + " key 'text.tokenizer' names " + pyRepr(*text.tokenizer)
                + ", which 'text.files' does not list: re-export the model");
    }
    if ((m.precision == "int8") != (quantized != "None"))
    {
        throw Error(ErrorKind::kMANIFEST, source
                + " key 'quantization' must be present exactly for int8 exports; this one is " + m.precision
                + " with quantization " + quantized);
    }
    return m;
}

TensorInfo const& Manifest::input(std::string const& name) const
{
    for (auto const& info : inputs)
    {
        if (info.name == name)
        {
            return info;
        }
    }
    throw std::out_of_range("the model has no input " + pyRepr(name));
}

bool Manifest::hasInput(std::string const& name) const
{
    return std::any_of(inputs.begin(), inputs.end(), [&](TensorInfo const& info) { return info.name == name; });
}

bool Manifest::hasFile(std::string const& name) const
{
    return fileDigest(name) != nullptr;
}

std::string const* Manifest::fileDigest(std::string const& name) const
{
    for (auto const& [file, digest] : files)
    {
        if (file == name)
        {
            return &digest;
        }
    }
    return nullptr;
}

int64_t resolveDim(std::string const& dim, std::map<std::string, int64_t> const& sizes)
{
    int64_t total = 0;
    std::size_t start = 0;
    while (true)
    {
        std::size_t const end = dim.find('+', start);
        std::string part = dim.substr(start, end == std::string::npos ? std::string::npos : end - start);
        part.erase(0, part.find_first_not_of(" \t\n\r\f\v"));
        part.erase(part.find_last_not_of(" \t\n\r\f\v") + 1);
        auto const found = sizes.find(part);
        if (found == sizes.end())
        {
            std::vector<std::string> known;
            for (auto const& [name, size] : sizes)
                known.push_back(name);
            throw Error(ErrorKind::kMANIFEST, "dim " + pyRepr(dim) + " needs a size for " + pyRepr(part) + "; known: "
                    + pyStringList(known));
        }
        total += found->second;
        if (end == std::string::npos)
        {
            return total;
        }
        start = end + 1;
    }
}

std::string dimText(Dim const& dim)
{
    return std::holds_alternative<int64_t>(dim) ? std::to_string(std::get<int64_t>(dim)) : std::get<std::string>(dim);
}

} // namespace tensorkiln
