// core/json_writer.h — appends JSON text to a string without building a document tree.
//
// For hot paths that render many records (machine lists): nlohmann::json's DOM costs a heap
// allocation per value. The caller is responsible for the structure; this only gets escaping
// and number formatting right. Input strings are expected to be valid UTF-8 (kiln only stores
// strings that came through a JSON parser or were validated as ASCII).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

// Appends `s` as a JSON string literal, quotes included.
void json_append_string(std::string& out, std::string_view s);
void json_append_int(std::string& out, std::int64_t v);

// Deepest bracket nesting of a JSON text ('[' and '{' inside strings do not count). A cheap
// pre-check before parsing untrusted input: building, copying or destroying a deeply nested
// document recurses.
int json_nesting_depth(std::string_view text);

}  // namespace kiln
