# container_to_host: a bridge client in a "container" (a network namespace behind a veth pair,
# its own mount namespace with a private tmpfs, uid 65534 without capabilities) reads, writes and
# mounts the pipes of its host through pipegated listening on the host end of the veth
# (container_to_host_test.sh says what each step checks). It needs root, `ip netns` and
# `unshare --mount`; without them it prints `container_to_host  SKIP (reason)` and exits 77.
# It takes 5-10 s on 2 cores; the bound leaves room for a loaded machine and, like every time
# bound in the script, scales with the build's factor (PIPEGATE_TEST_TIME_SCALE).
if(NOT DEFINED PIPEGATE_TEST_TIME_SCALE)
  set(PIPEGATE_TEST_TIME_SCALE 1)
endif()
math(EXPR pipegate_netns_timeout "60 * ${PIPEGATE_TEST_TIME_SCALE}")
add_test(NAME container_to_host
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/container_to_host_test.sh
          $<TARGET_FILE:pipegated> $<TARGET_FILE:pipegate>
          ${PROJECT_SOURCE_DIR}/certs/pipegate-certs)
set_tests_properties(container_to_host PROPERTIES
  LABELS ops
  SKIP_RETURN_CODE 77
  TIMEOUT ${pipegate_netns_timeout}
  ENVIRONMENT "PIPEGATE_TEST_TIME_SCALE=${PIPEGATE_TEST_TIME_SCALE}")
