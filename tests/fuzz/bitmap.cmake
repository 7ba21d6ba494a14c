# fuzz-bitmap-load: Bitmap::open on arbitrary metadata files (seeds in
# corpus/bitmap-load/). libFuzzer needs clang: only in the Fuzz build type.
if(CMAKE_BUILD_TYPE STREQUAL "Fuzz")
  add_executable(fuzz-bitmap-load ${CMAKE_CURRENT_LIST_DIR}/fuzz_bitmap_load.cc)
  target_link_libraries(fuzz-bitmap-load PRIVATE mirror_meta)
add_dependencies(fuzz-targets fuzz-bitmap-load)
  target_link_options(fuzz-bitmap-load PRIVATE -fsanitize=fuzzer)

  # Replays the seeds once so `ctest -L fuzz` catches a regression on them.
  add_test(NAME fuzz.bitmap-load.corpus
           COMMAND fuzz-bitmap-load -runs=0 ${CMAKE_CURRENT_LIST_DIR}/corpus/bitmap-load)
  set_tests_properties(fuzz.bitmap-load.corpus PROPERTIES LABELS fuzz)
endif()
