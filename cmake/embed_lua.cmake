# SPDX-License-Identifier: MIT
# Turn a Lua script into a C header holding it as a byte array, so the
# scripts live in the repo as plain .lua files and the build needs nothing
# beyond cmake. Usage:
#   cmake -DIN=script.lua -DOUT=header.h -DNAME=c_identifier -P embed_lua.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# Break the initializer into lines of 16 bytes to keep compilers happy.
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp"
  "/* Generated from ${IN} by cmake/embed_lua.cmake: do not edit. */\n"
  "static const char ${NAME}[] = {\n${bytes}0x00};\n"
  "#define ${NAME}_len ((size_t)${len})\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
