# Man pages: each docs/man/NAME.SECTION.scd is the one source of one page. scdoc(1) turns it
# into roff at build time (target pipegate_man, in ALL), gzip compresses it as Debian ships
# pages, and it is installed to ${CMAKE_INSTALL_MANDIR}/manSECTION. @PROJECT_VERSION@ in a
# source becomes the project's version.
#
# The same file runs in script mode to make one page, so the build needs no shell redirection:
#   cmake -DSOURCE=x.8.scd -DOUTPUT=dir/x.8 -DVERSION=1.0 -DSCDOC=scdoc -DGZIP=gzip -P Man.cmake
# writes dir/x.8 (roff, for `man -l`) and dir/x.8.gz (installed), or fails with scdoc's error
# and the source's name.
if(CMAKE_SCRIPT_MODE_FILE)
  file(READ "${SOURCE}" text)
  string(REPLACE "@PROJECT_VERSION@" "${VERSION}" text "${text}")
  file(WRITE "${OUTPUT}.scd" "${text}")
  execute_process(COMMAND "${SCDOC}" INPUT_FILE "${OUTPUT}.scd" OUTPUT_FILE "${OUTPUT}"
                  ERROR_VARIABLE error RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    file(REMOVE "${OUTPUT}")
    string(STRIP "${error}" error)
    message(FATAL_ERROR "${SOURCE}: scdoc: ${error}")
  endif()
  # -n: no name or time stamp in the header, so the same page compresses to the same bytes.
  execute_process(COMMAND "${GZIP}" -9 -n -c INPUT_FILE "${OUTPUT}" OUTPUT_FILE "${OUTPUT}.gz"
                  RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${OUTPUT}: gzip failed")
  endif()
  return()
endif()

find_program(PIPEGATE_SCDOC scdoc DOC "scdoc, which makes the man pages")
find_program(PIPEGATE_GZIP gzip DOC "gzip, which compresses the man pages")
if(NOT PIPEGATE_SCDOC OR NOT PIPEGATE_GZIP)
  message(WARNING "scdoc (or gzip) not found: the man pages (docs/man/*.scd) are neither built "
                  "nor installed, and a package made from this build has none. "
                  "Install it with: apt-get install scdoc")
  return()
endif()

file(GLOB PIPEGATE_MAN_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/man/*.scd)
set(PIPEGATE_MAN_PAGES)
foreach(source IN LISTS PIPEGATE_MAN_SOURCES)
  get_filename_component(page ${source} NAME_WLE)  # pipegated.8
  if(NOT page MATCHES "\\.([1-9])$")
    message(FATAL_ERROR "${source}: a man page source is named NAME.SECTION.scd")
  endif()
  set(section ${CMAKE_MATCH_1})
  set(output ${PROJECT_BINARY_DIR}/man/${page})
  add_custom_command(
    OUTPUT ${output} ${output}.gz
    COMMAND ${CMAKE_COMMAND} -DSOURCE=${source} -DOUTPUT=${output} -DVERSION=${PROJECT_VERSION}
            -DSCDOC=${PIPEGATE_SCDOC} -DGZIP=${PIPEGATE_GZIP} -P ${CMAKE_CURRENT_LIST_FILE}
    DEPENDS ${source} ${CMAKE_CURRENT_LIST_FILE}
    COMMENT "Making the man page ${page}"
    VERBATIM)
  list(APPEND PIPEGATE_MAN_PAGES ${output}.gz)
  install(FILES ${output}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/man)
add_custom_target(pipegate_man ALL DEPENDS ${PIPEGATE_MAN_PAGES})
