# SPDX-License-Identifier: MIT
# Check (or, with -DUPDATE=1, rewrite) the table of keys in
# docs/configuration.md against `presenced --help-keys`, so the documented
# keys and defaults cannot drift from the option table in config.c.
#   cmake -DPRESENCED=path/to/presenced -DDOC=docs/configuration.md [-DUPDATE=1] -P config_docs.cmake
set(begin "<!-- BEGIN presenced --help-keys -->\n")
set(end "<!-- END presenced --help-keys -->")
execute_process(COMMAND ${PRESENCED} --help-keys OUTPUT_VARIABLE keys RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PRESENCED} --help-keys failed (${rc})")
endif()
file(READ ${DOC} doc)
string(FIND "${doc}" "${begin}" b)
string(FIND "${doc}" "${end}" e)
if(b LESS 0 OR e LESS b)
  message(FATAL_ERROR "${DOC}: the markers of the generated table are missing")
endif()
string(LENGTH "${begin}" blen)
math(EXPR start "${b} + ${blen}")
math(EXPR len "${e} - ${start}")
string(SUBSTRING "${doc}" ${start} ${len} current)
if(current STREQUAL keys)
  message(STATUS "${DOC}: the table of keys is up to date")
elseif(UPDATE)
  string(SUBSTRING "${doc}" 0 ${start} head)
  string(SUBSTRING "${doc}" ${e} -1 tail)
  file(WRITE ${DOC} "${head}${keys}${tail}")
  message(STATUS "${DOC}: table of keys rewritten")
else()
  message(FATAL_ERROR "${DOC} does not match `presenced --help-keys`: an option was "
    "added or changed. Refresh the table with\n  cmake -DPRESENCED=${PRESENCED} "
    "-DDOC=${DOC} -DUPDATE=1 -P ${CMAKE_CURRENT_LIST_FILE}\nExpected:\n${keys}")
endif()
