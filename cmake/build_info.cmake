# Writes OUTPUT (a C++ file with the commit and the build type) at build time, and only
# when its text changes, so that an unchanged commit rebuilds nothing.
#   cmake -DSOURCE_DIR=... -DOUTPUT=... -DBUILD_TYPE=... -P build_info.cmake
set(commit "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SOURCE_DIR} rev-parse --short=12 HEAD
                  OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc ERROR_QUIET)
  if(rc EQUAL 0 AND head)
    set(commit "${head}")
    execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SOURCE_DIR} status --porcelain --untracked-files=no
                    OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(dirty)
      string(APPEND commit "+changes")
    endif()
  endif()
endif()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE "unspecified")
endif()
set(text "// Generated at build time by cmake/build_info.cmake.
namespace m2n2::cli {
const char* build_commit() { return \"${commit}\"; }
const char* build_type() { return \"${BUILD_TYPE}\"; }
}  // namespace m2n2::cli
")
set(old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUTPUT}" "${text}")
endif()
