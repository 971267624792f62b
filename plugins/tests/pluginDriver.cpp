/*
 * pluginDriver.cpp: load libtensorkiln_plugins.so the way TensorRT's loadLibrary() does (dlopen, then the C entry
 * points getCreators() and setLoggerFinder()) and exercise every creator and plugin through the TensorRT ABI,
 * checking them against the node contract (common/nodeContract.h, generated from runtime/contract.py):
 *
 *   creator name / version / namespace; field names in the contract's order; createPlugin from sample fields;
 *   the three capability interfaces; getNbOutputs; getOutputDataTypes and supportsFormatCombination for every
 *   x dtype; getOutputShapes (through a stand-in IExprBuilder) for static and dynamic extents;
 *   getFieldsToSerialize -> createPlugin(kRUNTIME) round trip; clone; invalid fields give nullptr, an error in the
 *   log and no exception.
 *
 * Only header-inline TensorRT code and the library's own virtual functions run here, so the driver needs no
 * libnvinfer and no GPU. Usage: tensorkiln_plugin_driver path/to/libtensorkiln_plugins.so
 */
#include "common/nodeContract.h"

#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace
{

using namespace nvinfer1;
namespace contract = tensorkiln::plugin::contract;

int gFailures = 0;

void check(bool ok, std::string const& what)
{
    std::printf("  [%s] %s\n", ok ? " ok " : "FAIL", what.c_str());
    gFailures += ok ? 0 : 1;
}

class DriverLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            ++mErrors;
            std::printf("    (log) %s\n", message);
        }
    }
    int mErrors{0};
};

class DriverLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &mLogger;
    }
    DriverLogger mLogger;
};

