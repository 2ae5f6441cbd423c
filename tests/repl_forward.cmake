include(${CMAKE_CURRENT_LIST_DIR}/repl.cmake)
# The test is a forged follower: it sends forwards the way a follower does.
include(${CMAKE_CURRENT_LIST_DIR}/repl_libnats.cmake)
