# lqer_probe_package(<package> <found_var> <reason_var>)
#
# Tries find_package(<package> CONFIG REQUIRED) in a separate CMake process
# and reports whether it worked, without touching this configure. Why a child
# process: a package's own config file may call find_package(... REQUIRED)
# for something it needs (oneDNN's asks for OpenCL, which Debian only
# *recommends* with libdnnl-dev), and such a failure is fatal to the project
# that called it even with QUIET. An optional peer must never break a
# configure, so the benchmarks probe it here first.
#
# <found_var> is set to TRUE or FALSE; <reason_var> to the first line of the
# child's error (e.g. "Could NOT find OpenCL (missing: OpenCL_LIBRARY
# OpenCL_INCLUDE_DIR)") when it failed.
function(lqer_probe_package package found_var reason_var)
  set(dir ${CMAKE_BINARY_DIR}/lqer-probe-${package})
  file(MAKE_DIRECTORY ${dir}/src)
  file(WRITE ${dir}/src/CMakeLists.txt
       "cmake_minimum_required(VERSION 3.25)\nproject(lqer_probe_${package} LANGUAGES CXX)\n"
       "find_package(${package} CONFIG REQUIRED)\n")
  set(args -S ${dir}/src -B ${dir}/build -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
  foreach(var CMAKE_PREFIX_PATH CMAKE_FIND_ROOT_PATH ${package}_DIR)
    if(DEFINED ${var})
      list(JOIN ${var} "\\;" joined)
      list(APPEND args "-D${var}=${joined}")
    endif()
  endforeach()
  execute_process(COMMAND ${CMAKE_COMMAND} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    set(${found_var} TRUE PARENT_SCOPE)
    set(${reason_var} "" PARENT_SCOPE)
    return()
  endif()
  # The most telling line: a "Could NOT find" or "Could not find", else the
  # first non-empty line after "CMake Error".
  string(REGEX MATCH "Could (NOT|not) find[^\n]*" reason "${err}")
  if(NOT reason)
    string(REGEX MATCH "CMake Error[^\n]*\n[ \t]*([^\n]+)" _ "${err}")
    set(reason "${CMAKE_MATCH_1}")
  endif()
  string(STRIP "${reason}" reason)
  if(NOT reason)
    set(reason "find_package(${package}) failed (see ${dir}/build/CMakeFiles/CMakeError.log)")
  endif()
  set(${found_var} FALSE PARENT_SCOPE)
  set(${reason_var} "${reason}" PARENT_SCOPE)
endfunction()
