# Included by the replication tests that talk to JetStream themselves
# (libnats): a forged follower, a look at the stream, the cluster's state.
# Without libnats they have nothing to test and skip.
if(NATS_FOUND)
  target_link_libraries(${TEST_TARGET} PRIVATE PkgConfig::NATS)
else()
  target_compile_definitions(${TEST_TARGET} PRIVATE SHMSYNC_TEST_NO_NATS)
endif()