//! A dimension expression that is a known constant or unknown (a dynamic extent at build time).
class Expr : public IDimensionExpr
{
public:
    explicit Expr(int64_t value)
        : mBody(value)
    {
        mImpl = &mBody;
    }
    int64_t value() const
    {
        return mBody.mValue;
    }

private:
    struct Body : apiv::VDimensionExpr
    {
        explicit Body(int64_t value)
            : mValue(value)
        {
        }
        bool isConstant() const override
        {
            return mValue >= 0;
        }
        int64_t getConstantValue() const override
        {
            return mValue;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        int64_t mValue;
    };
    Body mBody;
};

//! Enough of IExprBuilder for shape inference over constants (unknown operands give an unknown result).
class ExprBuilder : public IExprBuilder
{
public:
    ExprBuilder()
    {
        mImpl = &mBody;
    }
    Expr const* make(int64_t value)
    {
        return &mBody.mExprs.emplace_back(value);
    }

private:
    struct Body : apiv::VExprBuilder
    {
        IDimensionExpr const* constant(int64_t value) override
        {
            return &mExprs.emplace_back(value);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            if (!first.isConstant() || !second.isConstant())
            {
                return &mExprs.emplace_back(-1);
            }
            int64_t const a = first.getConstantValue();
            int64_t const b = second.getConstantValue();
            int64_t result = -1;
            switch (op)
            {
            case DimensionOperation::kSUM: result = a + b; break;
            case DimensionOperation::kPROD: result = a * b; break;
            case DimensionOperation::kMAX: result = a > b ? a : b; break;
            case DimensionOperation::kMIN: result = a < b ? a : b; break;
            case DimensionOperation::kSUB: result = a - b; break;
            case DimensionOperation::kEQUAL: result = a == b ? 1 : 0; break;
            case DimensionOperation::kLESS: result = a < b ? 1 : 0; break;
            case DimensionOperation::kFLOOR_DIV:
                result = b != 0 ? a / b - ((a % b != 0 && (a < 0) != (b < 0)) ? 1 : 0) : -1;
                break;
            case DimensionOperation::kCEIL_DIV: result = b != 0 ? (a + b - 1) / b : -1; break;
            }
            return &mExprs.emplace_back(result);
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return &mExprs.emplace_back(-1);
        }
        std::deque<Expr> mExprs;
    };
    Body mBody;
};

//! A field value the driver owns.
struct SampleField
{
    std::string name;
    PluginFieldType type;
    std::vector<char> bytes;
    int32_t length;
};

template <typename T>
SampleField scalarField(std::string name, PluginFieldType type, T value)
{
    std::vector<char> bytes(sizeof(T));
    std::memcpy(bytes.data(), &value, sizeof(T));
    return SampleField{std::move(name), type, std::move(bytes), 1};
}

SampleField stringField(std::string name, std::string value)
{
    std::vector<char> bytes(value.begin(), value.end());
    auto const length = static_cast<int32_t>(bytes.size());
    return SampleField{std::move(name), PluginFieldType::kCHAR, std::move(bytes), length};
}

struct FieldSet
{
    explicit FieldSet(std::vector<SampleField> samples)
        : mSamples(std::move(samples))
    {
        for (SampleField const& s : mSamples)
        {
            mFields.emplace_back(s.name.c_str(), s.bytes.data(), s.type, s.length);
        }
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    std::vector<SampleField> mSamples;
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

//! What the driver knows about each op: valid fields, invalid fields, and input shapes with expected outputs.
struct OpSample
{
    std::vector<SampleField> fields;
    std::vector<SampleField> badFields;
    std::vector<std::vector<int64_t>> inputs;
    std::vector<std::vector<int64_t>> outputs;
    std::vector<std::vector<int64_t>> dynamicInputs; // -1 = dynamic
    std::vector<std::vector<int64_t>> dynamicOutputs;
    std::vector<std::vector<int64_t>> badInputs; // a shape the contract rejects
};

std::map<std::string, OpSample> samples()
{
    std::map<std::string, OpSample> all;
    // B=2, L=100, D=8, N=16, bidirectional: K=16.
    all[contract::MegaEma::kOP_TYPE] = OpSample{
        {scalarField<int32_t>("bidirectional", PluginFieldType::kINT32, 1),
            scalarField<int32_t>("truncation", PluginFieldType::kINT32, 8)},
        {scalarField<int32_t>("bidirectional", PluginFieldType::kINT32, 2)},
        {{2, 100, 8}, {16, 16, 1}, {16, 16, 1}, {16, 16, 1}, {16, 16}},
        {{2, 100, 8}, {2, 8, 16}},
        {{-1, -1, 8}, {16, 16, 1}, {16, 16, 1}, {16, 16, 1}, {16, 16}},
        {{-1, -1, 8}, {-1, 8, 16}},
        {{2, 100, 16}, {16, 16, 1}, {16, 16, 1}, {16, 16, 1}, {16, 16}},
    };
    all[contract::MraAttention::kOP_TYPE] = OpSample{
        {scalarField<int32_t>("num_blocks", PluginFieldType::kINT32, 4),
            scalarField<float>("scale", PluginFieldType::kFLOAT32, 0.125F), stringField("approx_mode", "full")},
        {scalarField<int32_t>("num_blocks", PluginFieldType::kINT32, 4),
            scalarField<float>("scale", PluginFieldType::kFLOAT32, 0.125F), stringField("approx_mode", "dense")},
        {{2, 4, 100, 32}, {2, 4, 100, 32}, {2, 4, 100, 32}, {2, 100}},
        {{2, 4, 100, 32}},
        {{-1, 4, -1, 32}, {-1, 4, -1, 32}, {-1, 4, -1, 32}, {-1, -1}},
        {{-1, 4, -1, 32}},
        {{2, 4, 100, 32}, {2, 4, 99, 32}, {2, 4, 100, 32}, {2, 100}},
    };
    return all;
}

struct ContractView
{
    char const* version;
    int32_t nbInputs;
    int32_t nbOutputs;
    std::vector<char const*> attributes;
    std::vector<int32_t> outputSameAs;
};

std::map<std::string, ContractView> contracts()
{
    using M = contract::MegaEma;
    using R = contract::MraAttention;
    return {
        {M::kOP_TYPE,
            {M::kPLUGIN_VERSION, M::kNB_REQUIRED_INPUTS, M::kNB_OUTPUTS,
                {M::kATTRIBUTE_NAMES.begin(), M::kATTRIBUTE_NAMES.end()},
                {M::kOUTPUT_SAME_DTYPE_AS.begin(), M::kOUTPUT_SAME_DTYPE_AS.end()}}},
        {R::kOP_TYPE,
            {R::kPLUGIN_VERSION, R::kNB_REQUIRED_INPUTS, R::kNB_OUTPUTS,
                {R::kATTRIBUTE_NAMES.begin(), R::kATTRIBUTE_NAMES.end()},
                {R::kOUTPUT_SAME_DTYPE_AS.begin(), R::kOUTPUT_SAME_DTYPE_AS.end()}}},
    };
}

std::string shapeText(std::vector<int64_t> const& dims)
{
    std::string text = "(";
    for (std::size_t i = 0; i < dims.size(); ++i)
    {
        text += (i ? ", " : "") + (dims[i] < 0 ? std::string("?") : std::to_string(dims[i]));
    }
    return text + ")";
}

//! Run getOutputShapes on constant (or unknown) input extents; returns false when the plugin reports an error.
bool outputShapes(IPluginV3OneBuild& build, std::vector<std::vector<int64_t>> const& inputs, int32_t nbOutputs,
    std::vector<std::vector<int64_t>>& result)
{
    ExprBuilder builder;
    std::vector<DimsExprs> in(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i)
    {
        in[i].nbDims = static_cast<int32_t>(inputs[i].size());
        for (std::size_t a = 0; a < inputs[i].size(); ++a)
        {
            in[i].d[a] = builder.make(inputs[i][a]);
        }
    }
    std::vector<DimsExprs> out(static_cast<std::size_t>(nbOutputs));
    int32_t const status = build.getOutputShapes(
        in.data(), static_cast<int32_t>(in.size()), nullptr, 0, out.data(), nbOutputs, builder);
    result.clear();
    for (DimsExprs const& dims : out)
    {
        std::vector<int64_t> extents;
        for (int32_t a = 0; a < dims.nbDims; ++a)
        {
            extents.push_back(dims.d[a]->isConstant() ? dims.d[a]->getConstantValue() : -1);
        }
        result.push_back(extents);
    }
    return status == 0;
}

void exercise(IPluginCreatorV3One& creator, DriverLogger& logger)
{
    std::string const name = creator.getPluginName();
    std::printf("%s (version %s, namespace \"%s\")\n", name.c_str(), creator.getPluginVersion(),
        creator.getPluginNamespace());
    std::map<std::string, ContractView> const views = contracts();
    auto const view = views.find(name);
    check(view != views.end(), "op_type is in the node contract");
    if (view == views.end())
    {
        return;
    }
    ContractView const& c = view->second;
    check(std::strcmp(creator.getPluginVersion(), c.version) == 0, std::string("plugin_version == ") + c.version);
    check(std::strcmp(creator.getPluginNamespace(), contract::kPLUGIN_NAMESPACE) == 0, "namespace is empty");

    PluginFieldCollection const* names = creator.getFieldNames();
    std::string listed;
    bool sameFields = names != nullptr && names->nbFields == static_cast<int32_t>(c.attributes.size());
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i)
    {
        listed += (i ? ", " : "") + std::string(names->fields[i].name);
        sameFields = sameFields && i < static_cast<int32_t>(c.attributes.size())
            && std::strcmp(names->fields[i].name, c.attributes[static_cast<std::size_t>(i)]) == 0;
    }
    check(sameFields, "fields [" + listed + "] == the contract's attributes, in order");

    OpSample const sample = samples().at(name);
    FieldSet fields(sample.fields);
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin(name.c_str(), &fields.mCollection, TensorRTPhase::kBUILD));
    check(plugin != nullptr, "createPlugin(kBUILD) from sample fields");
    if (!plugin)
    {
        return;
    }
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(core && build && runtime, "kCORE, kBUILD and kRUNTIME capabilities");
    if (!(core && build && runtime))
    {
        return;
    }
    check(name == core->getPluginName() && std::strcmp(core->getPluginVersion(), c.version) == 0,
        "core name/version match the creator");
    check(build->getNbOutputs() == c.nbOutputs, "getNbOutputs == " + std::to_string(c.nbOutputs));

