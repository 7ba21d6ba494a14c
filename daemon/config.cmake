# The volume configuration file (docs/configuration.md): a TOML parser and
# validator, its unit tests. Included at the end of daemon/CMakeLists.txt.
find_package(tomlplusplus REQUIRED)

add_library(mirror_config STATIC ${CMAKE_CURRENT_LIST_DIR}/config.cc
                               ${CMAKE_CURRENT_LIST_DIR}/config_node.cc)
target_include_directories(mirror_config PUBLIC ${CMAKE_CURRENT_LIST_DIR})
# nbd_server for ListenAddr::parse (it also brings nbd_codec's result.h).
target_link_libraries(mirror_config PUBLIC nbd_server)
if(CMAKE_BUILD_TYPE STREQUAL "Fuzz")
  # Compile toml++ into the fuzzer, instrumented, instead of linking the
  # distribution's uninstrumented shared library: libFuzzer then sees the
  # parser's coverage, not only ours. toml++ stays private to mirror_config.
  get_target_property(_toml_inc tomlplusplus::tomlplusplus INTERFACE_INCLUDE_DIRECTORIES)
  target_include_directories(mirror_config SYSTEM PRIVATE ${_toml_inc})
  target_compile_definitions(mirror_config PRIVATE TOML_HEADER_ONLY=1 MIRROR_TOML_AS_SHIPPED=1)
else()
  target_link_libraries(mirror_config PRIVATE tomlplusplus::tomlplusplus)
endif()

if(NOT CMAKE_BUILD_TYPE STREQUAL "Fuzz")
  add_executable(mirror_config_tests ${CMAKE_CURRENT_LIST_DIR}/config_test.cc)
  target_link_libraries(mirror_config_tests PRIVATE mirror_config GTest::gtest_main GTest::gmock)
add_dependencies(unit-tests mirror_config_tests)
  # The example volume file is parsed by a test so it cannot rot.
  target_compile_definitions(mirror_config_tests PRIVATE
                             MIRROR_EXAMPLE_TOML="${CMAKE_CURRENT_LIST_DIR}/../systemd/example.toml")
  gtest_discover_tests(mirror_config_tests TEST_PREFIX "unit." PROPERTIES LABELS unit)
endif()
