include(${CMAKE_CURRENT_LIST_DIR}/repl.cmake)
# The test looks at the stream itself: what a refusing root must leave as it was.
include(${CMAKE_CURRENT_LIST_DIR}/repl_libnats.cmake)
