include(${CMAKE_CURRENT_LIST_DIR}/repl.cmake)
# The test asks JetStream whether the cluster settled after each restart.
include(${CMAKE_CURRENT_LIST_DIR}/repl_libnats.cmake)
