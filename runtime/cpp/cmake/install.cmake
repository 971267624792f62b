# Install rules and the CMake package config: a service does find_package(tensorkiln) and links tensorkiln::runtime.
include(CMakePackageConfigHelpers)

install(TARGETS tensorkiln_runtime EXPORT tensorkilnTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS kiln-run RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/tensorkiln DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET tensorkiln_runtime_tensorrt)
    install(TARGETS tensorkiln_runtime_tensorrt LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

set(TK_CONFIG_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tensorkiln)
install(EXPORT tensorkilnTargets NAMESPACE tensorkiln:: DESTINATION ${TK_CONFIG_DIR})
configure_package_config_file(cmake/tensorkilnConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/tensorkilnConfig.cmake
    INSTALL_DESTINATION ${TK_CONFIG_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tensorkilnConfigVersion.cmake
    COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tensorkilnConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/tensorkilnConfigVersion.cmake
    DESTINATION ${TK_CONFIG_DIR})
