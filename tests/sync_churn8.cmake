# Ten processes each: alone, so its memory figure is not also a measure of
# whatever ctest runs beside it on a 2-core machine.
set_tests_properties(${TEST_NAME} ${TEST_NAME}_futex PROPERTIES RUN_SERIAL TRUE)
