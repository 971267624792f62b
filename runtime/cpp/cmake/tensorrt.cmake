# The TensorRT backend (src/trt/trtEngine.cpp, trtBuild.cpp), from TensorRT_ROOT (cache or environment) or
# CMAKE_PREFIX_PATH, as plugins/CMakeLists.txt finds TensorRT. Its headers include CUDA's runtime API headers.
#
# - headers, libnvinfer, libnvonnxparser and CUDA's runtime: libtensorkiln_runtime_tensorrt.so, which
#   libtensorkiln_runtime dlopens for backend "tensorrt";
# - headers alone (TK_TRT_COMPILE_ONLY): the sources are compiled with -Werror into an object library, to check
#   them against that TensorRT's API; trtBuild.cpp only where NvOnnxParser.h is there too.
if(NOT DEFINED TensorRT_ROOT AND DEFINED ENV{TensorRT_ROOT})
    set(TensorRT_ROOT $ENV{TensorRT_ROOT})
endif()
set(TensorRT_ROOT "${TensorRT_ROOT}" CACHE PATH "TensorRT prefix holding include/ (and lib/)")
find_path(TensorRT_INCLUDE_DIR NvInfer.h HINTS ${TensorRT_ROOT} PATH_SUFFIXES include NO_CACHE)
if(NOT TensorRT_INCLUDE_DIR)
    message(STATUS "tensorkiln: TensorRT headers not found (TensorRT_ROOT); no TensorRT backend")
    return()
endif()
find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND)
    message(STATUS "tensorkiln: TensorRT headers at ${TensorRT_INCLUDE_DIR} but no CUDA toolkit; no TensorRT backend")
    return()
endif()
find_library(TensorRT_NVINFER_LIBRARY NAMES nvinfer nvinfer_11 nvinfer_10
    HINTS ${TensorRT_ROOT} PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu NO_CACHE)
find_library(TensorRT_ONNXPARSER_LIBRARY NAMES nvonnxparser nvonnxparser_11 nvonnxparser_10
    HINTS ${TensorRT_ROOT} PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu NO_CACHE)

set(TK_TRT_SOURCES src/trt/trtEngine.cpp)
if(EXISTS ${TensorRT_INCLUDE_DIR}/NvOnnxParser.h)
    list(APPEND TK_TRT_SOURCES src/trt/trtBuild.cpp)
else()
    message(STATUS "tensorkiln: no NvOnnxParser.h at ${TensorRT_INCLUDE_DIR}; trtBuild.cpp is not compiled")
endif()

# SYSTEM: TensorRT's own deprecations must not trip -Werror; ours do.
add_library(tensorkiln_trt_objects OBJECT ${TK_TRT_SOURCES})
target_compile_options(tensorkiln_trt_objects PRIVATE ${TK_WARNINGS})
target_include_directories(tensorkiln_trt_objects SYSTEM PRIVATE ${TensorRT_INCLUDE_DIR})
target_link_libraries(tensorkiln_trt_objects PRIVATE tensorkiln_runtime_objects CUDA::cudart)

if(TensorRT_NVINFER_LIBRARY AND TensorRT_ONNXPARSER_LIBRARY AND TARGET CUDA::cudart
   AND EXISTS ${TensorRT_INCLUDE_DIR}/NvOnnxParser.h)
    add_library(tensorkiln_runtime_tensorrt SHARED $<TARGET_OBJECTS:tensorkiln_trt_objects>)
    target_link_libraries(tensorkiln_runtime_tensorrt PRIVATE tensorkiln_runtime ${TensorRT_NVINFER_LIBRARY}
        ${TensorRT_ONNXPARSER_LIBRARY} CUDA::cudart)
    target_link_options(tensorkiln_runtime_tensorrt PRIVATE -Wl,--no-undefined)
    set_target_properties(tensorkiln_runtime_tensorrt PROPERTIES INSTALL_RPATH "$ORIGIN")
    message(STATUS "tensorkiln: TensorRT backend library with ${TensorRT_NVINFER_LIBRARY}")
else()
    set(TK_TRT_COMPILE_ONLY ON)
    message(STATUS "tensorkiln: TensorRT libraries not found; the TensorRT backend is compiled, not linked")
endif()
