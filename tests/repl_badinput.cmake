include(${CMAKE_CURRENT_LIST_DIR}/repl.cmake)
# The test looks at the stream itself (libnats): what a refusing root must
# leave as it was. Without libnats it has nothing to test and skips.
if(NATS_FOUND)
  target_link_libraries(${TEST_TARGET} PRIVATE PkgConfig::NATS)
else()
  target_compile_definitions(${TEST_TARGET} PRIVATE SHMSYNC_TEST_NO_NATS)
endif()
