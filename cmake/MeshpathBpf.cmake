# MeshpathBpf.cmake — one rule for BPF programs: <file>.bpf.c -> clang -target bpf -> object ->
# `bpftool gen skeleton` -> <skeleton name>.skel.h. Shared by bpf/ and tools/pktgen so every BPF
# object of the project is built the same way (flags, header dependencies, atomic skeleton write).
#
#   (included once by the top-level CMakeLists.txt)
#   meshpath_bpf_skeleton(<file.bpf.c> <skeleton name> <output dir> [INCLUDES dir...])
#
# compiles ${CMAKE_CURRENT_SOURCE_DIR}/<file.bpf.c> (header dependencies tracked through a depfile)
# into ${CMAKE_CURRENT_BINARY_DIR}/<file>.bpf.o, writes <output dir>/<skeleton name>.skel.h and
# appends that header's path to the list MESHPATH_SKELETONS in the caller's scope. The project's
# bpf/ directory is always on the include path (compiler.h, cursor.h, ...).
include_guard(DIRECTORY)

find_program(MESHPATH_CLANG NAMES clang clang-14 REQUIRED)
find_program(MESHPATH_BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

# -mcpu=v3: atomics that return a value (__sync_fetch_and_add) and 32-bit jumps.
set(MESHPATH_BPF_COMMON_CFLAGS -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror)
if(CMAKE_LIBRARY_ARCHITECTURE)
  list(APPEND MESHPATH_BPF_COMMON_CFLAGS -I/usr/include/${CMAKE_LIBRARY_ARCHITECTURE})
else()
  list(APPEND MESHPATH_BPF_COMMON_CFLAGS -I/usr/include/x86_64-linux-gnu)
endif()

function(meshpath_bpf_skeleton source skel_name skel_dir)
  cmake_parse_arguments(PARSE_ARGV 3 ARG "" "" "INCLUDES")
  get_filename_component(base ${source} NAME_WE)
  set(object ${CMAKE_CURRENT_BINARY_DIR}/${base}.bpf.o)
  set(skeleton ${skel_dir}/${skel_name}.skel.h)
  set(includes -I${CMAKE_CURRENT_SOURCE_DIR} -I${PROJECT_SOURCE_DIR}/bpf)
  foreach(dir IN LISTS ARG_INCLUDES)
    list(APPEND includes -I${dir})
  endforeach()
  file(MAKE_DIRECTORY ${skel_dir})
  add_custom_command(
    OUTPUT ${object}
    COMMAND ${MESHPATH_CLANG} ${MESHPATH_BPF_COMMON_CFLAGS} ${includes} -MD -MF ${object}.d
            -c ${CMAKE_CURRENT_SOURCE_DIR}/${source} -o ${object}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${source}
    DEPFILE ${object}.d
    COMMENT "Compiling BPF program ${source}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skeleton}
    COMMAND sh -c "\"$1\" gen skeleton \"$2\" name \"$3\" > \"$4.tmp\" && mv \"$4.tmp\" \"$4\""
            sh ${MESHPATH_BPFTOOL} ${object} ${skel_name} ${skeleton}
    DEPENDS ${object}
    COMMENT "Generating BPF skeleton ${skel_name}.skel.h"
    VERBATIM)
  set(MESHPATH_SKELETONS ${MESHPATH_SKELETONS} ${skeleton} PARENT_SCOPE)
endfunction()
