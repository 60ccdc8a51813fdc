# Runs one planted fault of cases.cmake against scripts/check-deploy.py:
#
#   cmake -DCASE=NAME -DSOURCE_DIR=REPO -DWORK_DIR=DIR -DPYTHON=python3
#         [-DPIPEGATED=PATH -DPKI=DIR] -P run-case.cmake
#
# Copies the repository's deploy/ and CMakeLists.txt (all the checker reads) to WORK_DIR/NAME,
# makes the case's one change there, runs the checker on the copy, and passes only if it exits
# 1 and prints the case's line (so a case fails for its fault, not for another). CASE=clean-copy
# makes no change and must pass: that the copy is complete is what lets every other case blame
# its one change. A change whose text is no longer in the file (or is there twice) is an error
# of the case, not a pass. With PIPEGATED and PKI, the checker also runs pipegated
# --check-config on the copy's gateway configurations.
#
# A checker that cannot run here prints `check-deploy  SKIP (reason)` (exit 77); the tests carry
# SKIP_REGULAR_EXPRESSION for that line, so ctest counts them as skipped.
cmake_minimum_required(VERSION 3.21)

foreach(var CASE SOURCE_DIR WORK_DIR PYTHON)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run-case.cmake: -D${var}=... is required")
  endif()
endforeach()

# deploy_bad_case(NAME FILE PATH (FROM TEXT TO TEXT | WRITE TEXT | REMOVE) SAYS LINE
#                 [CHECK_CONFIG]): keeps the one case called CASE.
function(deploy_bad_case name)
  if(NOT name STREQUAL CASE)
    return()
  endif()
  cmake_parse_arguments(PARSE_ARGV 1 arg "REMOVE;CHECK_CONFIG" "FILE;FROM;TO;WRITE;SAYS" "")
  foreach(key FILE FROM TO WRITE SAYS REMOVE CHECK_CONFIG)
    set(case_${key} "${arg_${key}}" PARENT_SCOPE)
  endforeach()
  set(case_found TRUE PARENT_SCOPE)
endfunction()
include(${CMAKE_CURRENT_LIST_DIR}/cases.cmake)
if(NOT CASE STREQUAL "clean-copy" AND NOT case_found)
  message(FATAL_ERROR "run-case.cmake: no case ${CASE} in cases.cmake")
endif()

set(tree ${WORK_DIR}/${CASE})
file(REMOVE_RECURSE ${tree})
file(MAKE_DIRECTORY ${tree})
file(COPY ${SOURCE_DIR}/deploy ${SOURCE_DIR}/CMakeLists.txt DESTINATION ${tree})

if(CASE STREQUAL "clean-copy")
elseif(case_REMOVE)
  if(NOT EXISTS ${tree}/${case_FILE})
    message(FATAL_ERROR "case ${CASE}: ${case_FILE} does not exist to remove")
  endif()
  file(REMOVE ${tree}/${case_FILE})
elseif(NOT case_WRITE STREQUAL "")
  if(EXISTS ${tree}/${case_FILE})
    message(FATAL_ERROR "case ${CASE}: ${case_FILE} exists already; the case adds a new file")
  endif()
  file(WRITE ${tree}/${case_FILE} "${case_WRITE}")
else()
  file(READ ${tree}/${case_FILE} text)
  string(FIND "${text}" "${case_FROM}" first)
  string(FIND "${text}" "${case_FROM}" last REVERSE)
  if(first EQUAL -1)
    message(FATAL_ERROR "case ${CASE}: ${case_FILE} no longer holds the text to change:\n"
                        "${case_FROM}\nUpdate the case in tests/ops/deploy-bad/cases.cmake.")
  elseif(NOT first EQUAL last)
    message(FATAL_ERROR "case ${CASE}: ${case_FILE} holds the text to change more than once:\n"
                        "${case_FROM}\nGive the case more context.")
  endif()
  string(REPLACE "${case_FROM}" "${case_TO}" text "${text}")
  file(WRITE ${tree}/${case_FILE} "${text}")
endif()

set(command ${PYTHON} ${SOURCE_DIR}/scripts/check-deploy.py --root ${tree})
if(case_CHECK_CONFIG)
  if(NOT DEFINED PIPEGATED OR NOT DEFINED PKI)
    message(FATAL_ERROR "case ${CASE} needs -DPIPEGATED=... and -DPKI=...")
  endif()
  list(APPEND command --pipegated ${PIPEGATED} --pki ${PKI})
endif()
execute_process(COMMAND ${command} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(rc EQUAL 77)
  message(FATAL_ERROR "case ${CASE}: the checker cannot run here (see its SKIP line)")
endif()
if(CASE STREQUAL "clean-copy")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the unchanged copy in ${tree} fails the checker (exit ${rc}): "
                        "the cases would not show what they claim")
  endif()
  return()
endif()
string(FIND "${out}" "${case_SAYS}" at)
if(NOT rc EQUAL 1 OR at EQUAL -1)
  message(FATAL_ERROR "case ${CASE}: wanted exit 1 and the line\n  ${case_SAYS}\n"
                      "got exit ${rc} and the output above (the tree is kept in ${tree})")
endif()
message(STATUS "case ${CASE}: refused, as it must be")
file(REMOVE_RECURSE ${tree})
