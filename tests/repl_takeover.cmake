include(${CMAKE_CURRENT_LIST_DIR}/repl.cmake)
