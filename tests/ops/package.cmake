# package_test (package_test.sh): makes the .deb with cpack from this build, checks its
# contents, installs it, checks what got installed (account, --check-config on the example, man
# pages, bash completion, systemd-analyze verify), purges it and checks that nothing is left.
# Root only (else it skips with 77). Not in sanitizer builds: those binaries are not what ships.
# RUN_SERIAL: it changes the system (dpkg database, /usr, /etc, the pipegate account), which no
# other test may see half done.
if(PIPEGATE_SANITIZE STREQUAL "")
  add_test(NAME package_test
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/package_test.sh ${PROJECT_BINARY_DIR} ${CMAKE_CPACK_COMMAND})
  set_tests_properties(package_test PROPERTIES
    LABELS ops
    TIMEOUT 1800
    SKIP_RETURN_CODE 77
    RUN_SERIAL TRUE)
endif()