    int32_t const nbInputs = static_cast<int32_t>(sample.inputs.size());
    for (DataType x : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        std::vector<DataType> inputTypes(static_cast<std::size_t>(nbInputs), x);
        std::vector<DataType> outputTypes(static_cast<std::size_t>(c.nbOutputs), DataType::kINT32);
        int32_t const status
            = build->getOutputDataTypes(outputTypes.data(), c.nbOutputs, inputTypes.data(), nbInputs);
        bool typesOk = status == 0;
        for (int32_t o = 0; o < c.nbOutputs; ++o)
        {
            int32_t const sameAs = c.outputSameAs[static_cast<std::size_t>(o)];
            typesOk = typesOk && (sameAs < 0 || outputTypes[static_cast<std::size_t>(o)] == x);
        }
        std::vector<DynamicPluginTensorDesc> io(static_cast<std::size_t>(nbInputs + c.nbOutputs));
        bool formatsOk = true;
        for (int32_t pos = 0; pos < nbInputs + c.nbOutputs; ++pos)
        {
            io[static_cast<std::size_t>(pos)].desc.type = x;
            io[static_cast<std::size_t>(pos)].desc.format = TensorFormat::kLINEAR;
            formatsOk = formatsOk && build->supportsFormatCombination(pos, io.data(), nbInputs, c.nbOutputs);
        }
        io[0].desc.format = TensorFormat::kCHW32;
        formatsOk = formatsOk && !build->supportsFormatCombination(0, io.data(), nbInputs, c.nbOutputs);
        io[0].desc.format = TensorFormat::kLINEAR;
        io[0].desc.type = DataType::kINT32;
        formatsOk = formatsOk && !build->supportsFormatCombination(0, io.data(), nbInputs, c.nbOutputs);
        char const* typeName = x == DataType::kFLOAT ? "fp32" : (x == DataType::kHALF ? "fp16" : "bf16");
        check(typesOk, std::string("getOutputDataTypes(") + typeName + ") follows same_dtype_as");
        check(formatsOk, std::string("supportsFormatCombination(") + typeName + ": linear yes, CHW32/int32 no)");
    }

