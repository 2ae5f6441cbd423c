# Included by each tests/repl_*.cmake: what a replication test needs to run.
# Each starts its own three-node NATS cluster on ports of its own, so they
# may run beside each other; each skips (77) without nats-server.
set_tests_properties(${TEST_NAME} PROPERTIES
  ENVIRONMENT "SHMSYNC_TOOL=$<TARGET_FILE:shmsync_tool>;NATS_CLUSTER=${PROJECT_SOURCE_DIR}/scripts/nats-cluster.sh"
  LABELS repl TIMEOUT 300)
