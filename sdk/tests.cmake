# SPDX-License-Identifier: MIT
# The SDKs' suites (included from tests/CMakeLists.txt): each runs its own
# ecosystem's test runner against a presenced it starts from this build.
# npm packages come from each package-lock.json (scripts/npm-ci.sh), the Go
# module's one dependency through the Go module proxy.

# clients/js: presence.d.ts under tsc --strict, DOM WebSocket and npm ws.
add_test(NAME sdk/js-types COMMAND bash ${CMAKE_SOURCE_DIR}/clients/js/test/types/run.sh)
set_tests_properties(sdk/js-types PROPERTIES LABELS sdk TIMEOUT 300)

if(TARGET presenced)
  # sdk/node: node's test runner against a presenced of this build.
  add_test(NAME sdk/node COMMAND bash ${CMAKE_SOURCE_DIR}/sdk/node/test/run.sh $<TARGET_FILE:presenced>)
  set_tests_properties(sdk/node PROPERTIES LABELS sdk TIMEOUT 300)
endif()

if(TARGET presenced)
  # sdk/python: pytest against a presenced of this build.
  add_test(NAME sdk/python COMMAND bash ${CMAKE_SOURCE_DIR}/sdk/python/tests/run.sh $<TARGET_FILE:presenced>)
  set_tests_properties(sdk/python PROPERTIES LABELS sdk TIMEOUT 300)
endif()

if(TARGET presenced)
  # sdk/go: go test against a presenced of this build (skipped, exit 77, only
  # when the module's dependency is not cached and the module proxy is unreachable).
  add_test(NAME sdk/go COMMAND bash ${CMAKE_SOURCE_DIR}/sdk/go/test/run.sh $<TARGET_FILE:presenced>)
  set_tests_properties(sdk/go PROPERTIES LABELS sdk TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
