# libFuzzer target for the volume configuration parser (daemon/config.h):
#   build-fuzz/fuzz-config -max_total_time=180 tests/fuzz/corpus/config
# Included from tests/fuzz/CMakeLists.txt; builds only in the Fuzz build type,
# where mirror_config compiles toml++ in (instrumented) instead of linking the
# system's shared library.
if(CMAKE_BUILD_TYPE STREQUAL "Fuzz")
  add_executable(fuzz-config ${CMAKE_CURRENT_LIST_DIR}/fuzz_config.cc)
  target_link_libraries(fuzz-config PRIVATE mirror_config)
add_dependencies(fuzz-targets fuzz-config)
  target_link_options(fuzz-config PRIVATE -fsanitize=fuzzer)

  # Replays the seeds once so `ctest -L fuzz` catches a regression.
  add_test(NAME fuzz.config.corpus
           COMMAND fuzz-config -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/config)
  set_tests_properties(fuzz.config.corpus PROPERTIES LABELS fuzz)
endif()
