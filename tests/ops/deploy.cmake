# The container and Kubernetes files hold together (scripts/check-deploy.py says what that
# means): the checker passes on this tree, pipegated --check-config accepts every gateway
# configuration in them, and the checker refuses copies of the tree with one planted fault each
# (tests/ops/deploy-bad/cases.cmake: a wrong port, a missing volume, a mismatched image tag, a
# manifest missing from the kustomization, ...), each with its own message. Without PyYAML or
# tomllib the checker prints `check-deploy  SKIP (reason)`; ctest counts that as skipped.
if(DEFINED Python3_EXECUTABLE)
  set(pipegate_deploy_python ${Python3_EXECUTABLE})
else()
  set(pipegate_deploy_python python3)
endif()
set(pipegate_deploy_check ${PROJECT_SOURCE_DIR}/scripts/check-deploy.py)
set(pipegate_deploy_cases ${CMAKE_CURRENT_LIST_DIR}/deploy-bad)
set(pipegate_deploy_pki ${PROJECT_BINARY_DIR}/test-pki)

# One run of run-case.cmake: CASE's copy of the tree, judged in WORK_DIR.
function(pipegate_deploy_case_test test case)
  set(command ${CMAKE_COMMAND} -DCASE=${case} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
      -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/deploy-bad -DPYTHON=${pipegate_deploy_python})
  if("CHECK_CONFIG" IN_LIST ARGN)
    list(APPEND command -DPIPEGATED=$<TARGET_FILE:pipegated> -DPKI=${pipegate_deploy_pki})
    set_property(GLOBAL APPEND PROPERTY pipegate_deploy_pki_tests ${test})
  endif()
  add_test(NAME ${test} COMMAND ${command} -P ${pipegate_deploy_cases}/run-case.cmake)
  set_property(GLOBAL APPEND PROPERTY pipegate_deploy_tests ${test})
endfunction()

add_test(NAME deploy_files_hold_together
  COMMAND ${pipegate_deploy_python} ${pipegate_deploy_check} --root ${PROJECT_SOURCE_DIR})
add_test(NAME deploy_configs_pass_check_config
  COMMAND ${pipegate_deploy_python} ${pipegate_deploy_check} --root ${PROJECT_SOURCE_DIR}
          --pipegated $<TARGET_FILE:pipegated> --pki ${pipegate_deploy_pki})
set_property(GLOBAL APPEND PROPERTY pipegate_deploy_tests deploy_files_hold_together
  deploy_configs_pass_check_config)
set_property(GLOBAL APPEND PROPERTY pipegate_deploy_pki_tests deploy_configs_pass_check_config)
# The copy the cases start from passes unchanged, so each case fails for its change alone.
pipegate_deploy_case_test(deploy_copy_of_tree_passes clean-copy)

# deploy_bad_case(NAME ...): one test, deploy_refuses_NAME (arguments: see cases.cmake).
function(deploy_bad_case name)
  pipegate_deploy_case_test(deploy_refuses_${name} ${name} ${ARGN})
endfunction()
include(${pipegate_deploy_cases}/cases.cmake)

get_property(tests GLOBAL PROPERTY pipegate_deploy_tests)
get_property(pki_tests GLOBAL PROPERTY pipegate_deploy_pki_tests)
set_tests_properties(${tests} PROPERTIES LABELS ops TIMEOUT 60 SKIP_RETURN_CODE 77
  SKIP_REGULAR_EXPRESSION "check-deploy  SKIP")
set_tests_properties(${pki_tests} PROPERTIES FIXTURES_REQUIRED pki)