    std::vector<std::vector<int64_t>> shapes;
    bool ok = outputShapes(*build, sample.inputs, c.nbOutputs, shapes) && shapes == sample.outputs;
    check(ok, "getOutputShapes, static: " + (shapes.empty() ? std::string("-") : shapeText(shapes[0])) + " ...");
    ok = outputShapes(*build, sample.dynamicInputs, c.nbOutputs, shapes) && shapes == sample.dynamicOutputs;
    check(ok, "getOutputShapes, dynamic: " + (shapes.empty() ? std::string("-") : shapeText(shapes[0])) + " ...");
    int const errorsBefore = logger.mErrors;
    bool shapeRejected = !outputShapes(*build, sample.badInputs, c.nbOutputs, shapes);
    if (!shapeRejected)
    {
        // A plugin may defer shape checks to configurePlugin(): give it the same extents there.
        std::vector<DynamicPluginTensorDesc> in(sample.badInputs.size());
        for (std::size_t i = 0; i < in.size(); ++i)
        {
            in[i].desc.type = DataType::kFLOAT;
            in[i].desc.format = TensorFormat::kLINEAR;
            in[i].desc.dims.nbDims = static_cast<int32_t>(sample.badInputs[i].size());
            for (std::size_t a = 0; a < sample.badInputs[i].size(); ++a)
            {
                in[i].desc.dims.d[a] = sample.badInputs[i][a];
            }
            in[i].min = in[i].desc.dims;
            in[i].opt = in[i].desc.dims;
            in[i].max = in[i].desc.dims;
        }
        std::vector<DynamicPluginTensorDesc> out(static_cast<std::size_t>(c.nbOutputs));
        shapeRejected = build->configurePlugin(in.data(), nbInputs, out.data(), c.nbOutputs) != 0;
    }
    check(shapeRejected && logger.mErrors > errorsBefore,
        "a contract violation is rejected by getOutputShapes or "
        "configurePlugin, with a log line");

