# mirror_meta: the per-volume metadata file (docs/bitmap-format.md): CRC-32C,
# the block codec, the activity and dirty maps, their group commit. Included
# from daemon/CMakeLists.txt.
add_library(mirror_meta STATIC
  ${CMAKE_CURRENT_LIST_DIR}/crc32c.cc
  ${CMAKE_CURRENT_LIST_DIR}/bitmap_format.cc
  ${CMAKE_CURRENT_LIST_DIR}/bitmap.cc
  ${CMAKE_CURRENT_LIST_DIR}/bitmap_load.cc
)
target_include_directories(mirror_meta PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mirror_meta PUBLIC nbd_server)
target_compile_features(mirror_meta PUBLIC cxx_std_20)  # bitmap.h needs C++20

if(NOT CMAKE_BUILD_TYPE STREQUAL "Fuzz")
  add_executable(mirror_meta_tests
    ${CMAKE_CURRENT_LIST_DIR}/crc32c_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/bitmap_format_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/bitmap_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/bitmap_grow_test.cc
  )
  target_link_libraries(mirror_meta_tests PRIVATE mirror_meta GTest::gtest_main)
add_dependencies(unit-tests mirror_meta_tests)
  gtest_discover_tests(mirror_meta_tests TEST_PREFIX "unit." PROPERTIES LABELS unit)
endif()