    // Runtime path: onShapeChange() with the sample shapes, then enqueue() with null buffers, which every launcher
    // must refuse with an error status (no exception, no launch), with or without a GPU.
    std::vector<PluginTensorDesc> inDescs(sample.inputs.size());
    for (std::size_t i = 0; i < inDescs.size(); ++i)
    {
        inDescs[i].type = DataType::kFLOAT;
        inDescs[i].format = TensorFormat::kLINEAR;
        inDescs[i].dims.nbDims = static_cast<int32_t>(sample.inputs[i].size());
        for (std::size_t a = 0; a < sample.inputs[i].size(); ++a)
        {
            inDescs[i].dims.d[a] = sample.inputs[i][a];
        }
    }
    std::vector<PluginTensorDesc> outDescs(sample.outputs.size());
    for (std::size_t o = 0; o < outDescs.size(); ++o)
    {
        outDescs[o].type = DataType::kFLOAT;
        outDescs[o].format = TensorFormat::kLINEAR;
        outDescs[o].dims.nbDims = static_cast<int32_t>(sample.outputs[o].size());
        for (std::size_t a = 0; a < sample.outputs[o].size(); ++a)
        {
            outDescs[o].dims.d[a] = sample.outputs[o][a];
        }
    }
    check(runtime->onShapeChange(inDescs.data(), nbInputs, outDescs.data(), c.nbOutputs) == 0,
        "onShapeChange accepts the sample shapes");
    std::vector<void const*> nullInputs(inDescs.size(), nullptr);
    std::vector<void*> nullOutputs(outDescs.size(), nullptr);
    int const errorsBeforeEnqueue = logger.mErrors;
    check(runtime->enqueue(inDescs.data(), outDescs.data(), nullInputs.data(), nullOutputs.data(), nullptr, nullptr)
                != 0
            && logger.mErrors > errorsBeforeEnqueue,
        "enqueue with null buffers returns an error status and logs it");

    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    check(serialized != nullptr && serialized->nbFields > 0, "getFieldsToSerialize");
    if (serialized != nullptr)
    {
        std::unique_ptr<IPluginV3> restored(creator.createPlugin(name.c_str(), serialized, TensorRTPhase::kRUNTIME));
        bool same = restored != nullptr;
        if (restored)
        {
            auto* restoredRuntime
                = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
            PluginFieldCollection const* again = restoredRuntime->getFieldsToSerialize();
            same = again != nullptr && again->nbFields == serialized->nbFields;
            for (int32_t i = 0; same && i < again->nbFields; ++i)
            {
                PluginField const& a = serialized->fields[i];
                PluginField const& b = again->fields[i];
                std::size_t const bytes = a.type == PluginFieldType::kCHAR ? 1U
                    : (a.type == PluginFieldType::kINT64 || a.type == PluginFieldType::kFLOAT64) ? 8U : 4U;
                same = std::strcmp(a.name, b.name) == 0 && a.type == b.type && a.length == b.length
                    && std::memcmp(a.data, b.data, bytes * static_cast<std::size_t>(a.length)) == 0;
            }
        }
        check(same, "createPlugin(kRUNTIME, serialized fields) round-trips");
    }
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    check(cloned != nullptr, "clone");

    FieldSet bad(sample.badFields);
    int const before = logger.mErrors;
    std::unique_ptr<IPluginV3> rejected(creator.createPlugin(name.c_str(), &bad.mCollection, TensorRTPhase::kBUILD));
    check(rejected == nullptr && logger.mErrors > before, "invalid fields: nullptr and a logged error, no exception");
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s libtensorkiln_plugins.so\n", argv[0]);
        return 2;
    }
    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr)
    {
        std::fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder"));
    check(getCreators != nullptr && setLoggerFinder != nullptr, "exports getCreators and setLoggerFinder");
    if (getCreators == nullptr || setLoggerFinder == nullptr)
    {
        return 1;
    }
    DriverLoggerFinder finder;
    setLoggerFinder(&finder);

    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    check(creators != nullptr && count > 0, "getCreators returned " + std::to_string(count) + " creator(s)");
    for (int32_t i = 0; creators != nullptr && i < count; ++i)
    {
        InterfaceInfo const info = creators[i]->getInterfaceInfo();
        bool const isV3 = std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0 && info.major == 1;
        check(isV3, std::string("creator ") + std::to_string(i) + " is an IPluginCreatorV3One (" + info.kind + ")");
        if (isV3)
        {
            exercise(*static_cast<IPluginCreatorV3One*>(creators[i]), finder.mLogger);
        }
    }
    setLoggerFinder(nullptr);
    std::printf("%s: %d check(s) failed\n", gFailures == 0 ? "PASSED" : "FAILED", gFailures);
    return gFailures == 0 ? 0 : 1;
}
